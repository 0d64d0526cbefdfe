"""``LocalExecutor`` with real workers: results, crashes, kills, memory, pools, stale code."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cloudpickle
import psutil
import pytest
from support import gone

from jupyter_tasks.executors._workerproc import WAKE_BY_EVENTFD
from jupyter_tasks.executors.base import Outcome, RunSpec, TaskKilled
from jupyter_tasks.executors.local import LocalExecutor

HANG = 60.0  # bounds on waits only catch hangs
MakeSpec = Callable[..., RunSpec]
MakeExecutor = Callable[..., LocalExecutor]
Until = Callable[..., Awaitable[None]]
TaskDirs = Any  # conftest.TaskDirs: root, logs, results, blobs


def noop(fraction: float | None, message: str | None) -> None:
    """A progress callback for tests that do not look at progress."""


def call(make_spec: MakeSpec, func: str, *args: Any, **fields: Any) -> RunSpec:
    """A ``python`` task calling ``func`` ("module:name"; bare names live in taskmods)."""
    target = func if ":" in func else f"taskmods:{func}"
    return make_spec("python", {"callable": target, "args": list(args)}, **fields)


def pickled(fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
    return {"pickle_b64": base64.b64encode(cloudpickle.dumps((fn, args, {}))).decode()}


def result(outcome: Outcome) -> Any:
    """Unpickle a result the way a kernel would (the server never does)."""
    assert outcome.ok, outcome.error
    if outcome.result_inline is not None:
        return pickle.loads(outcome.result_inline)
    assert outcome.result_file is not None
    return pickle.loads(Path(outcome.result_file).read_bytes())


async def started(executor: LocalExecutor) -> LocalExecutor:
    await executor.start()
    return executor


async def read_pids(path: Path, until: Until) -> list[int]:
    """The pids a ``sleeper_with_child`` task wrote: its worker, then its child."""
    await until(path.exists, f"{path} to appear")
    return [int(pid) for pid in path.read_text().split()]


async def test_python_task_returns_preview_and_pickle(
    make_executor: MakeExecutor, make_spec: MakeSpec
) -> None:
    executor = await started(make_executor())
    outcome = await executor.run(call(make_spec, "add", 2, 3), noop)
    assert outcome.preview == {"type": "int", "repr": "5", "value": 5}
    assert outcome.result_size == len(outcome.result_inline or b"")
    assert result(outcome) == 5


@pytest.mark.parametrize(
    ("func", "args"),
    [
        ("builtins:int", []),
        ("builtins:bool", [1]),
        ("builtins:pow", [2, 100]),
        ("builtins:pow", [10, 1500]),  # its repr is cut to 1,000 characters, not its value
        ("builtins:pow", [10, 5000]),  # no repr, no JSON: too many digits for a str
        ("operator:truediv", [1, 3]),
        ("builtins:float", ["1e16"]),
        ("builtins:float", ["-inf"]),
        ("builtins:float", ["nan"]),
        ("builtins:complex", [1, 2]),
        ("builtins:str", ["text"]),
    ],
)
async def test_a_results_preview_holds_its_json_value_when_it_has_one(
    make_executor: MakeExecutor, make_spec: MakeSpec, func: str, args: list[Any]
) -> None:
    executor = await started(make_executor())
    outcome = await executor.run(call(make_spec, func, *args), noop)
    value = result(outcome)
    assert outcome.preview is not None
    try:
        expected = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):  # not JSON, or not finite
        assert "value" not in outcome.preview
    else:
        assert outcome.preview["value"] == expected
        assert type(outcome.preview["value"]) is type(expected)
    try:
        assert outcome.preview["repr"] == repr(value)[:997] + (
            "..." if len(repr(value)) > 1000 else ""
        )
    except ValueError:  # an int of 5,001 digits has no repr
        assert outcome.preview["repr"].startswith("<repr failed: ValueError")


async def test_large_result_is_written_to_the_result_file(
    make_executor: MakeExecutor, make_spec: MakeSpec
) -> None:
    executor = await started(make_executor())
    spec = call(make_spec, "big_result", 200_000, inline_result_max=1024)
    outcome = await executor.run(spec, noop)
    assert outcome.result_inline is None
    assert outcome.result_file == spec.result_path
    assert outcome.result_size == os.path.getsize(spec.result_path)
    assert result(outcome) == b"x" * 200_000
    assert outcome.preview is not None
    assert outcome.preview["type"] == "bytes"
    assert "value" not in outcome.preview
    assert len(outcome.preview["repr"]) <= 1000


async def test_result_over_the_limit_is_refused_and_removed(
    make_executor: MakeExecutor, make_spec: MakeSpec
) -> None:
    executor = await started(make_executor())
    spec = call(make_spec, "big_result", 100_000, result_max_bytes=50_000, inline_result_max=1024)
    outcome = await executor.run(spec, noop)
    assert not outcome.ok and outcome.error is not None
    assert outcome.error.type == "ResultTooLarge"
    assert "50000" in outcome.error.message
    assert not os.path.exists(spec.result_path)


async def test_task_exception_is_reported(make_executor: MakeExecutor, make_spec: MakeSpec) -> None:
    executor = await started(make_executor())
    outcome = await executor.run(call(make_spec, "boom"), noop)
    assert outcome.error is not None
    assert (outcome.error.type, outcome.error.message) == ("ValueError", "boom")
    assert outcome.error.traceback is not None
    assert "taskmods.py" in outcome.error.traceback
    assert "jupyter_tasks/worker.py" not in outcome.error.traceback


async def test_exit_code_crash_then_next_task_succeeds(
    make_executor: MakeExecutor, make_spec: MakeSpec
) -> None:
    executor = await started(make_executor())
    outcome = await executor.run(call(make_spec, "exit_hard", 3), noop)
    assert outcome.error is not None
    assert outcome.error.type == "WorkerCrashed"
    assert "worker exited with code 3" in outcome.error.message
    assert result(await executor.run(call(make_spec, "add", 1, 1), noop)) == 2


async def test_segfault_is_a_crash_naming_the_signal(
    make_executor: MakeExecutor, make_spec: MakeSpec
) -> None:
    executor = await started(make_executor())
    spec = call(make_spec, "segfault")
    outcome = await executor.run(spec, noop)
    assert outcome.error is not None
    assert outcome.error.type == "WorkerCrashed"
    assert "worker killed by signal SIGSEGV" in outcome.error.message
    assert "Fatal Python error" in Path(spec.log_path).read_text()  # faulthandler's trace
    assert result(await executor.run(call(make_spec, "add", 1, 2), noop)) == 3


async def test_worker_killed_from_outside_is_a_crash(
    make_executor: MakeExecutor, make_spec: MakeSpec, task_dirs: TaskDirs, until: Until
) -> None:
    executor = await started(make_executor())
    pidfile = task_dirs.root / "pids"
    running = asyncio.ensure_future(
        executor.run(call(make_spec, "sleeper_with_child", str(pidfile)), noop)
    )
    worker, child = await read_pids(pidfile, until)
    os.kill(worker, signal.SIGKILL)
    outcome = await asyncio.wait_for(running, HANG)
    assert outcome.error is not None
    assert outcome.error.type == "WorkerCrashed"
    assert "SIGKILL" in outcome.error.message
    await until(lambda: gone(child), "the dead worker's child to be killed")
    assert result(await executor.run(call(make_spec, "add", 2, 2), noop)) == 4


async def test_memory_limit_kills_the_task(
    make_executor: MakeExecutor, make_spec: MakeSpec
) -> None:
    limit = 300 << 20
    executor = await started(make_executor(worker_memory_limit=limit))
    outcome = await asyncio.wait_for(executor.run(call(make_spec, "hog"), noop), HANG)
    assert outcome.error is not None
    assert outcome.error.type == "MemoryLimitExceeded"
    assert f"limit {limit}" in outcome.error.message
    assert result(await executor.run(call(make_spec, "add", 0, 1), noop)) == 1


@pytest.mark.parametrize("setsid", [False, True], ids=["child", "setsid-child"])
async def test_kill_ends_the_whole_tree(
    make_executor: MakeExecutor,
    make_spec: MakeSpec,
    task_dirs: TaskDirs,
    until: Until,
    setsid: bool,
) -> None:
    executor = await started(make_executor())
    pidfile = task_dirs.root / "pids"
    spec = make_spec(
        "python",
        {
            "callable": "taskmods:sleeper_with_child",
            "args": [str(pidfile)],
            "kwargs": {"setsid": setsid},
        },
    )
    running = asyncio.ensure_future(executor.run(spec, noop))
    pids = await read_pids(pidfile, until)
    await executor.kill(spec.task_id)
    assert all(gone(pid) for pid in pids)
    with pytest.raises(TaskKilled):
        await asyncio.wait_for(running, HANG)
    assert result(await executor.run(call(make_spec, "add", 3, 4), noop)) == 7


async def test_task_ignoring_sigterm_ends_after_the_grace(
    make_executor: MakeExecutor, make_spec: MakeSpec, task_dirs: TaskDirs, until: Until
) -> None:
    executor = await started(make_executor(kill_grace_seconds=0.3))
    pidfile = task_dirs.root / "pids"
    spec = make_spec(
        "python",
        {"callable": "taskmods:sleeper_with_child", "args": [str(pidfile), True]},
    )
    running = asyncio.ensure_future(executor.run(spec, noop))
    pids = await read_pids(pidfile, until)
    await asyncio.wait_for(executor.kill(spec.task_id), HANG)
    assert all(gone(pid) for pid in pids)
    with pytest.raises(TaskKilled):
        await running


async def test_kill_of_unknown_task_is_a_noop(make_executor: MakeExecutor) -> None:
    executor = await started(make_executor())
    await executor.kill("0" * 32)


needs_eventfd = pytest.mark.skipif(not WAKE_BY_EVENTFD, reason="requests held back need eventfd")


@needs_eventfd
async def test_a_held_run_begins_at_go_and_run_awaits_it(
    make_executor: MakeExecutor, make_spec: MakeSpec, task_dirs: TaskDirs, until: Until
) -> None:
    """``hold`` hands the request to an idle worker; ``go`` (from any thread) begins it;
    progress it reports before ``run`` is called still arrives; ``run`` returns its end."""
    executor = await started(make_executor())
    await executor.run(make_spec("python", {"callable": "taskmods:add", "args": [1, 1]}), noop)
    gate = task_dirs.root / "gate"
    spec = make_spec("python", {"callable": "taskmods:early_progress", "args": [str(gate)]})
    seen: list[tuple[float | None, str | None]] = []
    go = executor.hold(spec, lambda p, m: seen.append((p, m)))
    assert go is not None
    assert executor.hold(spec, noop) is None  # one hold per task
    await asyncio.to_thread(go)
    await until(lambda: seen == [(0.25, "early")], "the held run's progress")
    gate.write_text("go")
    assert result(await executor.run(spec, noop)) == "go"


@needs_eventfd
async def test_a_dropped_hold_never_runs(
    make_executor: MakeExecutor, make_spec: MakeSpec, task_dirs: TaskDirs, until: Until
) -> None:
    executor = await started(make_executor())
    await executor.run(make_spec("python", {"callable": "taskmods:add", "args": [1, 1]}), noop)
    [held] = executor.worker_pids()
    markers = task_dirs.root / "markers"
    spec = make_spec("python", {"callable": "taskmods:mark", "args": [str(markers), "held"]})
    assert executor.hold(spec, noop) is not None
    executor.drop_hold(spec.task_id)
    await until(lambda: gone(held), "the worker holding the request ended")
    again = make_spec("python", {"callable": "taskmods:mark", "args": [str(markers), "next"]})
    assert result(await executor.run(again, noop)) == "next"
    assert markers.read_text() == "next\n"  # the held request went with its worker


@needs_eventfd
@pytest.mark.parametrize("woken", [False, True], ids=["before-go", "after-go-unread"])
async def test_a_held_run_whose_worker_died_unread_runs_on_another(
    make_executor: MakeExecutor,
    make_spec: MakeSpec,
    task_dirs: TaskDirs,
    until: Until,
    woken: bool,
) -> None:
    """A worker killed before it read the held request never began the run: the run goes
    to another worker instead of failing with ``WorkerCrashed``."""
    executor = await started(make_executor())
    await executor.run(make_spec("python", {"callable": "taskmods:add", "args": [1, 1]}), noop)
    [held] = executor.worker_pids()
    markers = task_dirs.root / "markers"
    spec = make_spec("python", {"callable": "taskmods:mark", "args": [str(markers), "held"]})
    go = executor.hold(spec, noop)
    assert go is not None
    tree = [psutil.Process(held), *psutil.Process(held).children(recursive=True)]
    if woken:  # stopped (the worker, and its guard where it has one), then woken
        for process in reversed(tree):
            process.send_signal(signal.SIGSTOP)
        stopped = psutil.STATUS_STOPPED
        await until(lambda: all(p.status() == stopped for p in tree), "the worker stopped")
        go()
    for process in reversed(tree):
        process.send_signal(signal.SIGKILL)
    await until(lambda: held not in executor.worker_pids(), "the dead worker was noticed")
    if not woken:
        go()  # a no-op: the worker is gone
    assert result(await executor.run(spec, noop)) == "held"
    assert markers.read_text() == "held\n"


@needs_eventfd
async def test_a_worker_that_cannot_wait_on_its_eventfd_is_never_held_nor_rerun(
    make_executor: MakeExecutor, make_spec: MakeSpec, task_dirs: TaskDirs, tmp_path: Path
) -> None:
    """An interpreter without the guard (no ``os.pidfd_open``) reads its socket at once:
    a request to it cannot be held back, and a run that crashed in it ran, once."""
    site = tmp_path / "noguard"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import os\ndel os.pidfd_open\n")
    python = tmp_path / "python-noguard"
    path = f"{site}${{PYTHONPATH:+:$PYTHONPATH}}"
    python.write_text(f'#!/bin/sh\nPYTHONPATH="{path}" exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    executor = await started(make_executor())
    # The usual worker first: idle longer, it is the one trimmed when the other goes idle.
    assert result(await executor.run(call(make_spec, "add", 0, 1), noop)) == 1
    assert result(await executor.run(call(make_spec, "add", 1, 1, interpreter=str(python)), noop))
    assert executor.hold(call(make_spec, "add", 2, 2, interpreter=str(python)), noop) is None
    markers = task_dirs.root / "markers"
    crash = call(make_spec, "record_then_exit", str(markers), "ran", 3, interpreter=str(python))
    outcome = await executor.run(crash, noop)
    assert outcome.error is not None and outcome.error.type == "WorkerCrashed"
    assert markers.read_text() == "ran\n"


async def test_a_crash_is_reported_when_the_server_holds_many_files(
    make_executor: MakeExecutor, make_spec: MakeSpec
) -> None:
    """Worker fds above 1023 (a busy server) still settle a crashed run: no hang."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip("the hard limit on open files is below 2048")
    ballast: list[int] = []
    try:
        if soft != resource.RLIM_INFINITY and soft < 2048:
            resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
        ballast.extend(os.open(os.devnull, os.O_RDONLY) for _ in range(1100))
        executor = await started(make_executor())
        outcome = await asyncio.wait_for(executor.run(call(make_spec, "exit_hard", 3), noop), HANG)
        assert outcome.error is not None and outcome.error.type == "WorkerCrashed"
        assert result(await executor.run(call(make_spec, "add", 1, 1), noop)) == 2
    finally:
        for fd in ballast:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_progress_arrives_in_order_and_the_last_one_is_delivered(
    make_executor: MakeExecutor, make_spec: MakeSpec
) -> None:
    def burst(n: int) -> int:
        import jupyter_tasks

        for i in range(1, n + 1):
            jupyter_tasks.set_progress(i / n, f"{i}/{n}")
        return n

    executor = await started(make_executor())
    seen: list[tuple[float | None, str | None]] = []
    outcome = await executor.run(
        make_spec("callable", pickled(burst, 5000)), lambda p, m: seen.append((p, m))
    )
    assert result(outcome) == 5000
    assert seen[-1] == (1.0, "5000/5000")
    fractions = [p or 0.0 for p, _ in seen]
    assert fractions == sorted(fractions)
    assert len(seen) < 5000  # throttled


