"""The orchestrator end to end: real worker processes, a real SQLite file, no mocks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import HANG, TASKMODS, engine_config, first_event, gone, task_root, until
from support import taskmods_request as py

from jupyter_tasks.errors import (
    InvalidParameters,
    InvalidTransition,
    NoResult,
    QueueFull,
    StoreUnavailable,
    TaskNotFound,
)
from jupyter_tasks.models import Task, TaskRequest, TaskStatus
from jupyter_tasks.orchestrator import EngineConfig, Orchestrator, Subscription


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return task_root(tmp_path, TASKMODS)


@pytest.fixture
def make_config(tmp_path: Path, root: Path) -> Callable[..., EngineConfig]:
    return lambda **overrides: engine_config(tmp_path, root, **overrides)


@pytest.fixture
def orch(
    make_config: Callable[..., EngineConfig],
    jp_asyncio_loop: asyncio.AbstractEventLoop,
    request: pytest.FixtureRequest,
) -> Iterator[Orchestrator]:
    """A started orchestrator; ``indirect`` parametrization passes config overrides."""
    o = Orchestrator(make_config(**getattr(request, "param", {})))
    jp_asyncio_loop.run_until_complete(o.start())
    yield o
    jp_asyncio_loop.run_until_complete(o.stop())


#: The ``orch`` fixture with one worker: tasks run one at a time, in priority order.
one_worker = pytest.mark.parametrize("orch", [{"max_workers": 1}], indirect=True, ids=["1"])


async def wait_path(path: Path) -> str:
    """Wait (bounded) until a task has written ``path``."""
    deadline = time.monotonic() + HANG
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.01)
    return path.read_text()


async def test_python_task_completes_with_result(orch: Orchestrator) -> None:
    task = await orch.submit(py("add", 2, 3))
    assert task.status == TaskStatus.CREATED and len(task.task_id) == 32
    done = await orch.wait(task.task_id, HANG)
    assert done.status == TaskStatus.COMPLETED and done.attempt == 1
    assert done.started_at is not None and done.finished_at is not None
    info = await orch.result(task.task_id)
    assert info.preview == {"type": "int", "repr": "5", "value": 5}
    payload = b"".join([c async for c in orch.result_chunks(task.task_id)])
    assert pickle.loads(payload) == 5


async def test_values_beyond_the_fast_encoder_travel_exactly(orch: Orchestrator) -> None:
    """A 71-bit integer and a lone surrogate: to the worker, into the store and back."""
    big = await orch.submit(py("add", 2**70, 1))
    lone = await orch.submit(py("add", "\ud800", "!"))
    assert big.parameters["args"] == [2**70, 1]
    for task, value in ((big, 2**70 + 1), (lone, "\ud800!")):
        done = await orch.wait(task.task_id, HANG)
        assert done.status == TaskStatus.COMPLETED, done.error
        assert (await orch.result(task.task_id)).preview["value"] == value
        again = await orch.get(task.task_id)
        assert again.parameters == task.parameters
    cycle: list[Any] = []
    cycle.append(cycle)
    refused = [(float("nan"), "nan is not a JSON number"), (float("inf"), "inf is not")]
    refused += [(b"bytes", "a bytes is not a JSON value"), (cycle, "contains itself")]
    for bad, message in refused:
        with pytest.raises(ValueError, match=message):
            py("add", [{"x": bad}], 1)
    shared = [1, 2]
    assert py("add", [shared, shared], 1).parameters["args"][0] == [shared, shared]


async def test_a_wait_that_times_out_leaves_later_waits_their_end(
    orch: Orchestrator, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    task = await orch.submit(py("wait_for", str(gate)))
    with pytest.raises(TimeoutError, match=r"did not finish within 0\.2 s"):
        await orch.wait(task.task_id, 0.2)
    waits = [asyncio.ensure_future(orch.wait(task.task_id, HANG)) for _ in range(2)]
    gate.write_text("go")
    first, second = await asyncio.gather(*waits)
    assert first.status == TaskStatus.COMPLETED and first == second
    assert first == await orch.get(task.task_id)  # the record as stored
    assert await orch.wait(task.task_id, HANG) == first  # finished: read


@one_worker
async def test_waits_end_when_the_engine_stops(orch: Orchestrator, tmp_path: Path) -> None:
    """The running task ends as a restart ends it; one still queued was never finished."""
    running = await orch.submit(py("wait_for", str(tmp_path / "never")))
    queued = await orch.submit(py("add", 1, 1))
    await wait_status(orch, running.task_id, TaskStatus.RUNNING)
    waits = [asyncio.ensure_future(orch.wait(t.task_id, HANG)) for t in (running, queued)]
    both = {running.task_id, queued.task_id}
    await until(lambda: set(orch._waiters) == both, "both waits to begin")
    await orch.stop()  # (the fixture's own stop then does nothing)
    ended = await asyncio.wait_for(waits[0], HANG)
    assert ended.status == TaskStatus.FAILED
    assert ended.error is not None and ended.error.type == "ServerRestart"
    with pytest.raises(StoreUnavailable, match="stopped before"):
        await asyncio.wait_for(waits[1], HANG)


async def test_unknown_ids_and_missing_results(orch: Orchestrator) -> None:
    with pytest.raises(TaskNotFound):
        await orch.get("0" * 32)
    failed = await orch.wait((await orch.submit(py("boom"))).task_id, HANG)
    assert failed.status == TaskStatus.FAILED
    assert failed.error is not None and failed.error.type == "ValueError"
    assert "boom" in failed.error.message and "Traceback" in (failed.error.traceback or "")
    with pytest.raises(NoResult):
        await orch.result(failed.task_id)
    with pytest.raises(InvalidTransition):
        await orch.cancel(failed.task_id)


@one_worker
async def test_priority_order_with_one_worker(orch: Orchestrator, tmp_path: Path) -> None:
    gate, order = tmp_path / "gate", tmp_path / "order"
    blocker = await orch.submit(py("wait_for", str(gate)))
    names = [("low", 1), ("mid-a", 5), ("high", 10), ("mid-b", 5), ("low-b", 1)]
    tasks = [await orch.submit(py("record", str(order), n, priority=p)) for n, p in names]
    gate.write_text("go")
    for task in [blocker, *tasks]:
        assert (await orch.wait(task.task_id, HANG)).status == TaskStatus.COMPLETED
    assert order.read_text().split() == ["high", "mid-a", "mid-b", "low", "low-b"]


async def test_cancel_queued_and_running(
    make_config: Callable[..., EngineConfig], tmp_path: Path
) -> None:
    orch = Orchestrator(make_config(max_workers=1))
    await orch.start()
    try:
        pidfile = tmp_path / "pids"
        running = await orch.submit(py("sleeper_with_child", str(pidfile)))
        queued = await orch.submit(py("add", 1, 1))
        pids = [int(p) for p in (await wait_path(pidfile)).split()]

        cancelled = await orch.cancel(queued.task_id)
        assert cancelled.status == TaskStatus.CANCELLED

        cancelled = await orch.cancel(running.task_id)
        assert cancelled.status == TaskStatus.CANCELLED
        assert all(gone(p) for p in pids), "the task's process tree outlived the cancel"
        with pytest.raises(InvalidTransition):
            await orch.cancel(running.task_id)
        # The pool recovers.
        again = await orch.wait((await orch.submit(py("add", 2, 2))).task_id, HANG)
        assert again.status == TaskStatus.COMPLETED
    finally:
        await orch.stop()


@pytest.mark.parametrize("ignore_term", [False, True], ids=["plain", "ignores-sigterm"])
async def test_timeout_kills_the_whole_tree(
    orch: Orchestrator, tmp_path: Path, ignore_term: bool
) -> None:
    pidfile = tmp_path / "pids"
    task = await orch.submit(
        py("sleeper_with_child", str(pidfile), ignore_term=ignore_term, timeout_seconds=2)
    )
    pids = [int(p) for p in (await wait_path(pidfile)).split()]
    done = await orch.wait(task.task_id, HANG)
    assert done.status == TaskStatus.FAILED
    assert done.error is not None and done.error.type == "TaskTimeout"
    assert all(gone(p) for p in pids), "processes outlived the timeout"


@pytest.mark.parametrize(
    ("request_", "error_type", "words"),
    [
        (py("exit_hard", 3), "WorkerCrashed", "3"),
        (py("segfault"), "WorkerCrashed", "SIGSEGV"),
        (py("hog"), "MemoryLimitExceeded", "limit"),
        (py("big_result", 2_000_000), "ResultTooLarge", "bytes"),
    ],
    ids=["os-exit", "segfault", "memory-hog", "result-too-large"],
)
async def test_faults_fail_only_their_task(
    make_config: Callable[..., EngineConfig],
    request_: TaskRequest,
    error_type: str,
    words: str,
) -> None:
    config = make_config(worker_memory_limit=400 << 20, result_max_bytes=1_000_000)
    orch = Orchestrator(config)
    await orch.start()
    try:
        bad = await orch.submit(request_)
        good = await orch.submit(py("add", 20, 22))
        done = await orch.wait(bad.task_id, HANG)
        assert done.status == TaskStatus.FAILED
        assert done.error is not None and done.error.type == error_type, done.error
        assert words in done.error.message
        after = await orch.wait(good.task_id, HANG)
        assert after.status == TaskStatus.COMPLETED
        nxt = await orch.wait((await orch.submit(py("add", 1, 2))).task_id, HANG)
        assert (await orch.result(nxt.task_id)).preview["value"] == 3
        assert orch.health()["healthy"] is True
    finally:
        await orch.stop()


async def test_retries_count_attempts(orch: Orchestrator, tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    task = await orch.submit(py("fail_until", str(counter), 2, max_retries=2))
    done = await orch.wait(task.task_id, HANG)
    assert done.status == TaskStatus.COMPLETED and done.attempt == 3
    assert (await orch.result(task.task_id)).preview["value"] == 3

    counter2 = tmp_path / "counter2"
    task = await orch.submit(py("fail_until", str(counter2), 5, max_retries=1))
    done = await orch.wait(task.task_id, HANG)
    assert done.status == TaskStatus.FAILED and done.attempt == 2
    assert done.error is not None and done.error.type == "ValueError"


async def test_progress_and_logs_reach_subscribers(orch: Orchestrator, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    sub = orch.subscribe()
    task = await orch.submit(py("progress_steps", 5, str(gate)))
    seen: list[dict[str, Any]] = []

    async def watch() -> None:
        async for event in sub:
            if event["task_id"] != task.task_id:
                continue
            seen.append(event)
            if event["event"] == "progress" and event["progress"] == 1.0:
                gate.write_text("go")
            if event["status"] == "completed":
                return

    await asyncio.wait_for(watch(), HANG)
    sub.close()
    seqs = [e["seq"] for e in seen]
    assert seqs == sorted(seqs)
    statuses = [e["status"] for e in seen if e["event"] == "transition"]
    assert statuses == ["created", "running", "completed"]
    progress = [e for e in seen if e["event"] == "progress"]
    assert progress and progress[-1]["message"] == "step 5/5"
    logs, offset = await orch.logs(task.task_id)
    assert b"starting" in logs and b"finished" in logs and offset == len(logs)
    more, offset2 = await orch.logs(task.task_id, offset)
    assert more == b"" and offset2 == offset


async def test_logs_while_running_then_after_the_end(
    make_config: Callable[..., EngineConfig], tmp_path: Path
) -> None:
    """Output is readable (and tailable by offset) while the task runs and stays the same
    after it ends; the next task on the same worker starts with an empty log; a retried
    task's log holds every attempt's output in order."""
    orch = Orchestrator(make_config(max_workers=1))
    await orch.start()
    try:
        gate = tmp_path / "gate"
        task = await orch.submit(py("progress_steps", 1, str(gate)))
        deadline = time.monotonic() + HANG
        while (await orch.logs(task.task_id))[0] != b"starting\nfinished\n":
            assert time.monotonic() < deadline, "the running task's output never showed"
            await asyncio.sleep(0.02)
        assert (await orch.get(task.task_id)).status == TaskStatus.RUNNING
        assert await orch.logs(task.task_id, 9) == (b"finished\n", 18)
        gate.write_text("go")
        assert (await orch.wait(task.task_id, HANG)).status == TaskStatus.COMPLETED
        assert await orch.logs(task.task_id) == (b"starting\nfinished\n", 18)
        assert await orch.logs(task.task_id, 18) == (b"", 18)

        silent = await orch.wait((await orch.submit(py("add", 1, 2))).task_id, HANG)
        assert await orch.logs(silent.task_id) == (b"", 0)

        counter = tmp_path / "counter"
        retried = await orch.submit(py("chatty_fail_until", str(counter), 1, max_retries=1))
        done = await orch.wait(retried.task_id, HANG)
        assert done.status == TaskStatus.COMPLETED and done.attempt == 2
        assert (await orch.logs(retried.task_id))[0] == b"run 1\nrun 2\n"
    finally:
        await orch.stop()
    assert not [p.name for p in orch.store.files_dir.rglob(".live-*")], "a spool was left"


async def test_output_written_after_a_task_ended_stays_in_its_log(
    make_config: Callable[..., EngineConfig], tmp_path: Path
) -> None:
    """A process a task left behind keeps writing to that task's log, never to the log
    of the next task on the same worker."""
    orch = Orchestrator(make_config(max_workers=1))
    await orch.start()
    try:
        command = ["sh", "-c", "(sleep 0.5; echo late) &"]  # nothing printed before it ends
        shell = TaskRequest(
            task_type="shell", description="leaves a writer", parameters={"command": command}
        )
        first = await orch.wait((await orch.submit(shell)).task_id, HANG)
        assert first.status == TaskStatus.COMPLETED
        gate = tmp_path / "gate"
        second = await orch.submit(py("wait_for", str(gate)))
        deadline = time.monotonic() + HANG
        while (await orch.logs(first.task_id))[0] != b"late\n":
            assert time.monotonic() < deadline, "the late line never reached its task's log"
            await asyncio.sleep(0.02)
        gate.write_text("go")
        assert (await orch.wait(second.task_id, HANG)).status == TaskStatus.COMPLETED
        assert await orch.logs(second.task_id) == (b"", 0)
    finally:
        await orch.stop()


async def test_a_subscriber_that_falls_behind_is_dropped(orch: Orchestrator) -> None:
    sub = orch.subscribe(max_pending=5)
    for _ in range(10):
        await orch.submit(py("add", 1, 1))
    assert sub.dropped
    assert [e async for e in sub] == []


async def test_subscribers_filtered_by_status_get_just_their_statuses(orch: Orchestrator) -> None:
    """Each gets its own statuses, also after another came or went; one without a filter
    gets every transition."""

    async def statuses(sub: Subscription, task_id: str) -> list[str]:
        seen: list[str] = []
        while "completed" not in seen:
            seen.append((await first_event(sub, task_id, "transition"))["status"])
        return seen

    starts = orch.subscribe(statuses=["running"])
    ends = orch.subscribe(statuses=["completed"])
    first = await orch.submit(py("add", 1, 1))
    assert (await first_event(starts, first.task_id, "transition"))["status"] == "running"
    assert (await first_event(ends, first.task_id, "transition"))["status"] == "completed"
    starts.close()
    every = orch.subscribe()
    second = await orch.submit(py("add", 1, 2))
    assert await statuses(every, second.task_id) == ["created", "running", "completed"]
    every.close()
    third = await orch.submit(py("add", 1, 3))
    await orch.wait(third.task_id, HANG)
    assert await statuses(ends, second.task_id) == ["completed"]
    assert await statuses(ends, third.task_id) == ["completed"]
    ends.close()


async def test_a_subscriber_that_joins_mid_run_gets_progress_on_the_running_record(
    orch: Orchestrator, tmp_path: Path
) -> None:
    """Events nobody subscribed to are never built; one who subscribes later still gets
    each progress event on the task's full running record, and an ends-only subscriber
    gets nothing but the end."""
    gate = tmp_path / "gate"
    ends = orch.subscribe(statuses=["completed", "failed", "cancelled"])
    task = await orch.submit(py("progress_until", str(gate)))
    late = orch.subscribe()
    event = await first_event(late, task.task_id, "progress")
    late.close()
    record = event["task"]
    assert (record["status"], record["description"]) == ("running", task.description)
    assert record["started_at"] is not None and record["attempt"] == 1
    assert 0 < record["progress"] <= 1 and record["message"].startswith("step ")
    assert (event["progress"], event["message"]) == (record["progress"], record["message"])
    gate.write_text("go")

    async def of_the_task() -> list[dict[str, Any]]:
        seen = []
        async for event in ends:
            if event["task_id"] == task.task_id:
                seen.append(event)
                if event["status"] == "completed":
                    break
        return seen

    seen = await asyncio.wait_for(of_the_task(), HANG)
    ends.close()
    assert [(e["event"], e["status"]) for e in seen] == [("transition", "completed")]


async def test_progress_at_a_runs_first_moment_is_seen(orch: Orchestrator, tmp_path: Path) -> None:
    """An idle engine hands the run over before the loop hears of its commit: a report
    the task makes at once still reaches subscribers and the task's record."""
    gate = tmp_path / "gate"
    await orch.wait((await orch.submit(py("add", 1, 1))).task_id, HANG)  # a worker is idle
    sub = orch.subscribe()
    task = await orch.submit(py("early_progress", str(gate)))
    event = await first_event(sub, task.task_id, "progress")
    sub.close()
    assert (event["progress"], event["message"], event["status"]) == (0.25, "early", "running")
    current = await orch.get(task.task_id)
    assert (current.progress, current.message) == (0.25, "early")
    gate.write_text("go")
    assert (await orch.wait(task.task_id, HANG)).status == TaskStatus.COMPLETED


