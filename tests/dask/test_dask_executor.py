"""The Dask executor end to end: real clusters, real worker processes, the real orchestrator."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cloudpickle
import nbformat
import psutil
import pytest

pytest.importorskip("distributed")
from nbformat.v4 import new_code_cell, new_notebook
from support import HANG, first_event, gone, until
from support import taskmods_request as py

from jupyter_tasks.models import Task, TaskRequest, TaskStatus
from jupyter_tasks.orchestrator import Orchestrator

KERNELSPEC = {"name": "python3", "language": "python", "display_name": "Python 3"}
MakeOrch = Callable[..., Awaitable[Orchestrator]]
Cluster = Any  # conftest.Cluster: address, worker_pids


async def finished(orch: Orchestrator, request: TaskRequest) -> Task:
    task = await orch.submit(request)
    return await orch.wait(task.task_id, HANG)


async def read_pids(orch: Orchestrator, task: Task, path: Path) -> list[int]:
    """Wait (bounded) until a task wrote its pids to ``path``; fail if it finished first."""
    deadline = time.monotonic() + HANG
    while not path.exists():
        current = await orch.get(task.task_id)
        assert not current.status.finished, f"the task ended before writing its pids: {current}"
        assert time.monotonic() < deadline, f"timed out waiting for {path}"
        await asyncio.sleep(0.02)
    return [int(word) for word in path.read_text().split()]


def where_function() -> Any:
    """A function cloudpickle sends by value (its module is not importable on the worker)."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(
        "def where(tag):\n"
        "    import os, psutil\n"
        "    above = [parent.pid for parent in psutil.Process().parents()]\n"
        "    return tag, os.environ['JUPYTER_TASKS_DASK_WORKER'], above\n",
        namespace,
    )
    return namespace["where"]


def worker_above(cluster: Cluster, ancestors: list[int]) -> int:
    """The Dask worker a task process runs under (one of its ancestors)."""
    workers = [pid for pid in ancestors if pid in cluster.worker_pids.values()]
    assert workers, f"no Dask worker among the task's ancestors {ancestors}"
    return int(workers[0])


def callable_request(python: str | None = None) -> TaskRequest:
    payload = cloudpickle.dumps((where_function(), ("hello",), {}))
    parameters: dict[str, Any] = {"pickle_b64": base64.b64encode(payload).decode()}
    if python is not None:
        parameters["python"] = python
    return TaskRequest(task_type="callable", description="where", parameters=parameters)


def write_notebook(root: Path) -> None:
    nb = new_notebook(metadata={"kernelspec": KERNELSPEC})
    nb.cells = [
        new_code_cell("tag = 'default'", metadata={"tags": ["parameters"]}),
        new_code_cell(
            "import os\n"
            "from jupyter_tasks.tasktypes.notebook import scrap\n"
            "scrap('worker', os.environ['JUPYTER_TASKS_DASK_WORKER'])\n"
            "tag"
        ),
    ]
    nbformat.write(nb, root / "where.ipynb")


@pytest.fixture(params=["cli", "local"])
def cluster(request: pytest.FixtureRequest) -> Cluster:
    name = "cli_cluster" if request.param == "cli" else "local_cluster"
    value: Cluster = request.getfixturevalue(name)
    return value


async def test_every_type_runs_on_the_cluster(
    cluster: Cluster, make_orch: MakeOrch, root: Path
) -> None:
    orch = await make_orch(cluster.address)
    write_notebook(root)
    shell = TaskRequest(
        task_type="shell",
        description="where",
        parameters={
            "command": [
                sys.executable,
                "-c",
                "import os; print(os.environ['JUPYTER_TASKS_DASK_WORKER'])",
            ]
        },
    )
    notebook = TaskRequest(
        task_type="notebook",
        description="where",
        parameters={"path": "where.ipynb", "parameters": {"tag": "from-test"}},
    )
    requests = [py("where"), shell, callable_request(), notebook]
    tasks = await asyncio.gather(*(finished(orch, request) for request in requests))
    for task in tasks:
        assert task.status == TaskStatus.COMPLETED, task.error
    values = [(await orch.result(task.task_id)).preview["value"] for task in tasks]
    python, _, (tag, callable_worker, callable_above), nb = values
    assert python["worker"] in cluster.worker_pids  # under the Dask worker it names
    assert worker_above(cluster, python["ancestors"]) == cluster.worker_pids[python["worker"]]
    shell_log = (await orch.logs(tasks[1].task_id))[0].decode()
    assert shell_log.strip() in cluster.worker_pids
    assert tag == "hello"
    assert worker_above(cluster, callable_above) == cluster.worker_pids[callable_worker]
    assert nb["scraps"]["worker"] in cluster.worker_pids
    assert nb["last_value"] == "'from-test'"
    assert (root / nb["output_path"]).is_file()


