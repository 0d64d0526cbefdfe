"""Notebook tasks: parameters, saved output, per-cell progress, failures, paths, stopping."""

from __future__ import annotations

import asyncio
import math
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output
from support import HANG, gone, until

from jupyter_tasks.errors import InvalidParameters
from jupyter_tasks.models import Task, TaskRequest, TaskStatus
from jupyter_tasks.orchestrator import Orchestrator
from jupyter_tasks.tasktypes.notebook import (
    inject_parameters,
    last_value,
    python_literal,
    scraps,
)

WriteNotebook = Callable[..., Path]


def notebook(path: str, **parameters: Any) -> TaskRequest:
    return TaskRequest(
        task_type="notebook", description=path, parameters={"path": path, **parameters}
    )


async def run_collecting(
    orch: Orchestrator, request: TaskRequest
) -> tuple[Task, list[dict[str, Any]]]:
    """Run a task to its end; its events in order."""
    sub = orch.subscribe()
    task = await orch.submit(request)
    events: list[dict[str, Any]] = []

    async def collect() -> None:
        async for event in sub:
            if event["task_id"] == task.task_id:
                events.append(event)
                if event["event"] == "transition" and TaskStatus(event["status"]).finished:
                    return

    try:
        await asyncio.wait_for(collect(), HANG)
    finally:
        sub.close()
    return await orch.get(task.task_id), events


async def kernel_pid(orch: Orchestrator, task: Task, pidfile: Path) -> int:
    """The pid a notebook's first cell wrote (the kernel's); fail if the task ended first."""
    deadline = time.monotonic() + HANG
    while not pidfile.exists():
        current = await orch.get(task.task_id)
        assert not current.status.finished, f"the task ended first: {current.error}"
        assert time.monotonic() < deadline, "the kernel never wrote its pid"
        await asyncio.sleep(0.02)
    return int(pidfile.read_text())


# -- running notebooks -----------------------------------------------------------------------


async def test_parameters_output_and_per_cell_progress(
    orch: Orchestrator, write_notebook: WriteNotebook, root: Path
) -> None:
    source = write_notebook(
        "analysis.ipynb",
        "#md # Analysis",
        ("alpha = 1\nname = 'default'\nconfig = {'k': [0, 0]}", ["parameters"]),
        "import time\nprint('alpha is', alpha)\ntime.sleep(0.2)",
        "from jupyter_tasks.tasktypes.notebook import scrap\nscrap('double', alpha * 2)\n"
        "time.sleep(0.2)",
        "from IPython.display import display\n"
        "display(name.upper(), metadata={'jupyter_tasks': {'scrap': 'shout'}})\ntime.sleep(0.2)",
        "f\"{name}-{alpha}-{config['k'][1]}\"",
    )
    parameters = {"alpha": 21, "name": "zz", "config": {"k": [1, 2.5, None, True]}}
    task, events = await run_collecting(orch, notebook("analysis.ipynb", parameters=parameters))
    assert task.status == TaskStatus.COMPLETED, task.error
    value = (await orch.result(task.task_id)).preview["value"]
    assert re.fullmatch(r"analysis-\d{8}-\d{6}-[0-9a-f]{8}\.ipynb", value["output_path"])
    assert value["scraps"] == {"double": 42, "shout": "'ZZ'"}
    assert value["last_value"] == "'zz-21-2.5'"

    executed = nbformat.read(root / value["output_path"], as_version=4)
    assert executed.cells[1].metadata["tags"] == ["parameters"]
    injected = executed.cells[2]
    assert injected.metadata["tags"] == ["injected-parameters"]
    assert "alpha = 21\n" in injected.source and "'k': [1, 2.5, None, True]" in injected.source
    assert executed.cells[3].outputs[0]["text"] == "alpha is 21\n"
    assert len(nbformat.read(source, as_version=4).cells) == 6  # the input is left alone

    progress = [e["message"] for e in events if e["event"] == "progress"]
    cells = [m for m in progress if m and m.startswith("cell ")]
    assert cells[-1] == "cell 6/6" and len(set(cells)) >= 3
    numbers = [int(m.split()[1].split("/")[0]) for m in cells]
    assert numbers == sorted(numbers)
    log = (await orch.logs(task.task_id))[0].decode()
    assert "alpha is 21" in log and "cell 6/6 ran in" in log