async def test_progress_and_output_of_a_slow_task(
    make_executor: MakeExecutor, make_spec: MakeSpec, task_dirs: TaskDirs
) -> None:
    executor = await started(make_executor())
    gate = task_dirs.root / "gate"
    gate.write_text("")
    seen: list[tuple[float | None, str | None]] = []
    spec = call(make_spec, "progress_steps", 4, str(gate))
    outcome = await executor.run(spec, lambda p, m: seen.append((p, m)))
    assert result(outcome) == "done"
    assert seen[-1] == (1.0, "step 4/4")
    fractions = [p or 0.0 for p, _ in seen]
    assert fractions == sorted(fractions)
    assert Path(spec.log_path).read_text() == "starting\nfinished\n"


async def test_changed_module_is_picked_up_by_the_next_task(
    make_executor: MakeExecutor, make_spec: MakeSpec, task_dirs: TaskDirs
) -> None:
    executor = await started(make_executor(max_workers=1))
    module = task_dirs.root / "changing.py"
    module.write_text("def value():\n    return 1\n")
    assert result(await executor.run(call(make_spec, "changing:value"), noop)) == 1
    module.write_text("def value():\n    return 2\n")
    later = time.time() + 5  # a different mtime even on coarse clocks
    os.utime(module, (later, later))
    assert result(await executor.run(call(make_spec, "changing:value"), noop)) == 2