async def test_progress_and_logs_arrive_while_the_task_runs(
    cli_cluster: Cluster, make_orch: MakeOrch, tmp_path: Path
) -> None:
    orch = await make_orch(cli_cluster.address)
    gate = tmp_path / "gate"
    sub = orch.subscribe()
    task = await orch.submit(py("progress_then_wait", str(gate)))
    try:
        event = await first_event(sub, task.task_id, "progress")
    finally:
        sub.close()
    assert event["progress"] == 0.5 and event["message"] == "half"
    # The log is streamed, not only shipped at the end: the line is there while it runs.
    logged: list[bytes] = [b""]

    async def log_has_line() -> None:
        while b"halfway there" not in logged[0]:
            logged[0] = (await orch.logs(task.task_id))[0]
            await asyncio.sleep(0.05)

    await asyncio.wait_for(log_has_line(), HANG)
    assert (await orch.get(task.task_id)).status == TaskStatus.RUNNING
    gate.write_text("go")
    done = await orch.wait(task.task_id, HANG)
    assert done.status == TaskStatus.COMPLETED and done.progress == 1.0
    assert (await orch.logs(task.task_id))[0].count(b"halfway there") == 1


@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_cancel_and_timeout_stop_the_process_on_the_worker(
    how: str, cli_cluster: Cluster, make_orch: MakeOrch, tmp_path: Path
) -> None:
    orch = await make_orch(cli_cluster.address)
    pidfile = tmp_path / "pids"
    warm = await finished(orch, py("where"))  # a warm task process: the timeout is for the task
    assert warm.status == TaskStatus.COMPLETED
    timeout = {"timeout_seconds": 4} if how == "timeout" else {}
    task = await orch.submit(py("sleeper_with_child", str(pidfile), **timeout))
    pid, child, *above = await read_pids(orch, task, pidfile)
    worker_pid = worker_above(cli_cluster, above)
    if how == "cancel":
        cancelled = await orch.cancel(task.task_id)
        assert cancelled.status == TaskStatus.CANCELLED
    done = await orch.wait(task.task_id, HANG)
    if how == "timeout":
        assert done.status == TaskStatus.FAILED and done.error is not None
        assert done.error.type == "TaskTimeout"
    # kill() returns once the processes are gone: no waiting needed.
    assert gone(pid) and gone(child)
    assert not gone(worker_pid)  # the Dask worker itself lives on
    again = await finished(orch, py("where"))
    assert again.status == TaskStatus.COMPLETED


async def test_a_killed_dask_worker_fails_its_task(
    own_cli_cluster: Any, make_orch: MakeOrch, tmp_path: Path
) -> None:
    cluster, pids = own_cli_cluster
    orch = await make_orch(cluster.address)
    pidfile = tmp_path / "pids"
    task = await orch.submit(py("sleeper_with_child", str(pidfile)))
    pid, child, *above = await read_pids(orch, task, pidfile)
    (address,) = [a for a, p in pids.items() if p in above]
    worker_pid = pids[address]
    os.kill(worker_pid, signal.SIGKILL)
    done = await orch.wait(task.task_id, HANG)
    assert done.status == TaskStatus.FAILED and done.error is not None
    assert done.error.type == "WorkerCrashed"
    assert address in done.error.message and "lost" in done.error.message
    await until(lambda: gone(pid) and gone(child), "the task's processes to end")


async def test_the_scheduler_going_away_makes_tasks_wait(
    own_cli_cluster: Any, make_orch: MakeOrch
) -> None:
    cluster, _ = own_cli_cluster
    orch = await make_orch(cluster.address)
    assert orch.health()["healthy"]
    cluster.stop()
    await until(lambda: not orch.health()["healthy"], "health to turn false")
    task = await orch.submit(py("where"))
    await until(lambda: orch.health()["running"] == 1, "the task to be handed to the executor")
    assert (await orch.get(task.task_id)).status == TaskStatus.RUNNING  # waiting, not failed
    cluster.start_scheduler()
    cluster.start_worker()
    done = await orch.wait(task.task_id, HANG)
    assert done.status == TaskStatus.COMPLETED, done.error
    assert orch.health()["healthy"]


