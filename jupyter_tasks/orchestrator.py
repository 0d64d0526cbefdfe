"""The task orchestrator: queue, lifecycle, timeouts, cancel, retries, leases, events.

It owns a ``Store`` and an ``Executor`` and knows no HTTP: ``handlers.py`` and
the kernel's embedded mode both drive it through the coroutines below.  Every
status change goes through the store's compare-and-set, then one event.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import heapq
import itertools
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import ValidationError

from .blobs import BlobWriter, remove_files
from .errors import (
    InvalidParameters,
    InvalidTransition,
    NoResult,
    QueueFull,
    StoreUnavailable,
    TaskNotFound,
    UnknownTaskType,
)
from .events import EventHub, Subscription
from .executors.base import Executor, Outcome, RunSpec, TaskKilled
from .models import (
    FINISHED,
    TASK_TIMEOUT,
    Task,
    TaskError,
    TaskRequest,
    TaskStatus,
    new_task_id,
)
from .store import Owner, Store, StoredResult
from .tasktypes import TaskTypeRegistry, load_default_registry
from .tasktypes.base import SubmitContext
from .worker import spool_tag

log = logging.getLogger("jupyter_tasks")
T = TypeVar("T")

#: Most tasks one executor slot takes at once from a backlog (see ``_take_chunk``).
CHUNK_MAX = 256
#: A chunk takes no more tasks than its kind's recent attempts would run in this long: it
#: bounds how long a task of higher priority waits for the slot, and how long a chunk's
#: last task shows ``running`` before it begins.
CHUNK_SECONDS = 0.1
#: A task kind's chunks grow while its attempts end within this; one slower resets them.
SHORT_RUN_SECONDS = 0.01
#: The weight of each new attempt in a kind's running mean of run time.
RUN_TIME_WEIGHT = 0.125

__all__ = ["BlobWriter", "EngineConfig", "Orchestrator", "ResultInfo", "Subscription"]


@dataclass
class EngineConfig:
    """The engine's settings; ``TasksApp`` traits map onto these one to one."""

    db_path: str
    root_dir: str = field(default_factory=os.getcwd)
    max_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    max_queue_size: int = 10_000
    sqlite_synchronous: str = "NORMAL"
    default_timeout_seconds: int | None = None
    result_max_bytes: int = 1 << 30
    log_max_bytes: int = 10 << 20
    retention_seconds: int = 7 * 24 * 3600
    worker_memory_limit: int = 0
    max_tasks_per_worker: int = 0  # 0 = no limit
    kill_grace_seconds: float = 2.0
    allowed_task_types: list[str] | None = None  # None = all registered
    lease_seconds: float = 30.0
    retry_backoff_seconds: float = 1.0
    progress_flush_seconds: float = 1.0


@dataclass(frozen=True)
class ResultInfo:
    """A stored result: JSON preview plus where the pickle is (bytes or a file path)."""

    preview: dict[str, Any]
    size: int
    inline: bytes | None
    path: str | None


@dataclass(slots=True)  # (many are alive at once in a burst: no __dict__ each)
class _Run:
    """A task this orchestrator is running (or about to)."""

    task_id: str
    done: asyncio.Future[None]
    kill_reason: str | None = None  # "cancel" | "timeout" | "stop"
    #: The record last published, which progress events build on; its JSON form once a
    #: subscriber wanted it; the latest progress, kept here until the next flush.
    shown: Task | None = None
    shown_json: dict[str, Any] | None = None
    progress: float | None = None
    message: str | None = None
    progress_dirty: bool = False
    holds_slot: bool = True  # until its executor run returns
    #: In a chunk (see ``_take_chunk``): its running record, and whether it still waits
    #: for its turn (it was never handed to the executor).
    task: Task | None = None
    waiting: bool = False
    in_chunk: bool = False
    in_request: bool = False  # handed to the executor with its chunk, in one request
    began_at: float | None = None  # in a chunk: when it began, as far as the server knows
    early_progress: tuple[float | None, str | None] | None = None  # before shown (held)