async def test_workers_environment_lacks_credentials(
    make_executor: MakeExecutor, make_spec: MakeSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["JUPYTER_TASKS_TOKEN", "JUPYTER_TASKS_URL", "JUPYTER_TASKS_OTHER", "JUPYTER_TOKEN"]
    for name in names:
        monkeypatch.setenv(name, "secret")
    monkeypatch.setenv("JT_TEST_KEEP", "kept")

    def environment(keys: list[str]) -> dict[str, str | None]:
        return {key: os.environ.get(key) for key in keys}

    executor = await started(make_executor())
    outcome = await executor.run(
        make_spec("callable", pickled(environment, [*names, "JT_TEST_KEEP"])), noop
    )
    assert result(outcome) == {**dict.fromkeys(names), "JT_TEST_KEEP": "kept"}


async def test_another_interpreter_gets_its_own_pool(
    make_executor: MakeExecutor, make_spec: MakeSpec, tmp_path: Path, until: Until
) -> None:
    venv = Path(sys.prefix)
    if not (venv / "pyvenv.cfg").exists():
        pytest.skip("needs to run inside a virtual environment")
    clone = tmp_path / "venv2"  # the same environment under another path
    (clone / "bin").mkdir(parents=True)
    shutil.copy(venv / "pyvenv.cfg", clone / "pyvenv.cfg")
    (clone / "lib").symlink_to(venv / "lib")
    python = clone / "bin" / "python"
    python.symlink_to(sys.executable)

    def where() -> tuple[str, int]:
        return sys.executable, os.getpid()

    executor = await started(make_executor(max_workers=2, idle_seconds=0.5))
    await until(lambda: len(executor.worker_pids()) == 2, "the warm pool")
    default_pids = set(executor.worker_pids())
    spec = make_spec("callable", {**pickled(where), "python": str(python)}, interpreter=str(python))
    executable, pid = result(await executor.run(spec, noop))
    assert executable == str(python)
    assert pid not in default_pids
    await until(lambda: gone(pid), "the idle worker of the other interpreter to be reaped")
    await until(lambda: len(executor.worker_pids()) == 2, "the default pool to be refilled")


async def test_an_interpreter_that_cannot_start_fails_the_task(
    make_executor: MakeExecutor, make_spec: MakeSpec, tmp_path: Path
) -> None:
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'no python here' >&2\nexit 7\n")
    broken.chmod(0o755)
    executor = await started(make_executor())
    outcome = await executor.run(call(make_spec, "add", 1, 1, interpreter=str(broken)), noop)
    assert outcome.error is not None
    assert outcome.error.type == "WorkerCrashed"
    assert "exited with code 7" in outcome.error.message
    assert "no python here" in outcome.error.message
    assert executor.health().healthy


async def test_health_turns_false_when_workers_cannot_start(
    make_executor: MakeExecutor, tmp_path: Path, until: Until
) -> None:
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    executor = make_executor(max_workers=3)
    executor.default_interpreter = str(broken)
    assert executor.health().healthy
    await executor.start()
    await until(lambda: not executor.health().healthy, "health to turn false")
    assert executor.health().workers == 0
    assert "exited with code 1" in executor.health().detail


async def test_workers_are_recycled_after_max_tasks(
    make_executor: MakeExecutor, make_spec: MakeSpec
) -> None:
    executor = await started(make_executor(max_tasks_per_worker=2))
    pids = [result(await executor.run(call(make_spec, "os:getpid"), noop)) for _ in range(4)]
    assert pids[0] == pids[1] != pids[2] == pids[3]


async def test_warm_pool_and_health(make_executor: MakeExecutor, until: Until) -> None:
    executor = await started(make_executor(max_workers=2))
    await until(lambda: executor.health().workers == 2, "two warm workers")
    assert executor.health().healthy
    lower = min(19, psutil.Process().nice() + 5)
    for pid in executor.worker_pids():
        assert psutil.Process(pid).nice() == lower
        assert os.getpgid(pid) == pid  # each worker leads its own process group


async def test_stop_ends_running_tasks_and_every_worker(
    make_executor: MakeExecutor, make_spec: MakeSpec, task_dirs: TaskDirs, until: Until
) -> None:
    executor = await started(make_executor(max_workers=2))
    pidfile = task_dirs.root / "pids"
    running = asyncio.ensure_future(
        executor.run(call(make_spec, "sleeper_with_child", str(pidfile)), noop)
    )
    pids = await read_pids(pidfile, until)
    workers = executor.worker_pids()
    await executor.stop()
    assert executor.worker_pids() == []
    assert all(gone(pid) for pid in [*pids, *workers])
    with pytest.raises(TaskKilled):
        await running


SERVER_SCRIPT = """
import asyncio, os, sys, time
from jupyter_tasks.executors.base import RunSpec
from jupyter_tasks.executors.local import LocalExecutor
from jupyter_tasks.tasktypes.python import PythonTask

root, pidfile = sys.argv[1], sys.argv[2]

async def main():
    executor = LocalExecutor(max_workers=1)
    await executor.start()
    spec = RunSpec(
        task_id="f" * 32, attempt=1, task_type="python", type_path=PythonTask.type_path(),
        parameters={"callable": "taskmods:sleeper_with_child", "args": [pidfile]},
        interpreter=sys.executable, root_dir=root, log_path=os.path.join(root, "log"),
        result_path=os.path.join(root, "result"), blob_dir=root, result_max_bytes=1 << 20,
    )
    asyncio.ensure_future(executor.run(spec, lambda p, m: None))
    while not os.path.exists(pidfile):
        await asyncio.sleep(0.01)
    os._exit(0)  # the server dies without cleaning anything up

asyncio.run(main())
"""


async def test_worker_exits_when_the_server_dies(task_dirs: TaskDirs, until: Until) -> None:
    pidfile = task_dirs.root / "pids"
    script = textwrap.dedent(SERVER_SCRIPT)
    server = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script, str(task_dirs.root), str(pidfile)],
        timeout=HANG,
        check=False,
    )
    assert server.returncode == 0
    pids = [int(pid) for pid in pidfile.read_text().split()]
    try:
        await until(lambda: all(gone(pid) for pid in pids), "the orphaned worker to exit")
    finally:
        for pid in pids:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