async def test_a_submit_whose_commit_fails_never_runs(
    make_config: Callable[..., EngineConfig], tmp_path: Path
) -> None:
    """The idle worker already holds the request when the commit fails: it never runs it,
    the submit fails, nothing is stored, and the next submit runs on a fresh worker."""
    orch = Orchestrator(make_config(max_workers=1))
    await orch.start()
    blocker = sqlite3.connect(orch.config.db_path, isolation_level=None)
    try:
        await orch.wait((await orch.submit(py("add", 1, 1))).task_id, HANG)  # warm and idle
        [held] = orch.executor.worker_pids()  # type: ignore[attr-defined]
        await orch.store.run_sync(lambda db: db.execute("PRAGMA busy_timeout = 100"))
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database
        markers = tmp_path / "markers"
        with pytest.raises(StoreUnavailable, match="locked"):
            await orch.submit(py("mark", str(markers), "refused"))
        blocker.execute("ROLLBACK")
        await until(lambda: gone(held), "the worker holding the refused run ended")
        assert not markers.exists()
        task = await orch.wait((await orch.submit(py("mark", str(markers), "next"))).task_id, HANG)
        assert task.status == TaskStatus.COMPLETED
        assert markers.read_text() == "next\n"
        assert [t.description for t in (await orch.list())[0]] == ["mark", "add"]  # newest first
    finally:
        blocker.close()
        await orch.stop()