def _process_started(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return None


class Orchestrator:
    """Owns the store and the executor; every public method is a coroutine safe on the loop."""

    def __init__(
        self,
        config: EngineConfig,
        executor: Executor | None = None,
        registry: TaskTypeRegistry | None = None,
    ) -> None:
        self.config = config
        self.store = Store(config.db_path, config.sqlite_synchronous)
        self.registry = registry or load_default_registry(config.allowed_task_types)
        self.executor = executor or self._local_executor(config)
        self.owner = Owner(
            owner_id=new_task_id(),
            host=socket.gethostname(),
            pid=os.getpid(),
            started=_process_started(os.getpid()) or time.time(),
            heartbeat=time.time(),
        )
        self.events = EventHub()
        self._heap: list[tuple[int, int, str]] = []
        self._queued: dict[str, int] = {}  # task id -> priority, for created tasks we own
        # The created records of queued tasks this process submitted: starting one then
        # needs no read-back (adopted and retried tasks are read back).
        self._records: dict[str, Task] = {}
        self._root_dir = os.path.abspath(config.root_dir)
        self._counter = itertools.count()
        self._running: dict[str, _Run] = {}
        self._slots_used = 0  # runs holding one of the ``max_workers`` executor slots
        #: Task kind -> how many tasks a chunk of it may take, and the mean seconds of its
        #: short runs (a kind is forgotten at its first slow run).
        self._short_kinds: dict[str, tuple[int, float]] = {}
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._runs: set[asyncio.Task[None]] = set()
        self._waiters: dict[str, list[asyncio.Future[Task]]] = {}  # task id -> its waits
        self._started = False
        self._stopping = False

    @staticmethod
    def _local_executor(config: EngineConfig) -> Executor:
        from .executors.local import LocalExecutor

        return LocalExecutor(
            max_workers=config.max_workers,
            kill_grace_seconds=config.kill_grace_seconds,
            worker_memory_limit=config.worker_memory_limit,
            max_tasks_per_worker=config.max_tasks_per_worker,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, recover what earlier owners left, start workers and loops."""
        await self.store.open()
        await self.store.register_owner(self.owner)
        await self._adopt(initial=True)
        await self.executor.start()
        self._started = True
        for coro in (self._dispatch_loop(), self._lease_loop(), self._housekeeping_loop()):
            self._loops.append(asyncio.create_task(coro))
        self._wake.set()

    async def stop(self) -> None:
        """Stop loops and workers; running tasks are settled as a restart would settle them."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        for loop_task in self._loops:
            loop_task.cancel()
        for run in self._running.values():
            run.kill_reason = "stop"
        await self.executor.stop()
        if self._runs:
            await asyncio.wait(self._runs, timeout=self.config.kill_grace_seconds + 30)
        await asyncio.gather(*self._loops, return_exceptions=True)
        try:
            await self._flush_progress()
            now = time.time()
            for task in await self.store.adopt(self.owner.owner_id, [self.owner.owner_id], now):
                self._publish(task)
        except StoreUnavailable as exc:  # a full disk: the next start settles these tasks
            log.warning("jupyter-tasks: could not settle running tasks at stop: %s", exc)
        finally:
            self.events.close()
            for task_id in list(self._waiters):
                gone = StoreUnavailable(f"the engine stopped before task {task_id} finished")
                self._tell_waiters(task_id, gone)
            await self.store.close()

    # -- submit ------------------------------------------------------------------------------

    def _validate(self, request: TaskRequest) -> None:
        task_type = self.registry.get(request.task_type)
        task_type.validate(
            request.parameters, SubmitContext(self.config.root_dir, self.store.blob_dir)
        )

    def _validate_all(self, requests: builtins.list[TaskRequest], batch: bool) -> None:
        """Validate each request; in a batch the error names the failing item's index."""
        for index, request in enumerate(requests):
            try:
                self._validate(request)
            except InvalidParameters as exc:
                exc.index = index if batch else None
                raise
            except UnknownTaskType as exc:
                if not batch:
                    raise
                raise InvalidParameters(str(exc), field="task_type", index=index) from None

    async def _validated(self, requests: builtins.list[TaskRequest], batch: bool) -> None:
        """Validate off the loop when a task type reads files (a notebook may be large)."""
        if any(self.registry.reads_files(r.task_type) for r in requests):
            await asyncio.to_thread(self._validate_all, requests, batch)
        else:
            self._validate_all(requests, batch)

    def _check_room(self, count: int) -> None:
        if len(self._queued) + count > self.config.max_queue_size:
            raise QueueFull(
                f"the queue is full ({len(self._queued)} of {self.config.max_queue_size} tasks"
                " waiting); retry later",
                retry_after=max(1, min(60, len(self._queued) // 1000)),
            )

    async def submit(self, request: TaskRequest) -> Task:
        """Validate, persist (durable on return) and queue one task.

        When a worker slot is free and nothing waits, the task starts in the same
        transaction that stores it: the idle engine's round trip pays for one commit.
        """
        await self._validated([request], batch=False)
        self._check_room(1)
        run = self._claim_idle_slot()
        task_id = new_task_id()

        def undo() -> None:
            if run is not None:
                self.executor.drop_hold(task_id)
                self._release_slot(run)

        def accept(tasks: builtins.list[Task]) -> None:
            task = tasks[0]
            self._publish(task)
            if run is None:
                self._records[task.task_id] = task
                self._enqueue(task.task_id, task.priority)
            elif self._stopping:  # stored as stop began: settled as a restart settles it
                undo()
            else:
                run.task_id = task.task_id
                self._running[task.task_id] = run
                self._spawn(self._run(run, tasks[1]))

        try:
            # Started at once, its run is handed to a worker now and begins as soon as the
            # store has committed it, before this coroutine even resumes.
            go = None if run is None else self._hold(run, task_id, request)
            insert = self.store.insert(
                [(task_id, request)], self.owner.owner_id, None, time.time(), run is not None, go
            )
        except BaseException:
            undo()
            raise
        return (await self._stored(insert, accept, undo))[0]

    async def _stored(
        self,
        written: asyncio.Future[builtins.list[Task]],
        accept: Callable[[builtins.list[Task]], None],
        undo: Callable[[], None] = lambda: None,
    ) -> builtins.list[Task]:
        """Await an insert; ``accept`` the stored records, ``undo`` the preparations if it
        failed.  A caller cancelled meanwhile does not cancel the write: once it lands its
        tasks are accepted all the same (they are stored, so they must run)."""
        try:
            tasks = await asyncio.shield(written)
        except asyncio.CancelledError:
            written.add_done_callback(lambda done: _settle_late(done, accept, undo))
            raise
        except BaseException:
            undo()
            raise
        accept(tasks)
        return tasks

    def _hold(self, run: _Run, task_id: str, request: TaskRequest) -> Callable[[], None] | None:
        spec = self._spec(request, task_id, attempt=1)
        return self.executor.hold(spec, lambda p, m: self._on_progress(run, p, m))

    def _claim_idle_slot(self) -> _Run | None:
        """A slot for a task that may start at once: none queued, so priority order holds."""
        if self._heap or not self._started or self._stopping:
            return None
        if self._slots_used >= self.config.max_workers:
            return None
        self._slots_used += 1
        return _Run("", asyncio.get_running_loop().create_future())

    async def submit_batch(self, requests: list[TaskRequest]) -> list[Task]:
        """All or nothing, in one transaction, under one group id; errors name the index."""
        await self._validated(requests, batch=True)
        self._check_room(len(requests))
        group = new_task_id()
        pairs = [(new_task_id(), r) for r in requests]

        def accept(tasks: builtins.list[Task]) -> None:
            for task in tasks:
                self._records[task.task_id] = task
                self._enqueue(task.task_id, task.priority)
                self._publish(task)

        insert = self.store.insert(pairs, self.owner.owner_id, group, time.time())
        return await self._stored(insert, accept)

    async def rerun(self, task_id: str) -> Task:
        """Submit a new task with the same request as ``task_id``."""
        old = await self.get(task_id)
        try:
            request = TaskRequest(**old.model_dump(include=set(TaskRequest.model_fields)))
        except ValidationError as exc:  # (stored before a rule it breaks was made)
            context = "cannot be submitted again: "
            raise InvalidParameters.from_validation(exc, context=context) from None
        return await self.submit(request)

    # -- queue and dispatch ------------------------------------------------------------------

    def _enqueue(self, task_id: str, priority: int) -> None:
        self._queued[task_id] = priority
        heapq.heappush(self._heap, (-priority, next(self._counter), task_id))
        self._wake.set()

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._heap and self._slots_used < self.config.max_workers:
                _, _, task_id = heapq.heappop(self._heap)
                record = self._records.pop(task_id, None)
                if self._queued.pop(task_id, None) is None:
                    continue  # cancelled or taken while it waited
                loop = asyncio.get_running_loop()
                run = _Run(task_id, loop.create_future())
                self._running[task_id] = run
                self._slots_used += 1
                chunk = [] if record is None else self._take_chunk(record)
                if record is not None and chunk:
                    self._spawn(self._run_chunk([(run, record), *chunk]))
                else:
                    self._spawn(self._run(run, None, record))

    def _take_chunk(self, first: Task) -> list[tuple[_Run, Task]]:
        """More queued tasks of ``first``'s kind to run after it on the same slot.

        A backlog of short tasks is run in chunks: they start in one transaction and
        end in batches, so each costs a share of two commits instead of two.  A kind
        whose attempts ran short gets chunks twice as big each time, up to
        ``CHUNK_MAX`` and ``CHUNK_SECONDS`` of its mean run time; one slow attempt takes
        it back to one task at a time.  A chunk takes at most its slot's share of the
        backlog, the heap's next tasks in priority order, and only those of the same
        kind that this process submitted.
        """
        kind = _kind(first)
        most, mean = self._short_kinds.get(kind, (1, SHORT_RUN_SECONDS))
        size = min(
            most,
            max(1, int(CHUNK_SECONDS / max(mean, 1e-6))),
            1 + len(self._heap) // self.config.max_workers,
        )
        taken: list[tuple[_Run, Task]] = []
        loop = asyncio.get_running_loop()
        while len(taken) + 1 < size and self._heap:
            task_id = self._heap[0][2]
            if task_id not in self._queued:  # cancelled while it waited
                heapq.heappop(self._heap)
                self._records.pop(task_id, None)
                continue
            record = self._records.get(task_id)
            if record is None or _kind(record) != kind:
                break
            heapq.heappop(self._heap)
            del self._queued[task_id], self._records[task_id]
            run = _Run(task_id, loop.create_future(), holds_slot=False, waiting=True)
            self._running[task_id] = run
            taken.append((run, record))
        return taken

    def _note_duration(self, task: Task, seconds: float) -> None:
        kind = _kind(task)
        if seconds < SHORT_RUN_SECONDS:
            most, mean = self._short_kinds.get(kind, (1, seconds))
            mean += (seconds - mean) * RUN_TIME_WEIGHT
            self._short_kinds[kind] = (min(CHUNK_MAX, 2 * most), mean)
        else:
            self._short_kinds.pop(kind, None)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)

    async def _run(self, run: _Run, started: Task | None, created: Task | None = None) -> None:
        """One attempt; ``started`` is the running record when the submit already started it.

        ``created`` is the task's record when this process knows it (see ``_records``).
        """
        try:
            task = started or await self._start(run, created)
            if task is None:
                await self._publish_current(run.task_id)
            await self._run_attempt(run, task)
        except Exception:
            log.exception("jupyter-tasks: running task %s failed unexpectedly", run.task_id)
        finally:
            self.executor.drop_hold(run.task_id)  # a no-op once the executor ran it
            self._release_slot(run)
            self._finish_run(run)
            self._wake_dispatch()

    async def _start(self, run: _Run, created: Task | None) -> Task | None:
        """``created -> running``; None when it was cancelled or taken in the meantime."""
        return await self.store.transition(
            run.task_id,
            TaskStatus.CREATED,
            TaskStatus.RUNNING,
            {"started_at": time.time(), "finished_at": None, "owner": self.owner.owner_id},
            bump_attempt=True,
            current=created,
        )

    async def _run_attempt(self, run: _Run, task: Task | None) -> None:
        if task is None:
            return
        self._publish(task)  # also keeps run.shown, which progress events build on
        if run.early_progress is not None:  # a held run reported before that
            self._on_progress(run, *run.early_progress)
        if run.kill_reason is not None:
            # A held run may have begun at its commit: its worker is gone before the end
            # is recorded (a no-op for a run the executor never had).
            await self.executor.kill(task.task_id)
            await self._settle(run, task, None)
            return
        outcome = await self._execute(run, task)
        # The worker is free again: let the next task start while this one is recorded, so
        # both transitions can share one commit.
        self._release_slot(run)
        await self._record_end(run, task, outcome)

    async def _execute(self, run: _Run, task: Task) -> Outcome | None:
        """Run the attempt in the executor under its timeout; None when it was killed."""
        spec = self._spec(task, task.task_id, task.attempt)
        timeout = task.timeout_seconds or self.config.default_timeout_seconds
        loop = asyncio.get_running_loop()
        timer = loop.call_later(timeout, self._kill_soon, run, "timeout") if timeout else None
        began = loop.time()
        outcome: Outcome | None
        try:
            outcome = await self.executor.run(spec, lambda p, m: self._on_progress(run, p, m))
        except TaskKilled:
            outcome = None
        except Exception as exc:  # an executor fault fails the task, never the server
            log.exception("jupyter-tasks: executor failed on task %s", task.task_id)
            outcome = Outcome(ok=False, error=TaskError(type=type(exc).__name__, message=str(exc)))
        finally:
            if timer is not None:
                timer.cancel()
        self._note_duration(task, loop.time() - began)
        return outcome

    async def _record_end(self, run: _Run, task: Task, outcome: Outcome | None) -> None:
        """``_settle``, retried while the disk is full or read-only."""
        await self._until_recorded(run.task_id, lambda: self._settle(run, task, outcome))

    async def _until_recorded(self, what: str, write: Callable[[], Awaitable[T]]) -> T:
        delay = 0.5
        while True:
            try:
                return await write()
            except StoreUnavailable as exc:  # a full or read-only disk: record the end later
                log.warning("jupyter-tasks: task %s ended, not recorded yet: %s", what, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- chunks ------------------------------------------------------------------------------

    async def _run_chunk(self, chunk: builtins.list[tuple[_Run, Task]]) -> None:
        """Run a chunk's tasks one after another on the slot its first one holds.

        They start in one transaction, go to one worker in one request where the
        executor can (``Executor.run_chunk``), and completions are recorded in batches
        while the next tasks run.  Those the request did not run go one by one.  A
        task still waiting for its turn never ran: ``cancel()`` ends it at once, and a
        stopping engine puts it back in the queue.
        """
        runs = [run for run, _ in chunk]
        for run in runs:
            run.waiting = run.in_chunk = True
        completed: builtins.list[tuple[_Run, Task, Outcome]] = []
        recorder: asyncio.Task[None] | None = None
        requeue: builtins.list[tuple[_Run, Task]] = []
        ends: builtins.list[asyncio.Task[None]] = []

        def ended(run: _Run, task: Task, outcome: Outcome | None) -> None:
            nonlocal recorder
            if outcome is not None and outcome.ok and run.kill_reason in (None, "cancel"):
                completed.append((run, task, outcome))
                if recorder is None or recorder.done():
                    recorder = asyncio.create_task(self._record_completions(completed))
            else:
                ends.append(asyncio.create_task(self._end_unrun(run, task, outcome)))

        try:
            await self._start_chunk(chunk)
            await self._run_in_one_request(runs, ended)
            for run in runs:
                task = run.task
                if task is None or not run.waiting:
                    continue  # it did not start, or cancel() ended it
                run.waiting = False
                if run.kill_reason == "stop":
                    requeue.append((run, task))
                    continue
                if run.kill_reason is not None:  # cancelled before its turn
                    await self._end_unrun(run, task)
                    continue
                run.began_at = time.time()
                ended(run, task, await self._execute(run, task))
            await asyncio.gather(*ends)
            self._release_slot(runs[0])
            if requeue:
                await self._requeue(requeue)
        except Exception:
            log.exception("jupyter-tasks: running a chunk of %d tasks failed", len(chunk))
        finally:
            self._release_slot(runs[0])
            await asyncio.gather(*ends, return_exceptions=True)
            if recorder is not None:
                await asyncio.gather(recorder, return_exceptions=True)
            for run in runs:
                self._finish_run(run)
            self._wake_dispatch()

    async def _start_chunk(self, chunk: builtins.list[tuple[_Run, Task]]) -> None:
        """``created -> running`` for every task of a chunk, in one transaction."""
        fields = {"started_at": time.time(), "finished_at": None, "owner": self.owner.owner_id}
        started = await self.store.transition_many(
            [(task, fields, None) for _, task in chunk],
            TaskStatus.CREATED,
            TaskStatus.RUNNING,
            bump_attempt=True,
        )
        for (run, _), task in zip(chunk, started, strict=True):
            run.task = task
            if task is not None:
                self._publish(task)
            if task is not None and run.kill_reason == "cancel":  # cancel() came meanwhile
                run.waiting = False
                self._spawn(self._end_unrun(run, task))
        for (run, _), task in zip(chunk, started, strict=True):
            if task is None:
                await self._publish_current(run.task_id)
                self._finish_run(run)

    async def _end_unrun(self, run: _Run, task: Task, outcome: Outcome | None = None) -> None:
        """Settle a chunk's task that did not complete, or was cancelled before its turn."""
        try:
            await self._record_end(run, task, outcome)
        finally:
            self._finish_run(run)

    async def _run_in_one_request(
        self,
        runs: builtins.list[_Run],
        ended: Callable[[_Run, Task, Outcome | None], None],
    ) -> None:
        """Hand a chunk's waiting tasks to the executor in one request (``run_chunk``).

        Each runs under its own timeout from when it begins; ``ended`` gets each one's
        outcome.  Those that never began wait for their turn again, to run one by one.
        """
        handed = [r for r in runs if r.task is not None and r.waiting and r.kill_reason is None]
        if len(handed) < 2:
            return
        by_id = {run.task_id: run for run in handed}
        loop = asyncio.get_running_loop()
        timers: dict[str, asyncio.TimerHandle] = {}
        began: dict[str, float] = {}

        def on_begin(task_id: str) -> None:
            run = by_id[task_id]
            assert run.task is not None
            run.began_at, began[task_id] = time.time(), loop.time()
            timeout = run.task.timeout_seconds or self.config.default_timeout_seconds
            if timeout:
                timers[task_id] = loop.call_later(timeout, self._kill_soon, run, "timeout")

        def on_end(task_id: str, outcome: Outcome | None) -> None:
            run = by_id[task_id]
            assert run.task is not None
            timer = timers.pop(task_id, None)
            if timer is not None:
                timer.cancel()
            if task_id in began:  # (else a cancel stopped it before it began)
                self._note_duration(run.task, loop.time() - began[task_id])
            ended(run, run.task, outcome)

        for run in handed:
            run.waiting = False  # from now on a cancel goes through the executor
            run.in_request = True
        try:
            not_begun = await self.executor.run_chunk(
                [
                    self._spec(run.task, run.task_id, run.task.attempt)
                    for run in handed
                    if run.task is not None
                ],
                lambda task_id, p, m: self._on_progress(by_id[task_id], p, m),
                on_begin,
                on_end,
            )
        finally:
            for timer in timers.values():
                timer.cancel()
        for task_id in by_id if not_begun is None else not_begun:
            by_id[task_id].waiting, by_id[task_id].in_request = True, False

    async def _record_completions(
        self, completed: builtins.list[tuple[_Run, Task, Outcome]]
    ) -> None:
        """Record what ``completed`` holds, and what arrives meanwhile, a batch per commit."""
        while completed:
            batch = completed[:]
            del completed[:]
            now = time.time()
            changes = [
                (
                    self._overlay(task),
                    {"finished_at": now, "progress": 1.0, **_began(run)},
                    _stored(outcome),
                )
                for run, task, outcome in batch
            ]
            quiet = {task.task_id for _, task, outcome in batch if _left_log_alone(task, outcome)}
            try:
                finals = await self._until_recorded(
                    batch[0][1].task_id,
                    lambda changes=changes, quiet=quiet: self.store.transition_many(  # type: ignore[misc]
                        changes,
                        TaskStatus.RUNNING,
                        TaskStatus.COMPLETED,
                        log_cap=self.config.log_max_bytes,
                        quiet=quiet,
                    ),
                )
            except Exception:  # they stay running: the next start settles them
                log.exception("jupyter-tasks: could not record %d completed tasks", len(batch))
                finals = [None] * len(batch)
            for (run, _, _), final in zip(batch, finals, strict=True):
                if final is not None:
                    self._publish(final)
                self._finish_run(run)

    async def _requeue(self, items: builtins.list[tuple[_Run, Task]]) -> None:
        """Chunk tasks that never ran go back to ``created`` (a stopping engine's)."""
        changes = [
            (task, {"started_at": None, "attempt": task.attempt - 1}, None) for _, task in items
        ]
        for task in await self.store.transition_many(
            changes, TaskStatus.RUNNING, TaskStatus.CREATED
        ):
            if task is not None:
                self._publish(task)

    async def _publish_current(self, task_id: str) -> None:
        """A start found the task cancelled or taken meanwhile: tell whoever waits how it is."""
        current = await self.store.get(task_id)
        if current is not None:
            self._publish(current)

    def _finish_run(self, run: _Run) -> None:
        if self._running.get(run.task_id) is run:
            del self._running[run.task_id]
        if not run.done.done():
            run.done.set_result(None)

    def _release_slot(self, run: _Run) -> None:
        if run.holds_slot:
            run.holds_slot = False
            self._slots_used -= 1
            self._wake_dispatch()

    def _wake_dispatch(self) -> None:
        """A slot came free: wake the dispatcher if a task waits (``_enqueue`` wakes it else)."""
        if self._heap:
            self._wake.set()

    def _spec(self, task: TaskRequest, task_id: str, attempt: int) -> RunSpec:
        task_type = self.registry.get(task.task_type)
        return RunSpec(
            task_id=task_id,
            attempt=attempt,
            task_type=task.task_type,
            type_path=task_type.type_path(),
            parameters=task.parameters,
            interpreter=task_type.interpreter(task.parameters),
            root_dir=self._root_dir,
            log_path=self.store.log_path(task_id),
            result_path=self.store.result_path(task_id),
            blob_dir=self.store.blob_dir,
            result_max_bytes=self.config.result_max_bytes,
            priority=task.priority,
        )

    def _kill_soon(self, run: _Run, reason: str) -> None:
        if run.kill_reason is None:
            run.kill_reason = reason
            self._spawn(self.executor.kill(run.task_id))

    async def _settle(self, run: _Run, task: Task, outcome: Outcome | None) -> None:
        """Record how an attempt ended: completed, failed, retried or cancelled."""
        await self._flush_progress()
        now = time.time()
        reason = run.kill_reason
        if reason == "stop":
            return  # stop() settles these as a restart would
        if reason == "cancel" and not (outcome is not None and outcome.ok):
            final = await self.store.transition(
                task.task_id,
                TaskStatus.RUNNING,
                TaskStatus.CANCELLED,
                {"finished_at": now, "message": "cancelled", **_began(run)},
                log_cap=self.config.log_max_bytes,
            )
        elif outcome is not None and outcome.ok:
            final = await self._complete(self._overlay(task), outcome, now, _began(run))
        else:
            error = self._error_of(task, outcome, reason)
            final = await self._fail(task, error, now, _began(run))
        if final is not None:
            self._publish(final)

    def _error_of(self, task: Task, outcome: Outcome | None, reason: str | None) -> TaskError:
        if reason == "timeout":
            limit = task.timeout_seconds or self.config.default_timeout_seconds
            return TaskError(type=TASK_TIMEOUT, message=f"the task ran longer than {limit} s")
        if outcome is not None and outcome.error is not None:
            return outcome.error
        return TaskError(type="TaskKilled", message="the task was stopped")

    async def _complete(
        self, task: Task, outcome: Outcome, now: float, began: dict[str, Any]
    ) -> Task | None:
        result = _stored(outcome)
        return await self.store.transition(
            task.task_id,
            TaskStatus.RUNNING,
            TaskStatus.COMPLETED,
            {"finished_at": now, "progress": 1.0, **began},
            result=result,
            log_cap=None if _left_log_alone(task, outcome) else self.config.log_max_bytes,
            current=task,
        )

    async def _fail(
        self, task: Task, error: TaskError, now: float, began: dict[str, Any]
    ) -> Task | None:
        if task.attempt <= task.max_retries:
            delay = min(300.0, self.config.retry_backoff_seconds * 2 ** (task.attempt - 1))
            retried = await self.store.transition(
                task.task_id,
                TaskStatus.RUNNING,
                TaskStatus.CREATED,
                {
                    "error": error.model_dump(),
                    "message": f"retrying after {error.type} (attempt {task.attempt + 1}"
                    f" of {task.max_retries + 1})",
                    "not_before": now + delay,
                },
                log_cap=self.config.log_max_bytes,
            )
            if retried is not None:
                asyncio.get_running_loop().call_later(
                    delay, self._enqueue, task.task_id, task.priority
                )
            return retried
        return await self.store.transition(
            task.task_id,
            TaskStatus.RUNNING,
            TaskStatus.FAILED,
            {"finished_at": now, "error": error.model_dump(), **began},
            log_cap=self.config.log_max_bytes,
        )

    # -- progress ------------------------------------------------------------------------

    def _on_progress(self, run: _Run, progress: float | None, message: str | None) -> None:
        shown = run.shown
        if shown is None:
            run.early_progress = (progress, message)  # published with its running record
            return
        if shown.status != TaskStatus.RUNNING:
            return
        run.progress, run.message = progress, message
        run.progress_dirty = True
        if self.events.wants(TaskStatus.RUNNING.value, run.task_id, shown.group):
            if run.shown_json is None:
                run.shown_json = shown.to_json()
            event = {**run.shown_json, "progress": progress, "message": message}
            self.events.publish("progress", event)

    async def _flush_progress(self) -> None:
        updates = []
        for run in self._running.values():
            if run.progress_dirty and run.shown is not None:
                run.progress_dirty = False
                updates.append((run.task_id, run.progress, run.message))
        await self.store.save_progress(updates)

    def _overlay(self, task: Task) -> Task:
        """A running task's latest progress lives in memory until the next flush."""
        run = self._running.get(task.task_id)
        if run is None or run.shown is None or task.status != TaskStatus.RUNNING:
            return task
        progress, message = run.progress, run.message
        if progress == task.progress and message == task.message:
            return task
        return task.evolve(progress=progress, message=message)

    # -- reads -------------------------------------------------------------------------------

    async def get(self, task_id: str) -> Task:
        task = await self.store.get(task_id)
        if task is None:
            raise TaskNotFound(task_id)
        return self._overlay(task)

    async def list(
        self,
        statuses: list[TaskStatus] | None = None,
        task_type: str | None = None,
        group: str | None = None,
        tag: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[Task], str | None]:
        """A page of tasks, newest first, and the cursor of the next page (or None)."""
        tasks, nxt = await self.store.page(statuses, task_type, group, tag, limit, cursor)
        return [self._overlay(t) for t in tasks], nxt

    async def snapshot(
        self,
        task_ids: builtins.list[str] | None = None,
        group: str | None = None,
        statuses: Iterable[str] | None = None,
    ) -> builtins.list[Task]:
        """Unfinished tasks (filtered like a subscription) for an event stream's first message."""
        tasks = [self._overlay(t) for t in await self.store.unfinished(task_ids, group)]
        if statuses is None:
            return tasks
        wanted = set(statuses)
        return [t for t in tasks if t.status.value in wanted]

    def subscribe(
        self,
        task_ids: builtins.list[str] | None = None,
        group: str | None = None,
        max_pending: int = 10_000,
        statuses: Iterable[str] | None = None,
    ) -> Subscription:
        """Live events; subscribe before taking a snapshot so nothing falls in between.

        ``statuses`` keeps only the events whose status is one of them (a task status, or
        "deleted"): a client that waits for ends is not woken by every start and progress.
        """
        return self.events.subscribe(task_ids, group, max_pending, statuses)

    async def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """Wait until the task is finished; ``TimeoutError`` after ``timeout`` seconds.

        A task this engine runs hands its final record to its waiters as it is published
        (no subscription, no JSON form to parse back); one it does not run is read.
        """
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[Task] = loop.create_future()
        self._waiters.setdefault(task_id, []).append(ended)
        timer = None
        if timeout is not None:
            late = TimeoutError(f"task {task_id} did not finish within {timeout} s")
            timer = loop.call_later(timeout, _settle_waiter, ended, late)
        try:
            if task_id not in self._running:
                task = await self.get(task_id)
                if task.status.finished:
                    return task
            return await ended
        finally:
            if timer is not None:
                timer.cancel()
            waiters = self._waiters.get(task_id, [])
            if ended in waiters:
                waiters.remove(ended)
            if not waiters:
                self._waiters.pop(task_id, None)

    def _tell_waiters(self, task_id: str, outcome: Task | BaseException) -> None:
        """Settle every ``wait`` for ``task_id``: its final record, or an error."""
        for ended in self._waiters.pop(task_id, ()):
            _settle_waiter(ended, outcome)

    async def result(self, task_id: str) -> ResultInfo:
        """The stored result of a completed task; ``NoResult`` otherwise."""
        task = await self.get(task_id)
        if task.status != TaskStatus.COMPLETED:
            raise NoResult(f"task {task_id} is {task.status.value}; it has no result")
        stored = await self.store.get_result(task_id)
        if stored is None:
            raise NoResult(f"task {task_id} has no stored result")
        return ResultInfo(stored.preview, stored.size, stored.inline, stored.path)

    async def result_chunks(self, task_id: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """The pickled result, read off the loop in chunks (for streaming responses)."""
        info = await self.result(task_id)
        if info.inline is not None or info.path is None:
            yield info.inline or b""
            return
        fh = await asyncio.to_thread(open, info.path, "rb")
        try:
            while chunk := await asyncio.to_thread(fh.read, chunk_size):
                yield chunk
        finally:
            fh.close()

    async def logs(
        self, task_id: str, offset: int = 0, max_bytes: int = 1 << 20
    ) -> tuple[bytes, int]:
        """Log bytes from ``offset`` (at most ``max_bytes``) and the offset to ask for next."""
        if offset < 0:
            raise InvalidParameters("must be >= 0", field="offset")
        await self.get(task_id)
        live = self.executor.live_log(task_id)
        run = self._running.get(task_id)
        # A chunk's worker goes on to the next task before the server hears that this one
        # ended: its spool is read only while it is still tagged with this task.
        owner = task_id if run is not None and run.in_request else None

        def read() -> bytes:
            log_path = self.store.log_path(task_id)
            data = _read_output(log_path, live, offset, max_bytes, owner)
            if live is not None and self.executor.live_log(task_id) != live:
                # It ended while we read: its spool may already hold the next task's output.
                data = _read_output(log_path, None, offset, max_bytes)
            return data

        data = await asyncio.to_thread(read)
        return data, offset + len(data)

    def open_blob(self) -> BlobWriter:
        """A writer for an uploaded blob (``callable`` payloads too big for a JSON body)."""
        return BlobWriter(self.store.blob_dir)

    def types(self) -> builtins.list[dict[str, Any]]:
        """The task types this server allows, with their parameter schemas."""
        return self.registry.describe()

    def health(self) -> dict[str, Any]:
        """``healthy`` is false only when tasks cannot run at all."""
        executor = self.executor.health()
        healthy = self._started and not self._stopping and executor.healthy
        return {
            "healthy": healthy,
            "accepting": healthy and len(self._queued) < self.config.max_queue_size,
            "queued": len(self._queued),
            "running": len(self._running),
            "workers": executor.workers,
        }

    # -- cancel and delete -------------------------------------------------------------------

    async def cancel(self, task_id: str) -> Task:
        """Cancel a queued or running task; ``InvalidTransition`` once it has finished."""
        run = self._running.get(task_id)
        if run is not None:
            if run.kill_reason is None:
                run.kill_reason = "cancel"
                if not run.waiting:
                    await self.executor.kill(task_id)
                elif run.task is not None:  # in a chunk, started, not its turn yet: end it now
                    run.waiting = False
                    self._spawn(self._end_unrun(run, run.task))
            await asyncio.shield(run.done)
            task = await self.get(task_id)
            if task.status != TaskStatus.CANCELLED:
                raise InvalidTransition(f"task {task_id} finished ({task.status.value}) first")
            return task
        cancelled = await self.store.transition(
            task_id,
            TaskStatus.CREATED,
            TaskStatus.CANCELLED,
            {"finished_at": time.time(), "message": "cancelled"},
        )
        if cancelled is None:
            current = await self.get(task_id)
            if current.status == TaskStatus.RUNNING:
                raise InvalidTransition(f"task {task_id} is running on another server")
            raise InvalidTransition(f"task {task_id} is already {current.status.value}")
        self._queued.pop(task_id, None)
        self._records.pop(task_id, None)
        self._publish(cancelled)
        return cancelled

    async def delete(self, task_id: str) -> None:
        """Forget a finished task, its result, log and blob."""
        task = await self.get(task_id)
        if task.status not in FINISHED:
            raise InvalidTransition(f"task {task_id} is {task.status.value}; cancel it first")
        files = await self.store.delete(task_id)
        if files is None:
            raise InvalidTransition(f"task {task_id} changed while it was being deleted")
        await asyncio.to_thread(remove_files, files)
        self._tell_waiters(task_id, TaskNotFound(task_id))
        self.events.publish("deleted", {**task.to_json(), "status": "deleted"})

    # -- events, leases, housekeeping --------------------------------------------------------

    def _publish(self, task: Task) -> None:
        """Publish a transition; its JSON form is built only when a subscriber wants it."""
        run = self._running.get(task.task_id)
        if run is not None:
            run.shown, run.shown_json = task, None
            run.progress, run.message = task.progress, task.message
        if self._waiters and task.status.finished:
            self._tell_waiters(task.task_id, task)
        if self.events.wants(task.status.value, task.task_id, task.group):
            data = task.to_json()
            if run is not None:
                run.shown_json = data
            self.events.publish("transition", data)

    async def _adopt(self, initial: bool = False) -> None:
        """Take over tasks of owners that are gone; queue the created tasks we now own."""
        now = time.time()
        dead = [
            o.owner_id
            for o in await self.store.owners()
            if o.owner_id != self.owner.owner_id and self._is_dead(o, now)
        ]
        for task in await self.store.adopt(self.owner.owner_id, dead, now):
            self._publish(task)
        rows = sorted(await self.store.queued(self.owner.owner_id), key=lambda r: r.seq)
        for row in rows:
            if row.task_id in self._queued or row.task_id in self._running:
                continue
            delay = row.not_before - now
            if delay > 0 and not initial:
                continue  # a retry already scheduled by us
            if delay > 0:
                asyncio.get_running_loop().call_later(
                    delay, self._enqueue, row.task_id, row.priority
                )
            else:
                self._enqueue(row.task_id, row.priority)

    def _is_dead(self, owner: Owner, now: float) -> bool:
        if owner.host == self.owner.host:
            started = _process_started(owner.pid)
            if started is None or abs(started - owner.started) > 1.0:
                return True
        return owner.heartbeat < now - self.config.lease_seconds

    async def _lease_loop(self) -> None:
        interval = max(0.5, self.config.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.store.heartbeat(self.owner.owner_id, time.time())
                await self._adopt()
            except Exception:
                log.exception("jupyter-tasks: lease renewal failed")

    async def _housekeeping_loop(self) -> None:
        last_purge = 0.0
        while True:
            await asyncio.sleep(self.config.progress_flush_seconds)
            try:
                await self._flush_progress()
                if time.monotonic() - last_purge > min(3600.0, self.config.retention_seconds / 10):
                    last_purge = time.monotonic()
                    await self._purge()
            except Exception:
                log.exception("jupyter-tasks: housekeeping failed")

    async def _purge(self) -> None:
        while True:
            ids, files = await self.store.purge(time.time() - self.config.retention_seconds)
            await asyncio.to_thread(remove_files, files)
            for task_id in ids:
                self._tell_waiters(task_id, TaskNotFound(task_id))
                self.events.publish("deleted", {"task_id": task_id, "status": "deleted"})
            if len(ids) < 1000:
                return


def _settle_waiter(ended: asyncio.Future[Task], outcome: Task | BaseException) -> None:
    if ended.done():
        return
    if isinstance(outcome, BaseException):
        ended.set_exception(outcome)
    else:
        ended.set_result(outcome)


def _settle_late(
    written: asyncio.Future[list[Task]],
    accept: Callable[[list[Task]], None],
    undo: Callable[[], None],
) -> None:
    """An insert whose submitter was cancelled has ended: accept what it stored, or undo."""
    if not written.cancelled() and written.exception() is None:
        accept(written.result())
    else:
        undo()


def _kind(task: Task) -> str:
    """What makes attempts alike: the task type and what it runs (a callable's interpreter)."""
    params = task.parameters
    target = params.get("callable") or params.get("command") or params.get("path")
    if not isinstance(target, str):
        target = params.get("python")  # ``callable``: the interpreter of the kernel that sent it
    return f"{task.task_type}:{target}" if isinstance(target, str) else task.task_type


def _left_log_alone(task: Task, outcome: Outcome) -> bool:
    """Whether the task's log needs no trim: a first attempt that printed nothing.  (An
    earlier attempt's output may have reached the log untrimmed: a killed server's spool
    is appended to it when the next one starts.)"""
    return task.attempt == 1 and not outcome.log_written


def _began(run: _Run) -> dict[str, Any]:
    """A chunk's task records when it began (``began_at``), not when the chunk took it."""
    return {"started_at": run.began_at} if run.in_chunk else {}


def _stored(outcome: Outcome) -> StoredResult:
    return StoredResult(
        preview=outcome.preview or {"type": "NoneType", "repr": "None", "value": None},
        size=outcome.result_size,
        inline=outcome.result_inline,
        path=outcome.result_file,
    )


def _read_output(
    log_path: str, live: str | None, offset: int, max_bytes: int, owner: str | None = None
) -> bytes:
    """Bytes from ``offset`` of the log followed by the live spool (see ``Executor.live_log``).

    The spool is opened first and counted only if it still has its name after the log was
    read: a worker renames it away before its content reaches the log, never after.  With
    ``owner``, the spool counts only if it is still tagged with that task once read: the
    worker tags it before the next task writes anything.
    """
    spool = None
    if live is not None:
        with contextlib.suppress(OSError):
            spool = open(live, "rb")  # noqa: SIM115 - closed below
    try:
        try:
            with open(log_path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                fh.seek(min(offset, size))
                data = fh.read(min(max_bytes, size - offset)) if offset < size else b""
        except FileNotFoundError:
            size, data = 0, b""
        if spool is None or len(data) >= max_bytes:
            return data
        try:
            if os.stat(live or "").st_ino != os.fstat(spool.fileno()).st_ino:
                return data
        except OSError:
            return data  # handed over meanwhile: the log read above may lack it; ask again
        spool.seek(max(0, offset - size))
        more = spool.read(max_bytes - len(data))
        if owner is not None and spool_tag(spool.fileno()) != owner:
            return data
        return data + more
    finally:
        if spool is not None:
            spool.close()


@contextlib.asynccontextmanager
async def running(config: EngineConfig, **kwargs: Any) -> AsyncIterator[Orchestrator]:
    """``async with running(config) as orch:`` starts and always stops an orchestrator."""
    orch = Orchestrator(config, **kwargs)
    await orch.start()
    try:
        yield orch
    finally:
        await orch.stop()