async def test_tqdm_drives_progress(make_executor: MakeExecutor, make_spec: MakeSpec) -> None:
    pytest.importorskip("tqdm")

    def bars() -> int:
        from tqdm import tqdm  # type: ignore[import-untyped]

        total = 0
        for i in tqdm(range(50), desc="epochs", mininterval=0):
            total += i
        return total

    executor = await started(make_executor())
    seen: list[tuple[float | None, str | None]] = []
    outcome = await executor.run(
        make_spec("callable", pickled(bars)), lambda p, m: seen.append((p, m))
    )
    assert result(outcome) == sum(range(50))
    assert seen[-1] == (1.0, "epochs: 50/50")


async def test_a_worker_that_breaks_the_protocol_is_killed(
    make_executor: MakeExecutor, make_spec: MakeSpec
) -> None:
    def garble() -> None:
        import time

        from jupyter_tasks import worker

        assert worker._progress is not None
        worker._progress._channel.send(["not", "an", "object"])  # type: ignore[arg-type]
        time.sleep(60)

    executor = await started(make_executor())
    outcome = await asyncio.wait_for(
        executor.run(make_spec("callable", pickled(garble)), noop), HANG
    )
    assert outcome.error is not None
    assert outcome.error.type == "WorkerCrashed"
    assert "protocol" in outcome.error.message
    assert result(await executor.run(call(make_spec, "add", 5, 5), noop)) == 10