async def test_a_submit_cancelled_while_it_is_stored_still_runs_once(
    make_config: Callable[..., EngineConfig], tmp_path: Path
) -> None:
    """The caller went away (cancelled) while the task was being written: the write
    lands all the same, so the task is stored, and it runs once and finishes."""
    orch = Orchestrator(make_config(max_workers=1))
    await orch.start()
    blocker = sqlite3.connect(orch.config.db_path, isolation_level=None)
    try:
        await orch.wait((await orch.submit(py("add", 1, 1))).task_id, HANG)  # warm and idle
        markers = tmp_path / "markers"
        blocker.execute("BEGIN IMMEDIATE")  # the insert waits for the lock
        submitting = asyncio.ensure_future(orch.submit(py("mark", str(markers), "late")))
        for _ in range(20):  # let it reach the store
            await asyncio.sleep(0)
        submitting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await submitting
        blocker.execute("ROLLBACK")
        deadline = time.monotonic() + HANG
        while len(tasks := (await orch.list())[0]) < 2:
            assert time.monotonic() < deadline, "the cancelled submit's task was never stored"
            await asyncio.sleep(0.01)
        late = await orch.wait(tasks[0].task_id, HANG)
        assert (late.description, late.status, late.attempt) == ("mark", TaskStatus.COMPLETED, 1)
        assert markers.read_text() == "late\n"
    finally:
        blocker.close()
        await orch.stop()


