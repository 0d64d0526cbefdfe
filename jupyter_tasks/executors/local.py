"""``LocalExecutor``: warm worker processes on this machine, one pool per Python interpreter.

Workers are fresh interpreters leading their own process groups, so a kill reaches the
task's children, and they speak JSON only, so the server never unpickles user data.
Process work (spawning, signalling, ``/proc`` scans) runs in threads, off the loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import logging
import os
import sys
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from .._workerguard import AVAILABLE as GUARDED
from ..models import MEMORY_LIMIT_EXCEEDED, WORKER_CRASHED, TaskError
from ._chunkrun import ChunkRun, EndCallback
from ._proctree import describe_exit, terminate_tree, trees_rss
from ._replies import error_outcome
from ._workerproc import (
    CHUNK_REQUESTS,
    Job,
    WorkerProcess,
    WorkerStartError,
    launch,
    sweep_spools,
)
from .base import (
    ChunkProgressCallback,
    Executor,
    ExecutorHealth,
    Outcome,
    ProgressCallback,
    RunSpec,
    TaskKilled,
)

log = logging.getLogger(__name__)

#: Stripped from workers' environment; a trailing ``*`` matches a prefix.
DEFAULT_ENV_REMOVE: tuple[str, ...] = (
    "JUPYTER_TASKS_URL",
    "JUPYTER_TASKS_TOKEN",
    "JUPYTER_TOKEN",
    "JUPYTERHUB_API_TOKEN",
    "JPY_API_TOKEN",
    "JUPYTER_TASKS_*",
)
HOUSEKEEPING_SECONDS = 0.25
READY_TIMEOUT_SECONDS = 60.0
#: Consecutive start failures of the default interpreter after which health turns false.
MAX_START_FAILURES = 3


def _failed(error_type: str, message: str) -> Outcome:
    return Outcome(ok=False, error=TaskError(type=error_type, message=message))


class LocalExecutor(Executor):
    """Runs tasks in warm local worker processes; see the module docstring."""

    def __init__(
        self,
        *,
        max_workers: int,
        kill_grace_seconds: float = 2.0,
        worker_memory_limit: int = 0,
        max_tasks_per_worker: int = 0,
        idle_seconds: float = 60.0,
        env_remove: tuple[str, ...] = DEFAULT_ENV_REMOVE,
        nice: int = 5,
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self.kill_grace_seconds = kill_grace_seconds
        self.worker_memory_limit = worker_memory_limit
        self.max_tasks_per_worker = max_tasks_per_worker
        self.idle_seconds = idle_seconds
        self.env_remove = tuple(env_remove)
        self.nice = nice
        self.default_interpreter = sys.executable
        self._workers: set[WorkerProcess] = set()
        self._idle: defaultdict[str, list[WorkerProcess]] = defaultdict(list)
        self._waiters: defaultdict[str, deque[asyncio.Future[WorkerProcess]]] = defaultdict(deque)
        self._starting: Counter[str] = Counter()
        self._failures: Counter[str] = Counter()
        self._last_failure = ""
        self._retry_at = 0.0
        self._jobs: dict[str, Job] = {}
        self._held: dict[str, Job] = {}  # requests written to a worker, not yet ``run``
        # Per log directory: the sweep of spools that dead workers left (see sweep_spools).
        self._swept: dict[str, asyncio.Future[None]] = {}
        self._launched: set[int] = set()  # pids of this executor's workers not yet gone
        self._background: set[asyncio.Future[None]] = set()
        self._housekeeper: asyncio.Task[None] | None = None
        self._stopping = False

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Begin warming ``max_workers`` workers of the server's interpreter; returns at once."""
        self._stopping = False
        if self._housekeeper is None:
            self._housekeeper = asyncio.create_task(self._housekeep())
        self._replenish()

    async def stop(self) -> None:
        """Terminate every worker (SIGTERM, then SIGKILL after the grace) and wait for the end."""
        self._stopping = True
        if self._housekeeper is not None:
            self._housekeeper.cancel()
            await asyncio.gather(self._housekeeper, return_exceptions=True)
            self._housekeeper = None
        for job in self._jobs.values():
            job.stop_reason = job.stop_reason or "killed"
            if job.waiter is not None and not job.waiter.done():
                job.waiter.set_exception(TaskKilled("the executor stopped"))
        while self._workers or self._background:
            pending = [self._terminate(worker) for worker in list(self._workers)]
            await asyncio.gather(*pending, *list(self._background), return_exceptions=True)
        for task_id, job in self._held.items():
            if self._jobs.get(task_id) is job:
                del self._jobs[task_id]
        self._held.clear()

    def health(self) -> ExecutorHealth:
        """Workers alive; unhealthy only when the server's interpreter keeps failing to start."""
        workers = sum(1 for worker in self._workers if worker.is_ready and not worker.doomed)
        if self._failures[self.default_interpreter] >= MAX_START_FAILURES:
            detail = f"workers cannot be started: {self._last_failure}"
            return ExecutorHealth(healthy=False, workers=workers, detail=detail)
        return ExecutorHealth(healthy=True, workers=workers)

    def worker_pids(self) -> list[int]:
        """Pids of the worker processes alive now, in every pool (for diagnostics)."""
        return sorted(worker.pid for worker in self._workers)

    # -- running and killing -------------------------------------------------------------

    async def run(self, spec: RunSpec, on_progress: ProgressCallback) -> Outcome:
        """Run one attempt in a worker of ``spec.interpreter``; see ``Executor.run``."""
        job = self._held.pop(spec.task_id, None)
        if job is None:
            if self._stopping:
                raise TaskKilled("the executor is stopping")
            job = Job(spec, on_progress)
            self._jobs[spec.task_id] = job
        try:
            return await self._run_job(job)
        except asyncio.CancelledError:
            if job.worker is not None:
                self._in_background(self._terminate(job.worker))
            raise
        finally:
            if self._jobs.get(spec.task_id) is job:
                del self._jobs[spec.task_id]

    def hold(self, spec: RunSpec, on_progress: ProgressCallback) -> Callable[[], None] | None:
        """Write the run request to an idle worker without waking it; see ``Executor.hold``.

        A worker that waits on its eventfd reads nothing until woken, so the request
        waits in its socket until ``go`` (the worker's ``wake``) is called.
        """
        if self._stopping or spec.task_id in self._jobs:
            return None
        logs_dir = os.path.dirname(spec.log_path)
        swept = self._swept.get(logs_dir)
        if swept is None or not swept.done():
            return None  # the first run of a log directory: ``run`` sweeps it first
        worker = self._idle_worker(spec.interpreter)
        if worker is None:
            return None  # no idle worker: ``run`` waits for one as usual
        if not worker.wakes_by_eventfd:
            self._idle[spec.interpreter].append(worker)
            return None
        job = Job(spec, on_progress)
        self._jobs[spec.task_id] = self._held[spec.task_id] = job
        worker.job, job.worker = job, worker
        job.spool = worker.spool_for(logs_dir)
        with contextlib.suppress(ConnectionError):  # it is dying; its exit settles the reply
            worker.send(self._run_request(job), wake=False)
        return worker.wake

    def drop_hold(self, task_id: str) -> None:
        """End the worker holding ``task_id``'s request: it might have been woken already."""
        job = self._held.pop(task_id, None)
        if job is None:
            return
        if self._jobs.get(task_id) is job:
            del self._jobs[task_id]
        job.stop_reason = "killed"
        if job.worker is not None:
            self._in_background(self._terminate(job.worker))

    async def run_chunk(
        self,
        specs: list[RunSpec],
        on_progress: ChunkProgressCallback,
        on_begin: Callable[[str], None],
        on_end: EndCallback,
    ) -> list[str] | None:
        """Run ``specs`` one after another on one worker, sent in one request; see
        ``Executor.run_chunk``.  Not with ``max_tasks_per_worker`` (a chunk could pass it)."""
        if not CHUNK_REQUESTS or self._stopping or self.max_tasks_per_worker or len(specs) < 2:
            return None
        if any(spec.interpreter != specs[0].interpreter for spec in specs):
            return None
        jobs = [Job(spec, functools.partial(on_progress, spec.task_id)) for spec in specs]
        for job in jobs:
            self._jobs[job.spec.task_id] = job
        try:
            try:
                worker = await self._acquire(jobs[0])
            except (WorkerStartError, TaskKilled):
                return [spec.task_id for spec in specs]  # one by one, where they end as usual
            try:
                spool = await self._spool(worker, jobs[0].spec)
            except BaseException:
                self._release(worker)
                raise
            gone = worker.exited.done() or worker.doomed or worker.permit_fd is None
            if gone or any(job.stop_reason for job in jobs):
                self._release(worker)  # (killed meanwhile, or it ended: one by one)
                return [spec.task_id for spec in specs]
            return await self._run_chunk_on(worker, jobs, spool, on_begin, on_end)
        finally:
            for job in jobs:
                if self._jobs.get(job.spec.task_id) is job:
                    del self._jobs[job.spec.task_id]

    async def _run_chunk_on(
        self,
        worker: WorkerProcess,
        jobs: list[Job],
        spool: str,
        on_begin: Callable[[str], None],
        on_end: EndCallback,
    ) -> list[str]:
        chunk = ChunkRun(
            worker,
            jobs,
            on_begin,
            on_end,
            lambda job, reply: self._ended_outcome(job, worker, reply),
        )
        for job in jobs:
            job.worker, job.spool = worker, spool
        worker.chunk = chunk
        chunk.start()  # the permits first: the worker takes one before each run
        with contextlib.suppress(ConnectionError):  # it is dying; its exit ends the chunk
            worker.send(self._chunk_request(worker, jobs, spool))
        try:
            not_begun = await asyncio.shield(chunk.finished)
        except asyncio.CancelledError:
            chunk.take_back()
            self._in_background(self._terminate(worker))
            raise
        worker.chunk, worker.job = None, None
        for job in jobs:
            job.worker = None
        if worker.exited.done():
            if worker.terminating is not None:
                await asyncio.shield(worker.terminating)  # the whole tree is gone first
            return not_begun
        # (A run that handed the spool over as its log left the name free: the worker
        # creates the file anew under it for the next run, as it did within the chunk.)
        worker.tasks_done += chunk.current
        if chunk.stale or chunk.retire_after or worker.doomed:
            self._retire(worker)
        else:
            self._release(worker)
        return not_begun

    def _ended_outcome(
        self, job: Job, worker: WorkerProcess, reply: dict[str, Any]
    ) -> Outcome | None:
        """A chunk's run ended with ``reply`` (``done``, or the worker's ``exit``)."""
        try:
            return self._conclude_reply(job, worker, reply)
        except TaskKilled:
            return None

    def live_log(self, task_id: str) -> str | None:
        """The spool a running task writes to; its output moves to the log when it ends."""
        job = self._jobs.get(task_id)
        if job is None or job.worker is None or job.reply.done() or job.worker.job is not job:
            return None
        return job.spool

    async def kill(self, task_id: str) -> None:
        """SIGTERM the task's process tree, SIGKILL after the grace; return once all are gone."""
        job = self._jobs.get(task_id)
        if job is None:
            return
        job.stop_reason = job.stop_reason or "killed"
        if job.waiter is not None and not job.waiter.done():
            job.waiter.set_exception(TaskKilled(f"task {task_id} was killed"))
        await self._end_job(job)

    async def _end_job(self, job: Job) -> None:
        """End the worker running ``job``; a chunk's run ends only while it may be running."""
        worker = job.worker
        if worker is None:
            return
        chunk = worker.chunk
        if chunk is not None and job in chunk.jobs and not chunk.must_end_worker(job):
            return  # it never begins (it is handed back), or it has ended already
        await self._terminate(worker)

    async def _run_job(self, job: Job) -> Outcome:
        if job.worker is not None:  # held (see ``hold``): its request is with the worker
            worker = job.worker
            reply = await self._reply(worker, job)
            if not _never_began(job, reply):
                outcome = self._conclude(job, worker, reply)
                if outcome is not None:
                    return outcome
        # A worker that answers "stale" exits, as one may die before it read the request;
        # the loop then takes another (at last a fresh) one.
        for _ in range(self.max_workers + 2):
            try:
                worker = await self._acquire(job)
            except WorkerStartError as exc:
                message = f"could not start a worker for {job.spec.interpreter}: {exc}"
                return _failed(WORKER_CRASHED, message)
            if job.stop_reason is not None:
                self._release(worker)
                raise TaskKilled(f"task {job.spec.task_id} was killed")
            reply = await self._exchange(worker, job)
            if _never_began(job, reply):
                continue  # it died before it read the request: another worker runs it
            outcome = self._conclude(job, worker, reply)
            if outcome is not None:
                return outcome
        message = "no worker took the run: each reported changed code or died before reading it"
        return _failed(WORKER_CRASHED, message)

    async def _exchange(self, worker: WorkerProcess, job: Job) -> dict[str, Any]:
        job.reply = asyncio.get_running_loop().create_future()
        worker.job, job.worker = job, worker
        job.spool = await self._spool(worker, job.spec)
        with contextlib.suppress(ConnectionError):  # it is dying; its exit settles the reply
            worker.send(self._run_request(job))
        return await self._reply(worker, job)

    @staticmethod
    def _run_request(job: Job) -> dict[str, Any]:
        return {"op": "run", **_spec_fields(job.spec), "spool_path": job.spool}

    def _chunk_request(self, worker: WorkerProcess, jobs: list[Job], spool: str) -> dict[str, Any]:
        """A chunk's runs in one request; the fields they share (one kind, one interpreter,
        one server) go once, where the worker takes them (``shared``): half the bytes."""
        if not worker.takes_shared_fields:
            return {"op": "chunk", "runs": [self._run_request(job) for job in jobs]}
        first = jobs[0].spec
        same = [
            name
            for name in _SHAREABLE_FIELDS
            if all(getattr(job.spec, name) == getattr(first, name) for job in jobs)
        ]
        own = [name for name in _SPEC_FIELDS if name not in same]
        return {
            "op": "chunk",
            "shared": {"op": "run", **_spec_fields(first, same), "spool_path": spool},
            "runs": [_spec_fields(job.spec, own) for job in jobs],
        }

    async def _reply(self, worker: WorkerProcess, job: Job) -> dict[str, Any]:
        """Await the worker's answer to the job's request; the worker is free after it.

        Not shielded: a shield costs the answer one more turn of the loop on every run.
        Cancelled, the reply is cancelled with us, and whoever settles it sees it done.
        """
        reply = await job.reply
        if reply["op"] == "exit" and worker.terminating is not None:
            await asyncio.shield(worker.terminating)  # the whole tree is gone before we answer
        job.worker = None
        if reply["op"] == "done" and reply.get("spool_retired"):
            worker.retire_spool()
        if reply["op"] != "exit":
            worker.job = None
        return reply

    async def _spool(self, worker: WorkerProcess, spec: RunSpec) -> str:
        """The worker's spool for the next run, once spools dead workers left are settled."""
        self._trim_idle()
        logs_dir = os.path.dirname(spec.log_path)
        swept = self._swept.get(logs_dir)
        if swept is None:  # before a task runs: output a killed server left comes first
            sweep = asyncio.to_thread(sweep_spools, logs_dir, set(self._launched))
            swept = self._swept[logs_dir] = asyncio.ensure_future(sweep)
        if not swept.done():
            try:
                await asyncio.shield(swept)
            except Exception:
                log.exception("could not sweep the spools in %s", logs_dir)
        return worker.spool_for(logs_dir)

    def _conclude(self, job: Job, worker: WorkerProcess, reply: dict[str, Any]) -> Outcome | None:
        """The outcome of one exchange, or None to try another worker (stale code)."""
        if reply["op"] == "stale":
            self._retire(worker)
            return None
        if reply["op"] == "done":
            worker.tasks_done += 1
            recycle = 0 < self.max_tasks_per_worker <= worker.tasks_done
            if recycle:
                self._retire(worker)
            else:
                self._release(worker)
        return self._conclude_reply(job, worker, reply)

    def _conclude_reply(self, job: Job, worker: WorkerProcess, reply: dict[str, Any]) -> Outcome:
        """The outcome a ``done`` or ``exit`` reply gives ``job``; ``TaskKilled`` if killed."""
        if job.stop_reason == "killed":
            raise TaskKilled(f"task {job.spec.task_id} was killed")
        if reply["op"] == "done":
            return _done_outcome(job.spec, reply, spooled=job.spool is not None)
        if job.stop_reason == "memory":
            used, limit = job.memory_used, self.worker_memory_limit
            message = f"the task's processes used {used} bytes, limit {limit}"
            return _failed(MEMORY_LIMIT_EXCEEDED, message)
        message = f"{describe_exit(reply['returncode'])} while running the task (see its log)"
        if worker.protocol_error is not None:
            message = f"the worker broke the protocol ({worker.protocol_error}) and was killed"
        return _failed(WORKER_CRASHED, message)

    # -- the pools -----------------------------------------------------------------------

    async def _acquire(self, job: Job) -> WorkerProcess:
        """An idle worker of the job's interpreter, or the next one to become ready."""
        interpreter = job.spec.interpreter
        worker = self._idle_worker(interpreter)
        if worker is not None:
            return worker
        waiter: asyncio.Future[WorkerProcess] = asyncio.get_running_loop().create_future()
        waiters = self._waiters[interpreter]
        waiters.append(waiter)
        if self._starting[interpreter] < len(waiters):
            self._spawn(interpreter)
        job.waiter = waiter
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release(waiter.result())
            raise
        finally:
            job.waiter = None
            if waiter in waiters:
                waiters.remove(waiter)

    def _idle_worker(self, interpreter: str) -> WorkerProcess | None:
        """Take the most recent idle worker of ``interpreter``; those gone leave the pool."""
        idle = self._idle[interpreter]
        while idle:
            worker = idle.pop()
            if not worker.doomed and not worker.exited.done():
                return worker
        return None

    def _release(self, worker: WorkerProcess) -> None:
        """Give a free worker to the first waiter, else keep it idle (within the bound)."""
        worker.job = None
        if worker.doomed or worker.exited.done():
            return
        if self._stopping:
            self._retire(worker)
            return
        waiters = self._waiters.get(worker.interpreter)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(worker)
                return
        worker.idle_since = time.monotonic()
        self._idle[worker.interpreter].append(worker)
        self._trim_idle()

    def _trim_idle(self) -> None:
        """Keep at most ``max_workers`` minus busy workers idle, retiring the least recent."""
        idle = [worker for workers in self._idle.values() for worker in workers]
        if not idle:
            return  # the usual case under load: every worker busy
        busy = sum(1 for worker in self._workers if worker.job is not None)
        excess = len(idle) - max(0, self.max_workers - busy)
        for worker in sorted(idle, key=lambda w: w.idle_since)[: max(0, excess)]:
            self._retire(worker)

    def _replenish(self) -> None:
        """Start workers of the server's interpreter until ``max_workers`` are alive or coming."""
        if self._stopping or time.monotonic() < self._retry_at:
            return
        alive = sum(1 for worker in self._workers if worker.is_ready and not worker.doomed)
        for _ in range(self.max_workers - alive - sum(self._starting.values())):
            self._spawn(self.default_interpreter)

    def _spawn(self, interpreter: str) -> None:
        self._starting[interpreter] += 1
        self._in_background(self._start_worker(interpreter))

    async def _start_worker(self, interpreter: str) -> None:
        try:
            worker = await launch(interpreter, self._worker_env(), self.nice, self._on_gone)
            self._workers.add(worker)
            self._launched.add(worker.pid)
            await worker.wait_ready(READY_TIMEOUT_SECONDS)
        except WorkerStartError as exc:
            self._start_failed(interpreter, exc)
            return
        finally:
            self._starting[interpreter] -= 1
        self._failures[interpreter] = 0
        if self._stopping:
            await self._terminate(worker)
        else:
            self._release(worker)

    def _start_failed(self, interpreter: str, exc: WorkerStartError) -> None:
        if self._stopping:
            return  # stop() killed it while it started: not a failure to report
        self._failures[interpreter] += 1
        self._last_failure = f"{interpreter}: {exc}"
        log.warning("could not start a worker: %s", self._last_failure)
        if interpreter == self.default_interpreter:
            backoff = min(30.0, 0.5 * 2 ** self._failures[interpreter])
            self._retry_at = time.monotonic() + backoff
        for waiter in self._waiters.get(interpreter, ()):
            if not waiter.done():
                waiter.set_exception(exc)
                break

    def _worker_env(self) -> dict[str, str]:
        names = {name for name in self.env_remove if not name.endswith("*")}
        prefixes = tuple(name[:-1] for name in self.env_remove if name.endswith("*"))
        return {
            k: v for k, v in os.environ.items() if k not in names and not k.startswith(prefixes)
        }

    def _on_gone(self, worker: WorkerProcess) -> None:
        """Called by a worker's supervisor once its process has ended (its spool settled)."""
        self._workers.discard(worker)
        self._launched.discard(worker.pid)
        self._forget_idle(worker)
        self._replenish()

    def _forget_idle(self, worker: WorkerProcess) -> None:
        idle = self._idle.get(worker.interpreter)
        if idle and worker in idle:
            idle.remove(worker)

    # -- ending workers ------------------------------------------------------------------

    def _retire(self, worker: WorkerProcess) -> None:
        worker.doomed = True  # at once: it must not be handed out before its end begins
        self._forget_idle(worker)
        self._in_background(self._terminate(worker))

    async def _terminate(self, worker: WorkerProcess) -> None:
        """End a worker and its whole tree; concurrent callers share one termination."""
        worker.doomed = True
        self._forget_idle(worker)
        if worker.chunk is not None:
            worker.chunk.take_back()  # nothing more of it begins while the worker ends
        if worker.terminating is None:
            worker.terminating = asyncio.ensure_future(self._terminate_now(worker))
        await asyncio.shield(worker.terminating)

    async def _terminate_now(self, worker: WorkerProcess) -> None:
        if not worker.exited.done():
            await asyncio.to_thread(terminate_tree, worker.handle, self.kill_grace_seconds)
        await asyncio.shield(worker.supervisor)

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Future[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work failed", exc_info=task.exception())

    # -- housekeeping --------------------------------------------------------------------

    async def _housekeep(self) -> None:
        """Reap idle workers of other interpreters, refill the pool, watch memory."""
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            try:
                self._reap_idle()
                self._replenish()
                if self.worker_memory_limit > 0:
                    await self._check_memory()
            except Exception:
                log.exception("executor housekeeping failed")

    def _reap_idle(self) -> None:
        deadline = time.monotonic() - self.idle_seconds
        for interpreter, workers in list(self._idle.items()):
            if interpreter == self.default_interpreter:
                continue
            for worker in [w for w in workers if w.idle_since < deadline]:
                self._retire(worker)

    async def _check_memory(self) -> None:
        busy = {w.pid: (w, w.job) for w in self._workers if w.job is not None and not w.doomed}
        if not busy:
            return
        usage = await asyncio.to_thread(trees_rss, list(busy), not GUARDED)
        for pid, used in usage.items():
            worker, job = busy[pid]
            # The measurement is only about the job that was running when it was taken.
            if used <= self.worker_memory_limit or job is None or worker.job is not job:
                continue
            if job.stop_reason is None:
                job.stop_reason, job.memory_used = "memory", used
                log.warning("task %s used %d bytes; killing it", job.spec.task_id, used)
                if worker.chunk is None:
                    self._retire(worker)
                    continue
                # A chunk's worker: the usage is the run's only if it is still going on.
                worker.chunk.retire_after = True  # (if not now)
                if worker.chunk.state_of(job) == "running":
                    self._retire(worker)
                else:
                    job.stop_reason = None  # it ended, or never began (and is handed back)


_SPEC_FIELDS = tuple(field.name for field in dataclasses.fields(RunSpec))
#: Fields a chunk's runs usually share (see ``_chunk_request``).
_SHAREABLE_FIELDS = (
    "task_type",
    "type_path",
    "interpreter",
    "root_dir",
    "blob_dir",
    "result_max_bytes",
    "inline_result_max",
)


def _spec_fields(spec: RunSpec, names: Sequence[str] = _SPEC_FIELDS) -> dict[str, Any]:
    """The spec (or its ``names``) as a shallow dict (``dataclasses.asdict`` deep-copies
    the parameters)."""
    return {name: getattr(spec, name) for name in names}


def _done_outcome(spec: RunSpec, reply: dict[str, Any], spooled: bool) -> Outcome:
    """Turn a worker's ``done`` message into an ``Outcome`` (bytes stay bytes: never unpickled).

    A run that wrote to a spool and did not hand it over (``spool_retired``) printed
    nothing: its task's log is as it was.
    """
    if not reply.get("ok"):
        return error_outcome(reply)
    # The file is the one the spec named, whatever the worker says: the server never
    # trusts a path from a worker.
    inline = reply.get("inline")
    return Outcome(
        ok=True,
        preview=reply.get("preview"),
        result_size=int(reply.get("size") or 0),
        result_inline=base64.b64decode(inline) if isinstance(inline, str) else None,
        result_file=None if isinstance(inline, str) else spec.result_path,
        log_written=not spooled or reply.get("spool_retired") is not False,
    )


def _never_began(job: Job, reply: dict[str, Any]) -> bool:
    """A worker that died with the job's request unread, and not because it was killed."""
    return reply["op"] == "exit" and bool(reply.get("unread")) and job.stop_reason is None