async def test_a_task_that_closes_the_workers_own_descriptors_fails_alone(
    make_executor: MakeExecutor, make_spec: MakeSpec
) -> None:
    """The worker keeps copies of its stdout and stderr (numbered 100 and up) to put back
    after each task; a task that closes them fails, and the next task runs as usual."""

    def close_high() -> None:
        import os

        os.closerange(100, 1 << 16)

    executor = await started(make_executor())
    outcome = await asyncio.wait_for(
        executor.run(make_spec("callable", pickled(close_high)), noop), HANG
    )
    assert outcome.error is not None and outcome.error.type == "WorkerCrashed"
    assert "70" in outcome.error.message
    assert result(await executor.run(call(make_spec, "add", 5, 5), noop)) == 10


class ChunkLog:
    """What ``run_chunk`` reported: begins and ends, in order."""

    def __init__(self) -> None:
        self.begun: list[str] = []
        self.ended: dict[str, Outcome | None] = {}

    def begin(self, task_id: str) -> None:
        self.begun.append(task_id)

    def end(self, task_id: str, outcome: Outcome | None) -> None:
        self.ended[task_id] = outcome


@pytest.mark.parametrize("shared", [True, False], ids=["shared-fields-once", "each-run-whole"])
async def test_a_chunk_runs_in_one_request_each_once(
    make_executor: MakeExecutor, make_spec: MakeSpec, until: Until, shared: bool
) -> None:
    """Fields common to the runs go once to a worker that says it takes them so, else
    in each run; a field that differs goes in each run all the same."""
    executor = await started(make_executor(max_workers=1))
    await until(lambda: executor.health().workers == 1, "a worker to be ready")
    for worker in executor._workers:
        assert worker.takes_shared_fields  # (what this version's workers say)
        worker.takes_shared_fields = shared
    specs = [call(make_spec, "add", n, 1) for n in range(4)]
    specs.append(call(make_spec, "add", 4, 1, inline_result_max=0))  # its result: a file
    seen = ChunkLog()
    not_begun = await asyncio.wait_for(
        executor.run_chunk(specs, lambda *a: None, seen.begin, seen.end), HANG
    )
    assert not_begun == []
    assert seen.begun == [spec.task_id for spec in specs]
    assert list(seen.ended) == seen.begun
    outcomes = [o for o in seen.ended.values() if o is not None]
    assert [result(o) for o in outcomes] == [1, 2, 3, 4, 5]
    assert [o.result_file is not None for o in outcomes] == [False] * 4 + [True]