async def test_queue_full(make_config: Callable[..., EngineConfig], tmp_path: Path) -> None:
    orch = Orchestrator(make_config(max_workers=1, max_queue_size=2))
    await orch.start()
    try:
        gate = tmp_path / "gate"
        await orch.submit(py("wait_for", str(gate)))
        running = time.monotonic() + HANG
        while orch.health()["running"] != 1:
            assert time.monotonic() < running
            await asyncio.sleep(0.01)
        await orch.submit(py("add", 1, 1))
        await orch.submit(py("add", 1, 1))
        with pytest.raises(QueueFull) as info:
            await orch.submit(py("add", 1, 1))
        assert info.value.retry_after >= 1
        health = orch.health()
        assert health["healthy"] and not health["accepting"] and health["queued"] == 2
        gate.write_text("go")
    finally:
        await orch.stop()


async def test_changed_module_is_picked_up(orch: Orchestrator, root: Path) -> None:
    module = root / "changing.py"
    module.write_text("def value():\n    return 1\n")
    req = TaskRequest(
        task_type="python", description="v", parameters={"callable": "changing:value"}
    )
    for _ in range(3):  # warm every worker with the old code
        task = await orch.wait((await orch.submit(req)).task_id, HANG)
        assert (await orch.result(task.task_id)).preview["value"] == 1
    module.write_text("def value():\n    return 2\n")
    stamp = time.time() + 5
    os.utime(module, (stamp, stamp))
    for _ in range(3):
        task = await orch.wait((await orch.submit(req)).task_id, HANG)
        assert (await orch.result(task.task_id)).preview["value"] == 2