async def test_injection_at_the_top_output_path_and_cwd(
    orch: Orchestrator, write_notebook: WriteNotebook, root: Path
) -> None:
    write_notebook("sub/plain.ipynb", "import os\nhere = os.getcwd()", "(x, here)")
    request = notebook("sub/plain.ipynb", parameters={"x": 5}, output_path="out/run.ipynb")
    task, _ = await run_collecting(orch, request)
    assert task.status == TaskStatus.COMPLETED, task.error
    value = (await orch.result(task.task_id)).preview["value"]
    assert value["output_path"] == "out/run.ipynb"
    assert value["last_value"] == repr((5, str(root / "sub")))  # cwd: the notebook's directory
    executed = nbformat.read(root / "out" / "run.ipynb", as_version=4)
    assert executed.cells[0].metadata["tags"] == ["injected-parameters"]


async def test_a_failing_cell_becomes_the_task_error(
    orch: Orchestrator, write_notebook: WriteNotebook, root: Path
) -> None:
    write_notebook(
        "fails.ipynb",
        "print('before')",
        "class BadInput(ValueError):\n    pass\n\nraise BadInput('no rows for eu')",
        "print('never')",
    )
    task, _ = await run_collecting(orch, notebook("fails.ipynb"))
    assert task.status == TaskStatus.FAILED and task.error is not None
    assert task.error.type == "BadInput"
    assert "no rows for eu" in task.error.message and "cell 2 of 3" in task.error.message
    assert "raise BadInput('no rows for eu')" in (task.error.traceback or "")
    saved = re.search(r"saved as (\S+\.ipynb)", task.error.message)
    assert saved is not None
    executed = nbformat.read(root / saved.group(1), as_version=4)
    assert executed.cells[1].outputs[-1]["ename"] == "BadInput"
    assert executed.cells[2].outputs == []
    assert "before" in (await orch.logs(task.task_id))[0].decode()


# -- stopping --------------------------------------------------------------------------------


def waiting_notebook(write_notebook: WriteNotebook) -> None:
    write_notebook(
        "waits.ipynb",
        ("pidfile = ''", ["parameters"]),
        "import os, pathlib\npathlib.Path(pidfile + '.tmp').write_text(str(os.getpid()))\n"
        "os.replace(pidfile + '.tmp', pidfile)",
        "import time\ntime.sleep(600)",
    )


async def test_cancel_shuts_the_kernel_down(
    orch: Orchestrator, write_notebook: WriteNotebook, root: Path, tmp_path: Path
) -> None:
    waiting_notebook(write_notebook)
    pidfile = tmp_path / "kernel.pid"
    task = await orch.submit(notebook("waits.ipynb", parameters={"pidfile": str(pidfile)}))
    kernel = await kernel_pid(orch, task, pidfile)
    cancelled = await orch.cancel(task.task_id)
    assert cancelled.status == TaskStatus.CANCELLED
    await until(lambda: gone(kernel), "the kernel to end")
    # The worker saved what had run before it ended.
    (saved,) = root.glob("waits-*.ipynb")
    cells = nbformat.read(saved, as_version=4).cells
    assert cells[1].metadata["tags"] == ["injected-parameters"] and cells[2].execution_count == 3


async def test_sigterm_to_the_worker_stops_its_kernel_first(
    orch: Orchestrator, write_notebook: WriteNotebook, tmp_path: Path
) -> None:
    waiting_notebook(write_notebook)
    pidfile = tmp_path / "kernel.pid"
    task = await orch.submit(notebook("waits.ipynb", parameters={"pidfile": str(pidfile)}))
    kernel = await kernel_pid(orch, task, pidfile)
    worker = psutil.Process(kernel).ppid()
    os.kill(worker, signal.SIGTERM)  # the worker alone: it must take the kernel down itself
    done = await orch.wait(task.task_id, HANG)
    assert done.status == TaskStatus.FAILED and done.error is not None
    assert done.error.type == "WorkerCrashed" and "SIGTERM" in done.error.message
    await until(lambda: gone(kernel), "the kernel to end")
    log = (await orch.logs(task.task_id))[0].decode()
    assert "stopped: kernel shut down" in log