async def test_a_chunk_of_two_interpreters_is_not_sent_as_one(
    make_executor: MakeExecutor, make_spec: MakeSpec, tmp_path: Path
) -> None:
    executor = await started(make_executor(max_workers=1))
    other = call(make_spec, "add", 1, 1, interpreter=str(tmp_path / "other-python"))
    seen = ChunkLog()
    specs = [call(make_spec, "add", 1, 1), other]
    assert await executor.run_chunk(specs, lambda *a: None, seen.begin, seen.end) is None
    assert seen.begun == []


async def test_a_bad_reply_in_a_chunk_fails_only_its_run(
    make_executor: MakeExecutor, make_spec: MakeSpec
) -> None:
    def lie() -> None:
        import time

        from jupyter_tasks import worker

        progress = worker._progress
        assert progress is not None
        done = {"op": "done", "task_id": progress._task_id, "ok": True, "inline": "!!!x"}
        progress._channel.send(done)  # a result that is not base64
        time.sleep(0.5)  # (its own, real reply comes after: not this run's any more)

    executor = await started(make_executor(max_workers=1))
    specs = [make_spec("callable", pickled(lie)), call(make_spec, "add", 2, 2)]
    seen = ChunkLog()
    not_begun = await asyncio.wait_for(
        executor.run_chunk(specs, lambda *a: None, seen.begin, seen.end), HANG
    )
    outcome = seen.ended[specs[0].task_id]
    assert outcome is not None and outcome.error is not None
    assert outcome.error.type == "WorkerCrashed" and "reply" in outcome.error.message
    assert not_begun == []
    after = seen.ended[specs[1].task_id]
    assert after is not None and result(after) == 4


async def test_cancelling_run_ends_the_task(
    make_executor: MakeExecutor, make_spec: MakeSpec, task_dirs: TaskDirs, until: Until
) -> None:
    executor = await started(make_executor())
    pidfile = task_dirs.root / "pids"
    spec = call(make_spec, "sleeper_with_child", str(pidfile))
    running = asyncio.ensure_future(executor.run(spec, noop))
    pids = await read_pids(pidfile, until)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await until(lambda: all(gone(pid) for pid in pids), "the cancelled task's processes to end")
    assert result(await executor.run(call(make_spec, "add", 1, 5), noop)) == 6


def test_set_progress_outside_a_worker_only_checks_its_arguments() -> None:
    import jupyter_tasks

    jupyter_tasks.set_progress(0.5, "half")
    jupyter_tasks.set_progress(None)
    jupyter_tasks.set_progress(2)  # clamped, not refused
    with pytest.raises(TypeError):
        jupyter_tasks.set_progress("half")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        jupyter_tasks.set_progress(float("nan"))