async def test_delete_and_rerun(orch: Orchestrator) -> None:
    task = await orch.wait((await orch.submit(py("add", 1, 1))).task_id, HANG)
    again = await orch.rerun(task.task_id)
    assert again.task_id != task.task_id and again.parameters == task.parameters
    await orch.wait(again.task_id, HANG)
    await orch.delete(task.task_id)
    with pytest.raises(TaskNotFound):
        await orch.get(task.task_id)


async def test_a_rerun_of_parameters_no_longer_valid_is_refused_naming_them(
    orch: Orchestrator,
) -> None:
    task = await orch.wait((await orch.submit(py("add", 1, 1))).task_id, HANG)
    # As a server before parameters refused infinities could have stored it:
    with contextlib.closing(sqlite3.connect(orch.store.db_path, timeout=HANG)) as db, db:
        stored = '{"callable": "taskmods:add", "args": [Infinity, 1], "kwargs": {}}'
        db.execute("UPDATE tasks SET parameters = ? WHERE task_id = ?", (stored, task.task_id))
    with pytest.raises(InvalidParameters, match=r"^parameters: cannot be submitted again: .*inf"):
        await orch.rerun(task.task_id)


RUNNER = textwrap.dedent(
    """
    import asyncio, sys
    from jupyter_tasks.models import TaskRequest
    from jupyter_tasks.orchestrator import EngineConfig, Orchestrator

    async def main():
        db, root = sys.argv[1], sys.argv[2]
        orch = Orchestrator(EngineConfig(db_path=db, root_dir=root, max_workers=3))
        await orch.start()
        def req(func, *args, retries=0):
            return TaskRequest(task_type="python", description=func, max_retries=retries,
                parameters={"callable": "taskmods:" + func, "args": list(args)})
        ids = []
        for retries in (0, 1):
            t = await orch.submit(req("chatty_wait_for", root + "/never", retries=retries))
            ids.append(t.task_id)
        once = req("say_once_then_wait", root + "/said", root + "/never", retries=1)
        ids.append((await orch.submit(once)).task_id)
        for i in range(5):
            ids.append((await orch.submit(req("add", i, i))).task_id)
        while not all([(await orch.logs(task_id))[0] for task_id in ids[:3]]):
            await asyncio.sleep(0.01)
        print(" ".join(ids), flush=True)
        await asyncio.sleep(600)

    asyncio.run(main())
    """
)