async def test_results_come_back_as_bytes_never_unpickled(
    cli_cluster: Cluster, make_orch: MakeOrch, monkeypatch: pytest.MonkeyPatch
) -> None:
    import distributed.protocol.pickle as dask_pickle

    seen: list[bytes] = []
    original = dask_pickle.loads

    def spy(data: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(bytes(data))
        return original(data, *args, **kwargs)

    monkeypatch.setattr(dask_pickle, "loads", spy)
    orch = await make_orch(cli_cluster.address)
    small = await finished(orch, py("thing", 10))
    large = await finished(orch, py("thing", 200_000))  # past the inline limit: a file
    for task in (small, large):
        assert task.status == TaskStatus.COMPLETED, task.error
        info = await orch.result(task.task_id)
        assert info.preview["type"] == "taskmods.Thing"
    assert (await orch.result(small.task_id)).inline is not None
    path = (await orch.result(large.task_id)).path
    assert path is not None and os.path.getsize(path) > 200_000
    assert "taskmods" not in sys.modules
    assert not any(b"taskmods" in data for data in seen)


async def test_priorities_order_tasks_queued_in_dask(
    cli_cluster: Cluster, make_orch: MakeOrch, tmp_path: Path
) -> None:
    orch = await make_orch(cli_cluster.address, max_workers=4)  # more than the worker's one thread
    executor: Any = orch.executor
    gate, order = tmp_path / "gate", tmp_path / "order"
    first = await orch.submit(py("record", str(order), "first", str(gate)))
    await until(lambda: _started(orch, first.task_id), "the first task to start")
    low = await orch.submit(py("record", str(order), "low", priority=1))
    high = await orch.submit(py("record", str(order), "high", priority=10))
    await until(lambda: executor._slots.waiting == 2, "both to wait for the worker's thread")
    assert executor._slots.used == 1  # Dask holds only what it can run at once
    gate.write_text("go")
    for task in (first, low, high):
        assert (await orch.wait(task.task_id, HANG)).status == TaskStatus.COMPLETED
    assert order.read_text().split() == ["first", "high", "low"]


async def test_tasks_wait_for_workers_and_dask_sees_them_waiting(
    bare_cli_cluster: Any, make_orch: MakeOrch
) -> None:
    """No worker yet: tasks wait, shown to the scheduler (adaptive clusters scale up to them)."""
    orch = await make_orch(bare_cli_cluster.address)
    executor: Any = orch.executor
    tasks = [await orch.submit(py("where")) for _ in range(2)]
    await until(lambda: executor._slots.waiting == 2, "both tasks to wait for a thread")

    def backlog(dask_scheduler: Any) -> tuple[int, int]:
        return len(dask_scheduler.unrunnable), dask_scheduler.adaptive_target()

    deadline = time.monotonic() + HANG
    while (seen := await executor.client.run_on_scheduler(backlog))[0] < 2:
        assert time.monotonic() < deadline, f"the scheduler never saw the backlog: {seen}"
        await asyncio.sleep(0.05)
    assert seen[1] >= 1  # the scheduler asks for a worker
    bare_cli_cluster.start_worker()
    for task in tasks:
        done = await orch.wait(task.task_id, HANG)
        assert done.status == TaskStatus.COMPLETED, done.error
    assert executor._slots.capacity == 1 and executor._slots.used == 0

    def keys(dask_scheduler: Any) -> list[str]:
        return [str(key) for key in dask_scheduler.tasks]

    await asyncio.sleep(0.2)  # the stand-ins' release reaches the scheduler
    assert not [key for key in await executor.client.run_on_scheduler(keys) if "waiting" in key]


def _started(orch: Orchestrator, task_id: str) -> bool:
    job = orch.executor._jobs.get(task_id)  # type: ignore[attr-defined]
    return bool(job is not None and job.started)


async def test_memory_limit_on_the_worker(cli_cluster: Cluster, make_orch: MakeOrch) -> None:
    orch = await make_orch(cli_cluster.address, worker_memory_limit=300 << 20)
    done = await finished(orch, py("hog"))
    assert done.status == TaskStatus.FAILED and done.error is not None
    assert done.error.type == "MemoryLimitExceeded"


async def test_an_owned_cluster_runs_in_subprocesses_and_stops(make_orch: MakeOrch) -> None:
    orch = await make_orch(None)
    task = await finished(orch, py("where"))
    assert task.status == TaskStatus.COMPLETED, task.error
    value = (await orch.result(task.task_id)).preview["value"]
    executor: Any = orch.executor
    scheduler_pid = executor.cluster.scheduler.process.pid
    assert scheduler_pid != os.getpid() and value["ppid"] != os.getpid()
    tree = [psutil.Process(scheduler_pid), psutil.Process(value["ppid"])]
    await orch.stop()
    await until(lambda: all(gone(p.pid) for p in tree), "the cluster's processes to end")
    assert gone(value["pid"])
