"""Faults of one task, through the REST API of a live server: each fails only its own task.

The engine suite (``tests/engine``) drives the same faults on ``LocalExecutor`` and the
orchestrator directly; here they go through ``POST /tasks`` on a ``jupyter server``
subprocess, with another task running beside each fault. For every fault: the task ends
with the error type the contract names, the task beside it is undisturbed, the pool is
whole again and the next task succeeds, and no process of the task survives (its whole
tree, forked children and children in sessions of their own included; the one case where
such a child escapes is marked as a known failure).
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from support import ServerProcess, python_task, wait_done_ws

from .conftest import alive, poll, read_pids, tree, wait_all_gone, wait_no_orphans

MiB = 1 << 20
MAX_WORKERS = 2
MEMORY_LIMIT = 300 * MiB
RESULT_CAP = 1_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the whole matrix, with lowered limits and a short kill grace."""
    tasks = {
        "max_workers": MAX_WORKERS,
        "worker_memory_limit": MEMORY_LIMIT,
        "result_max_bytes": RESULT_CAP,
        "kill_grace_seconds": 0.5,
    }
    server = ServerProcess(tmp_path_factory.mktemp("faults"), tasks, only_tasks=True).start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Fault:
    """A task that goes wrong, and how the test makes it go wrong."""

    func: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    timeout: int | None = None
    #: What the test does once the task has written its pids: "kill" the worker, "cancel".
    action: str | None = None
    status: str = "failed"
    error_type: str | None = None
    words: str = ""
    #: The task writes its pids (worker first) to a file named by the test.
    pidfile: bool = False


FAULTS = {
    "worker-sigkilled": Fault(
        "sleeper_with_child", action="kill", error_type="WorkerCrashed", words="SIGKILL",
        pidfile=True,
    ),
    "os-exit": Fault("exit_hard", [3], error_type="WorkerCrashed", words="exited with code 3"),
    "segfault": Fault("segfault", error_type="WorkerCrashed", words="SIGSEGV"),
    "memory-bomb": Fault(
        "hog", error_type="MemoryLimitExceeded", words=f"limit {MEMORY_LIMIT}"
    ),
    "result-over-cap": Fault(
        "big_result", [2 * RESULT_CAP], error_type="ResultTooLarge", words=str(RESULT_CAP)
    ),
    "forks-then-exits": Fault(
        "family", kwargs={"then_exit": 3, "own_session": False}, error_type="WorkerCrashed",
        words="exited with code 3", pidfile=True,
    ),
    "ignores-sigterm-timed-out": Fault(
        "family", kwargs={"ignore_term": True}, timeout=2, error_type="TaskTimeout",
        pidfile=True,
    ),
    "ignores-sigterm-cancelled": Fault(
        "family", kwargs={"ignore_term": True}, action="cancel", status="cancelled",
        pidfile=True,
    ),
    "forks-timed-out": Fault("family", timeout=2, error_type="TaskTimeout", pidfile=True),
    "forks-cancelled": Fault("family", action="cancel", status="cancelled", pidfile=True),
    # When a worker ends by itself its whole tree is killed, a child that made a session
    # of its own included (the worker's guard process adopts it).
    "forks-own-session-then-exits": Fault(
        "family", kwargs={"then_exit": 3}, error_type="WorkerCrashed",
        words="exited with code 3", pidfile=True,
    ),
}  # fmt: skip


def submit(server: ServerProcess, request: dict[str, Any]) -> dict[str, Any]:
    response = server.request("POST", "tasks", json=request)
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()
    return task


def status_of(server: ServerProcess, task_id: str) -> str:
    status: str = server.request("GET", f"tasks/{task_id}").json()["status"]
    return status


def call(func: str, *args: Any, **request: Any) -> dict[str, Any]:
    return python_task(f"taskmods:{func}", *args, **request)


@pytest.mark.parametrize("name", FAULTS)
def test_a_fault_fails_only_its_own_task(server: ServerProcess, name: str) -> None:
    fault = FAULTS[name]
    scratch = server.root / "faults" / uuid.uuid4().hex
    scratch.mkdir(parents=True)
    gate, pidfile = scratch / "gate", scratch / "pids"

    # Another task holds the other worker while the fault happens.
    beside = submit(server, call("wait_for", str(gate)))
    poll(lambda: status_of(server, beside["task_id"]) == "running", "the task beside to run")

    args = [str(pidfile), *fault.args] if fault.pidfile else fault.args
    request = python_task(f"taskmods:{fault.func}", *args, description=name)
    request["parameters"]["kwargs"] = fault.kwargs
    if fault.timeout is not None:
        request["timeout_seconds"] = fault.timeout
    task = submit(server, request)

    pids: list[int] = []
    if fault.pidfile:
        pids = read_pids(pidfile)
        # The whole tree as it is now, beyond the pids the task wrote.
        pids += [proc.pid for proc in tree(pids[0])]
    if fault.action == "kill":
        os.kill(pids[0], signal.SIGKILL)
    elif fault.action == "cancel":
        cancelled = server.request("POST", f"tasks/{task['task_id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        # The answer comes once the processes are gone.
        assert not alive(pids), f"{name}: processes alive when the cancel was answered"

    done = wait_done_ws(server, [task["task_id"]])[task["task_id"]]
    assert done["status"] == fault.status, done
    if fault.error_type is None:
        assert done["error"] is None, done
    else:
        assert done["error"]["type"] == fault.error_type, done["error"]
        assert fault.words in done["error"]["message"], done["error"]
    if fault.timeout is not None:
        # Reported failed once the processes are gone.
        assert not alive(pids), f"{name}: processes alive when the timeout was reported"
    wait_all_gone(pids, f"{name}: the task's processes")
    wait_no_orphans(server, name)

    # The task beside was not disturbed.
    assert status_of(server, beside["task_id"]) == "running"
    gate.with_suffix(".tmp").write_text("released")
    gate.with_suffix(".tmp").replace(gate)  # whole when it appears
    finished = wait_done_ws(server, [beside["task_id"]])[beside["task_id"]]
    assert finished["status"] == "completed", finished
    kept = server.request("GET", f"tasks/{beside['task_id']}/result").json()
    assert kept["value"] == "released"

    # The pool is whole again, and the next task succeeds.
    poll(
        lambda: server.request("GET", "tasks/health").json()["workers"] == MAX_WORKERS,
        "the pool to be refilled",
    )
    nxt = submit(server, call("add", 2, 3))
    assert wait_done_ws(server, [nxt["task_id"]])[nxt["task_id"]]["status"] == "completed"
    assert server.request("GET", f"tasks/{nxt['task_id']}/result").json()["value"] == 5
    health = server.request("GET", "tasks/health")
    assert health.status_code == 200 and health.json()["healthy"] is True


def test_many_faults_in_a_row_leave_a_working_pool(server: ServerProcess) -> None:
    """Crashes on both workers at once, repeatedly: the pool refills and tasks still run."""
    crashes = [call("exit_hard", 7), call("segfault")] * 3
    bad = [submit(server, request)["task_id"] for request in crashes]
    good = [submit(server, call("add", i, i))["task_id"] for i in range(4)]
    done = wait_done_ws(server, bad + good)
    assert {done[t]["error"]["type"] for t in bad} == {"WorkerCrashed"}
    assert all(done[t]["status"] == "completed" for t in good), [done[t] for t in good]
    poll(
        lambda: server.request("GET", "tasks/health").json()["workers"] == MAX_WORKERS,
        "the pool to be refilled",
    )
    wait_no_orphans(server, "after the crashes")