async def test_recovery_after_the_owner_is_killed(
    make_config: Callable[..., EngineConfig], root: Path
) -> None:
    config = make_config(log_max_bytes=16)  # (the engine started after the kill)
    Path(config.db_path).parent.mkdir(parents=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER, config.db_path, str(root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), HANG)
        ids = line.split()
        assert len(ids) == 8
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # Its workers end once their guards see it gone; what they held is then to be settled.
    spools = list(Path(config.db_path).parent.glob("*-files/logs/.live-*"))
    assert spools, "the running tasks' output was not in spools"
    for spool in spools:
        pid = int(spool.name.split("-")[1])
        await until(lambda pid=pid: gone(pid), f"worker {pid} to end")

    orch = Orchestrator(config)
    await orch.start()
    try:
        no_retry, with_retry, quiet_retry, *quick = ids
        restarted = await orch.get(no_retry)
        assert restarted.status == TaskStatus.FAILED
        assert restarted.error is not None and restarted.error.type == "ServerRestart"
        (root / "never").write_text("now")
        retried = await orch.wait(with_retry, HANG)
        assert retried.status == TaskStatus.COMPLETED and retried.attempt == 2
        for task_id in quick:
            assert (await orch.wait(task_id, HANG)).status == TaskStatus.COMPLETED
        # What the killed task printed reaches its log once the new engine sweeps the spools.
        said = f"waiting for {root}/never\n".encode()
        deadline = time.monotonic() + HANG
        while (await orch.logs(no_retry))[0] != said:
            assert time.monotonic() < deadline, "the killed task's output never reached its log"
            await asyncio.sleep(0.02)
        # Both attempts, in order, within log_max_bytes; also after a retry that printed
        # nothing (the killed attempt's output came in untrimmed).
        assert (await orch.logs(with_retry))[0] == (said * 2)[-16:]
        assert (await orch.wait(quiet_retry, HANG)).status == TaskStatus.COMPLETED
        assert (await orch.logs(quiet_retry))[0] == b"x" * 7 + b" the end\n"
        assert not [spool for spool in spools if spool.exists()]
        page, _ = await orch.list(statuses=[TaskStatus.RUNNING, TaskStatus.CREATED])
        assert page == []
        check = await orch.store.run_sync(
            lambda db: db.execute("PRAGMA integrity_check").fetchone()
        )
        assert check[0] == "ok"
    finally:
        await orch.stop()


async def test_two_orchestrators_never_double_run(
    make_config: Callable[..., EngineConfig], tmp_path: Path
) -> None:
    config = make_config(max_workers=1)
    first, second = Orchestrator(config), Orchestrator(config)
    await first.start()
    await second.start()
    try:
        runs = tmp_path / "runs"
        tasks: list[Task] = []
        for i in range(10):
            owner = first if i % 2 else second
            tasks.append(await owner.submit(py("record", str(runs), f"t{i}")))
        # Each sees the other's lease as alive and leaves its tasks alone.
        await first._adopt()
        await second._adopt()
        for i, task in enumerate(tasks):
            owner = first if i % 2 else second
            assert (await owner.wait(task.task_id, HANG)).status == TaskStatus.COMPLETED
        lines = runs.read_text().split()
        assert sorted(lines) == sorted(f"t{i}" for i in range(10))
    finally:
        await second.stop()
        await first.stop()


# -- chunks: a backlog of short tasks -------------------------------------------------------


async def warm_chunks(orch: Orchestrator, log: Path, runs: int = 6) -> None:
    """Run short ``step`` tasks one by one, so that its kind is known to be short."""
    for n in range(runs):
        await orch.wait((await orch.submit(py("step", str(log), f"warm{n}"))).task_id, HANG)


async def wait_status(orch: Orchestrator, task_id: str, status: TaskStatus) -> None:
    deadline = time.monotonic() + HANG
    while (await orch.get(task_id)).status != status:
        assert time.monotonic() < deadline, f"task {task_id} never became {status.value}"
        await asyncio.sleep(0.01)


def runs_of(log: Path) -> dict[str, list[str]]:
    """Task name -> pids of the workers that ran it, from a ``step`` log."""
    out: dict[str, list[str]] = {}
    for line in log.read_text().splitlines():
        name, pid = line.split()
        out.setdefault(name, []).append(pid)
    return out


def assert_each_ran_once(log: Path, names: list[str], never: tuple[str, ...] = ()) -> None:
    """Every task in ``names`` ran exactly once (a ``step`` log), those in ``never`` not at all."""
    runs = runs_of(log)
    assert not [name for name in never if name in runs], f"ran: {never}"
    assert all(len(runs.get(name, [])) == 1 for name in names), "a task ran twice or never"


@one_worker
async def test_a_backlog_runs_in_chunks_and_each_task_once(
    orch: Orchestrator, tmp_path: Path
) -> None:
    log, gate = tmp_path / "log", tmp_path / "gate"
    await warm_chunks(orch, log)
    first = await orch.submit(py("step", str(log), "first", str(gate)))
    await wait_status(orch, first.task_id, TaskStatus.RUNNING)
    sub = orch.subscribe(max_pending=1000)
    batch = await orch.submit_batch([py("step", str(log), f"t{n}") for n in range(40)])
    # The backlog forms while the worker is held; then chunks of it start together.
    gate.write_text("go")
    done = [await orch.wait(t.task_id, HANG) for t in [first, *batch]]
    sub.close()
    running: set[str] = set()
    most = 0
    async for event in sub:
        if event["event"] == "transition":
            (running.add if event["status"] == "running" else running.discard)(event["task_id"])
            most = max(most, len(running))
    assert most > 2, "one worker, and yet the backlog was never taken in chunks"
    assert all(t.status == TaskStatus.COMPLETED and t.attempt == 1 for t in done)
    # Each records when it was handed to its worker, in the order they ran.
    starts = [t.started_at for t in done]
    assert None not in starts and starts == sorted(starts)
    runs = runs_of(log)
    assert all(len(runs[f"t{n}"]) == 1 for n in range(40)), "a task ran twice or never"
    assert [line.split()[0] for line in log.read_text().splitlines()][6:] == [
        "first",
        *(f"t{n}" for n in range(40)),
    ], "a chunk changed the order of equal-priority tasks"