# -- validation (no kernel) ------------------------------------------------------------------


async def test_paths_and_parameters_are_checked_at_submit(
    orch: Orchestrator, write_notebook: WriteNotebook, root: Path
) -> None:
    write_notebook("ok.ipynb", "1")
    write_notebook("r.ipynb", "1", metadata={"kernelspec": {"name": "ir", "language": "R",
                                                            "display_name": "R"}})  # fmt: skip
    outside = write_notebook("../outside.ipynb", "1")
    (root / "link.ipynb").symlink_to(outside)
    (root / "notes.txt").write_text("hello")
    (root / "broken.ipynb").write_text("{not json")
    (root / "folder.ipynb").mkdir()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"path": "../outside.ipynb"}, "parameters.path"),
        ({"path": str(outside)}, "parameters.path"),
        ({"path": "link.ipynb"}, "parameters.path"),
        ({"path": "missing.ipynb"}, "parameters.path"),
        ({"path": "notes.txt"}, "parameters.path"),
        ({"path": "broken.ipynb"}, "parameters.path"),
        ({"path": "folder.ipynb"}, "parameters.path"),
        ({"path": "ok.ipynb", "output_path": "../x.ipynb"}, "parameters.output_path"),
        ({"path": "ok.ipynb", "output_path": "ok.ipynb"}, "parameters.output_path"),
        ({"path": "ok.ipynb", "output_path": "out.txt"}, "parameters.output_path"),
        ({"path": "ok.ipynb", "cwd": ".."}, "parameters.cwd"),
        ({"path": "ok.ipynb", "cwd": "nowhere"}, "parameters.cwd"),
        ({"path": "ok.ipynb", "parameters": {"class": 1}}, "parameters.parameters"),
        ({"path": "r.ipynb", "parameters": {"a": 1}}, "parameters.parameters"),
        ({"path": "ok.ipynb", "kernel_name": "no spaces"}, "parameters.kernel_name"),
        ({"path": "ok.ipynb", "bogus": 1}, "parameters.bogus"),
        ({"path": 5}, "parameters.path"),
    ]
    for parameters, field in cases:
        request = TaskRequest(task_type="notebook", description="x", parameters=parameters)
        with pytest.raises(InvalidParameters) as info:
            await orch.submit(request)
        assert info.value.field == field, parameters
    assert "notebook" in [t["name"] for t in orch.types()]


def test_python_literals_round_trip() -> None:
    values = {"a": [1, 2.5, None, True, "it's"], "b": {"nested": {"x": -3}}}
    assert eval(python_literal(values)) == values
    assert math.isnan(eval(python_literal(float("nan"))))
    assert eval(python_literal([float("inf"), float("-inf")])) == [math.inf, -math.inf]


def test_injection_replaces_an_earlier_injected_cell() -> None:
    nb = new_notebook(nbformat_minor=4)
    nb.cells = [new_code_cell("a = 1", metadata={"tags": ["parameters"]}), new_code_cell("a")]
    for cell in nb.cells:
        cell.pop("id", None)
    inject_parameters(nb, {"a": 2})
    inject_parameters(nb, {"a": 3})
    assert [c.source for c in nb.cells] == ["a = 1", "# Parameters\na = 3\n", "a"]
    assert "id" not in nb.cells[1]  # nbformat 4.4 has no cell ids
    nbformat.validate(nb)


def test_scraps_and_last_value_from_outputs() -> None:
    nb = new_notebook()
    first = new_code_cell("x")
    first.outputs = [
        new_output("display_data", {"application/json": {"n": 1}, "text/plain": "{'n': 1}"},
                   metadata={"jupyter_tasks": {"scrap": "stats"}}),
        new_output("display_data", {"text/plain": ["two ", "lines"]},
                   metadata={"jupyter_tasks": {"scrap": "text"}}),
        new_output("display_data", {"text/plain": "ignored"}),
    ]  # fmt: skip
    last = new_code_cell("y")
    last.outputs = [new_output("execute_result", {"text/plain": "42"}, execution_count=2)]
    nb.cells = [first, last, new_code_cell("   ")]
    assert scraps(nb) == {"stats": {"n": 1}, "text": "two lines"}
    assert last_value(nb) == "42"
    nb.cells = [first]
    assert last_value(nb) is None