async def held_chunk(
    orch: Orchestrator, tmp_path: Path, requests: list[TaskRequest], running: int
) -> list[Task]:
    """A chunk of ``step`` tasks whose head waits for ``tmp_path / "gate"``.

    The kind is warmed first, then the head and ``requests`` are submitted at once;
    returns once the first ``running`` of them are running (taken by the chunk).
    """
    log, gate = tmp_path / "log", tmp_path / "gate"
    await warm_chunks(orch, log)
    tasks = await orch.submit_batch([py("step", str(log), "head", str(gate)), *requests])
    for task in tasks[:running]:
        await wait_status(orch, task.task_id, TaskStatus.RUNNING)
    return tasks


@one_worker
async def test_cancelling_a_task_waiting_in_a_chunk_never_runs_it(
    orch: Orchestrator, tmp_path: Path
) -> None:
    """Cancelled while the task before it runs: it never runs, and that task is unharmed."""
    log = tmp_path / "log"
    requests = [py("step", str(log), name) for name in ("next", "later", "last")]
    head, nxt, later, last = await held_chunk(orch, tmp_path, requests, running=4)
    # Both wait in the chunk while the head holds the worker.
    for task in (nxt, later):
        cancelled = await orch.cancel(task.task_id)
        assert cancelled.status == TaskStatus.CANCELLED
    (tmp_path / "gate").write_text("go")
    h = await orch.wait(head.task_id, HANG)
    assert h.status == TaskStatus.COMPLETED, h.error
    assert (await orch.wait(last.task_id, HANG)).status == TaskStatus.COMPLETED
    runs = runs_of(log)
    assert "next" not in runs and "later" not in runs
    assert runs["head"] == runs["last"], "the cancel took the head's worker down"


@one_worker
async def test_a_crash_in_a_chunk_fails_only_its_task(orch: Orchestrator, tmp_path: Path) -> None:
    log = tmp_path / "log"
    requests = [py("step", str(log), "crash", crash=True)]
    requests += [py("step", str(log), f"t{n}") for n in range(6)]
    tasks = await held_chunk(orch, tmp_path, requests, running=3)
    (tmp_path / "gate").write_text("go")
    done = [await orch.wait(t.task_id, HANG) for t in tasks]
    crashed = done[1]
    assert crashed.status == TaskStatus.FAILED
    assert crashed.error is not None and crashed.error.type == "WorkerCrashed"
    assert all(t.status == TaskStatus.COMPLETED for t in [done[0], *done[2:]])
    assert_each_ran_once(log, [f"t{n}" for n in range(6)])


@one_worker
async def test_a_timeout_in_a_chunk_fails_only_its_task(orch: Orchestrator, tmp_path: Path) -> None:
    """The head hangs past its timeout: it fails, and every task after it runs once."""
    log, gate = tmp_path / "log", tmp_path / "gate"
    await warm_chunks(orch, log)
    requests = [py("step", str(log), "head", str(gate), timeout_seconds=1)]
    requests += [py("step", str(log), f"t{n}") for n in range(5)]
    tasks = await orch.submit_batch(requests)
    done = [await orch.wait(t.task_id, HANG) for t in tasks]
    assert done[0].status == TaskStatus.FAILED
    assert done[0].error is not None and done[0].error.type == "TaskTimeout"
    assert all(t.status == TaskStatus.COMPLETED for t in done[1:]), [t.error for t in done]
    assert_each_ran_once(log, [f"t{n}" for n in range(5)], never=("head",))


@one_worker
async def test_cancelling_the_running_task_of_a_chunk_spares_the_rest(
    orch: Orchestrator, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    requests = [py("step", str(log), f"t{n}") for n in range(5)]
    head, *rest = await held_chunk(orch, tmp_path, requests, running=4)
    cancelled = await orch.cancel(head.task_id)
    assert cancelled.status == TaskStatus.CANCELLED
    done = [await orch.wait(t.task_id, HANG) for t in rest]
    assert all(t.status == TaskStatus.COMPLETED for t in done), [t.error for t in done]
    assert_each_ran_once(log, [f"t{n}" for n in range(5)], never=("head",))


@one_worker
async def test_each_task_of_a_chunk_keeps_its_own_output(
    orch: Orchestrator, tmp_path: Path
) -> None:
    """Tasks of one chunk share their worker's output file in turn; each log is its own."""
    log = tmp_path / "log"
    names = ["a", "b", "quiet", "c", "d"]
    requests = [py("step", str(log), name, say=name != "quiet") for name in names]
    tasks = await held_chunk(orch, tmp_path, requests, running=6)
    (tmp_path / "gate").write_text("go")
    for name, task in zip(names, tasks[1:], strict=True):
        assert (await orch.wait(task.task_id, HANG)).status == TaskStatus.COMPLETED
        text = (await orch.logs(task.task_id))[0].decode()
        assert text == ("" if name == "quiet" else f"this is {name}\n"), (name, text)
    assert len(set(runs_of(log)[name][0] for name in names)) == 1, "not one chunk"


@pytest.mark.parametrize("orch", [{"max_workers": 1, "log_max_bytes": 8}], indirect=True, ids=["1"])
async def test_logs_keep_their_tail_in_a_chunk_and_alone(
    orch: Orchestrator, tmp_path: Path
) -> None:
    """Each task that printed keeps the last ``log_max_bytes`` of its output; quiet ones
    between them have none, run in a chunk or alone."""
    log = tmp_path / "log"
    names = ["loud1", "quiet", "loud2"]
    requests = [py("step", str(log), name, say=name != "quiet") for name in names]
    tasks = await held_chunk(orch, tmp_path, requests, running=4)
    (tmp_path / "gate").write_text("go")
    alone = await orch.submit(py("step", str(log), "alone", say=True))
    ran = [*zip(["head", *names], tasks, strict=True), ("alone", alone)]
    for _, task in ran:
        assert (await orch.wait(task.task_id, HANG)).status == TaskStatus.COMPLETED
    assert len(set(runs_of(log)[name][0] for name in ["head", *names])) == 1, "not one chunk"
    for name, task in ran:
        text = (await orch.logs(task.task_id))[0].decode()
        said = "" if name in ("head", "quiet") else f"this is {name}\n"[-8:]
        assert text == said, (name, text)


@one_worker
async def test_a_module_changed_during_a_chunk_is_picked_up(
    orch: Orchestrator, tmp_path: Path, root: Path
) -> None:
    """The rest of a chunk runs on a worker with the new code, each task once."""
    log = tmp_path / "log"
    requests = [py("step", str(log), f"t{n}") for n in range(4)]
    head, *rest = await held_chunk(orch, tmp_path, requests, running=5)
    module = root / "taskmods.py"
    module.write_text(module.read_text() + "\n# changed\n")
    stamp = time.time() + 5  # a different mtime even on coarse clocks
    os.utime(module, (stamp, stamp))
    (tmp_path / "gate").write_text("go")
    done = [await orch.wait(t.task_id, HANG) for t in (head, *rest)]
    assert all(t.status == TaskStatus.COMPLETED for t in done), [t.error for t in done]
    assert_each_ran_once(log, [f"t{n}" for n in range(4)])
    runs = runs_of(log)
    assert runs["t0"] != runs["head"], "the rest ran on the worker with the old code"


@pytest.mark.parametrize(
    "orch", [{"max_workers": 1, "worker_memory_limit": 400 << 20}], indirect=True, ids=["1"]
)
async def test_a_memory_hog_in_a_chunk_fails_only_its_task(
    orch: Orchestrator, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    requests = [py("step", str(log), "hog", hogs=True)]
    requests += [py("step", str(log), f"t{n}") for n in range(4)]
    tasks = await held_chunk(orch, tmp_path, requests, running=3)
    (tmp_path / "gate").write_text("go")
    done = [await orch.wait(t.task_id, HANG) for t in tasks]
    assert done[1].status == TaskStatus.FAILED
    assert done[1].error is not None and done[1].error.type == "MemoryLimitExceeded"
    assert all(t.status == TaskStatus.COMPLETED for t in [done[0], *done[2:]]), [
        t.error for t in done
    ]
    assert_each_ran_once(log, [f"t{n}" for n in range(4)], never=("hog",))


async def test_tasks_waiting_in_a_chunk_are_queued_again_at_stop(
    make_config: Callable[..., EngineConfig], tmp_path: Path
) -> None:
    config = make_config(max_workers=1)
    log = tmp_path / "log"
    orch = Orchestrator(config)
    await orch.start()
    try:
        requests = [py("step", str(log), name) for name in ("a", "b", "c")]
        tasks = await held_chunk(orch, tmp_path, requests, running=4)
    finally:
        await orch.stop()
    with sqlite3.connect(config.db_path) as db:
        statuses = dict(db.execute("SELECT task_id, status FROM tasks").fetchall())
    assert [statuses[t.task_id] for t in tasks] == ["failed", "created", "created", "created"]
    again = Orchestrator(config)
    await again.start()
    try:
        head = await again.get(tasks[0].task_id)
        assert head.status == TaskStatus.FAILED and head.error is not None
        assert head.error.type == "ServerRestart"
        done = [await again.wait(t.task_id, HANG) for t in tasks[1:]]
        assert all(t.status == TaskStatus.COMPLETED and t.attempt == 1 for t in done)
        assert sorted(runs_of(log)) == sorted([f"warm{n}" for n in range(6)] + ["a", "b", "c"])
    finally:
        await again.stop()
