"""``DaskExecutor``: run every task type on a ``dask.distributed`` cluster.

Each attempt is one Dask task (``_dasktask.run_task``) that runs the task in a child process
on the worker, because Dask cannot interrupt a running task: a kill (cancel, timeout) goes
to that worker through ``Client.run`` and stops the child's process tree (SIGTERM, grace,
SIGKILL).  Progress and log chunks come back as Dask events on a topic of this executor;
the result comes back as one ``bytes`` frame, so the server never unpickles what a worker
produced.  With no address, the executor starts and owns a cluster whose scheduler and
workers are subprocesses (``SubprocessCluster``), never part of the server; a
``cluster_factory`` (e.g. a dask-gateway cluster) may make that cluster instead.

Dask gets only as many attempts as its running workers have threads (counted again whenever
a worker joins or leaves, and every ``COUNT_SECONDS``), so that priorities hold: the others
wait in ``Slots``, highest priority first, each shown to Dask as a stand-in task
that no worker can run, so that adaptive clusters still see the backlog and scale up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import uuid
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from distributed import Client

from ..models import WORKER_CRASHED
from . import _dasktask
from ._dasklog import LogSink
from ._daskresult import failed, frame_outcome, read_bytes, settled, spec_dict
from ._daskslots import Slots
from ._replies import deliver_progress
from .base import Executor, ExecutorHealth, Outcome, ProgressCallback, RunSpec, TaskKilled
from .local import DEFAULT_ENV_REMOVE

if TYPE_CHECKING:
    from ..orchestrator import EngineConfig

log = logging.getLogger(__name__)

WATCH_SECONDS = 0.2
#: Bound on one kill's round trip beyond the grace period (an unreachable worker).
KILL_WAIT_SECONDS = 30.0
#: Blobs up to this size travel inside the task; larger ones are scattered first.
INLINE_BLOB_MAX = 1 << 20
#: Resubmissions of a task that never started, after losing the scheduler.
MAX_RESUBMITS = 100
CALLABLE_TYPE = "jupyter_tasks.tasktypes.callable:CallableTask"
#: Why Dask cancels futures when the scheduler goes away (the task did not run: resubmit).
RESUBMIT_REASONS = frozenset({"scheduler-connection-lost", "scheduler-restart"})
#: How often the running workers' threads are counted (also whenever a worker joins or leaves).
COUNT_SECONDS = 1.0
#: How often a waiting attempt checks its stand-in (also whenever the connection changes).
STAND_IN_SECONDS = 5.0
_RESUBMIT = object()


@dataclasses.dataclass
class _Job:
    """One attempt as the server follows it."""

    spec: RunSpec
    on_progress: ProgressCallback
    key: str
    log: LogSink
    order: int  #: arrival order: ties of priority take a free thread oldest first
    wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    finished: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    future: Any = None
    started: bool = False
    worker: str | None = None
    pid: int | None = None
    killed: bool = False
    lost: str | None = None


class DaskExecutor(Executor):
    """Runs tasks on a Dask cluster; see the module docstring."""

    def __init__(
        self,
        address: str | None = None,
        *,
        threads: int | None = None,
        kill_grace_seconds: float = 2.0,
        worker_memory_limit: int = 0,
        max_tasks_per_worker: int = 0,
        idle_seconds: float = 60.0,
        log_tail_max: int = 10 << 20,
        connect_timeout: float = 30.0,
        env_remove: tuple[str, ...] = DEFAULT_ENV_REMOVE,
        nice: int = 0,
        cluster_kwargs: dict[str, Any] | None = None,
        cluster_factory: Callable[[], Awaitable[Any]] | None = None,
        client_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.address = address or None
        self.threads = threads or os.cpu_count() or 1
        self.kill_grace_seconds = kill_grace_seconds
        self.worker_memory_limit = worker_memory_limit
        self.max_tasks_per_worker = max_tasks_per_worker
        self.idle_seconds = idle_seconds
        self.log_tail_max = log_tail_max
        self.connect_timeout = connect_timeout
        self.env_remove = tuple(env_remove)
        self.nice = nice
        self.cluster_kwargs = dict(cluster_kwargs or {})
        self.cluster_factory = cluster_factory
        self.client_kwargs = dict(client_kwargs or {})
        self.topic = f"jupyter-tasks-{uuid.uuid4().hex}"
        self.cluster: Any = None
        self.client: Any = None
        self._connected: asyncio.Event | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._jobs: dict[str, _Job] = {}
        self._keys: dict[str, _Job] = {}
        self._slots = Slots()
        self._order = itertools.count()
        self._recount = asyncio.Event()
        self._link_changed = asyncio.Event()  #: set (and replaced) as connections come and go
        #: The resource stand-ins ask for: no worker has it, so they wait and never run.
        self._stand_in_resource = f"{self.topic}-waiting"
        self._detail = "not started"
        self._stopping = False

    @classmethod
    def from_config(
        cls, config: EngineConfig, address: str | None = None, **kwargs: Any
    ) -> DaskExecutor:
        """The executor ``TasksApp`` builds: engine settings mapped onto the executor's.

        ``kwargs`` go to the constructor (a subclass may pass ``cluster_factory``).
        """
        options: dict[str, Any] = {
            "threads": config.max_workers,
            "kill_grace_seconds": config.kill_grace_seconds,
            "worker_memory_limit": config.worker_memory_limit,
            "max_tasks_per_worker": config.max_tasks_per_worker,
            "log_tail_max": config.log_max_bytes,
        }
        return cls(address, **{**options, **kwargs})

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (starting the owned cluster first) in the background; returns at once."""
        self._stopping = False
        if self._connected is None:
            self._connected = asyncio.Event()
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise())

    async def stop(self) -> None:
        """Kill what runs, close the client and the owned cluster; nothing is left behind."""
        self._stopping = True
        jobs = list(self._jobs.values())
        for job in jobs:
            self._wake(job, killed=True)
        if jobs:
            waits = [job.finished.wait() for job in jobs]
            bound = self.kill_grace_seconds + KILL_WAIT_SECONDS
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), bound)
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        await self._drop_client(drain=True)
        if self.cluster is not None:
            cluster, self.cluster = self.cluster, None
            with contextlib.suppress(Exception):
                await cluster.close()
        self._detail = "stopped"

    def health(self) -> ExecutorHealth:
        """Healthy while connected to the scheduler; ``workers`` counts Dask threads."""
        client = self.client
        if client is None or self._connected is None or not self._connected.is_set():
            return ExecutorHealth(healthy=False, workers=0, detail=self._detail)
        info = client.scheduler_info() or {}
        threads = info.get("total_threads")  # older versions list the workers instead
        if threads is None:
            threads = sum(w.get("nthreads", 0) for w in (info.get("workers") or {}).values())
        threads = int(threads or 0)
        detail = "" if threads else "the Dask cluster has no workers (yet)"
        return ExecutorHealth(healthy=True, workers=threads, detail=detail)

    # -- connection ------------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Keep a client connected; a client Dask gave up on is replaced, with backoff."""
        delay = 0.5
        while True:
            try:
                client = await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._detail = f"cannot reach the Dask scheduler ({self._where()}): {exc}"
                log.warning("jupyter-tasks: %s", self._detail)
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)
                continue
            delay = 0.5
            await self._watch(client)
            await self._drop_client(drain=False)
            if self.address is None and self.cluster is not None:
                cluster, self.cluster = self.cluster, None  # the owned cluster broke: renew it
                with contextlib.suppress(Exception):
                    await cluster.close()

    def _where(self) -> str:
        return self.address or "the cluster owned by this server"

    async def _connect(self) -> Any:
        if self.address is None and self.cluster is None:
            self._detail = "starting a local Dask cluster"
            await self._start_cluster()
        address = self.address or self.cluster.scheduler_address
        self._detail = f"connecting to the Dask scheduler at {address}"
        options: dict[str, Any] = {"timeout": self.connect_timeout, "name": "jupyter-tasks"}
        security = getattr(self.cluster, "security", None) if self.address is None else None
        if security is not None:
            options["security"] = security  # dask-gateway clusters hand out TLS credentials
        options.update(self.client_kwargs)
        client = await Client(  # type: ignore[no-untyped-call]
            address, asynchronous=True, set_as_default=False, **options
        )
        self.client = client
        return client

    async def _start_cluster(self) -> None:
        """Start the owned cluster; ``self.cluster`` is set first, so ``stop()`` can close it."""
        try:
            if self.cluster_factory is not None:
                self.cluster = await self.cluster_factory()
                return
            from distributed.deploy.subprocess import SubprocessCluster

            options: dict[str, Any] = {
                "n_workers": 1,
                "threads_per_worker": self.threads,
                "dashboard_address": ":0",  # a free port: 8787 may be taken
                "worker_kwargs": {"memory_limit": 0},  # task memory is watched per task tree
            }
            options.update(self.cluster_kwargs)
            self.cluster = SubprocessCluster(asynchronous=True, **options)
            await self.cluster
        except BaseException:
            cluster, self.cluster = self.cluster, None
            if cluster is not None:
                with contextlib.suppress(Exception):
                    await cluster.close()
            raise

    async def _watch(self, client: Any) -> None:
        """Follow the client's state until Dask closes it; (re)subscribe on each connection."""
        assert self._connected is not None
        subscribed = False
        counter: tuple[asyncio.Task[None], asyncio.Event] | None = None
        try:
            while client.status not in ("closing", "closed"):
                running = client.status == "running"
                if running and not subscribed:
                    client.subscribe_topic(self.topic, self._on_event)
                    client.subscribe_topic("all", self._on_cluster_event)
                    subscribed = True
                    counter = self._start_counting(client)
                    self._detail = ""
                    self._connected.set()
                    self._announce_link()
                elif not running and subscribed:
                    subscribed = False
                    self._connected.clear()
                    self._announce_link()
                    await self._stop_counting(counter)
                    counter = None
                    self._detail = "lost the connection to the Dask scheduler; reconnecting"
                await asyncio.sleep(WATCH_SECONDS)
        finally:
            await self._stop_counting(counter)
        self._connected.clear()
        self._announce_link()
        self._detail = "the connection to the Dask scheduler was closed; reconnecting"

    def _announce_link(self) -> None:
        """Wake the attempts waiting for a thread: their stand-ins belong to a connection."""
        changed, self._link_changed = self._link_changed, asyncio.Event()
        changed.set()

    async def _count_threads(self, client: Any, stop: asyncio.Event) -> None:
        """Keep the slots' capacity at the threads of the cluster's running workers.

        Ends once ``stop`` is set, not only when cancelled: Python 3.11's ``wait_for``
        swallows a cancellation that arrives as its awaitable finishes (here, a count).
        ``_stop_counting`` also sets ``_recount``, so a wait between counts ends at once.
        """
        while not stop.is_set():
            self._recount.clear()
            try:
                counts = await asyncio.wait_for(client.scheduler.ncores_running(), 10)
                self._slots.set_capacity(sum(int(n) for n in dict(counts).values()))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the last count; the watcher sees a lost scheduler
                log.debug("jupyter-tasks: cannot count the Dask workers' threads: %s", exc)
            timer = asyncio.get_running_loop().call_later(COUNT_SECONDS, self._recount.set)
            try:
                await self._recount.wait()
            finally:
                timer.cancel()

    def _start_counting(self, client: Any) -> tuple[asyncio.Task[None], asyncio.Event]:
        stop = asyncio.Event()
        return asyncio.create_task(self._count_threads(client, stop)), stop

    async def _stop_counting(
        self, counter: tuple[asyncio.Task[None], asyncio.Event] | None
    ) -> None:
        """No connection, no threads: attempts that have none wait until the next count."""
        if counter is not None:
            task, stop = counter
            stop.set()
            self._recount.set()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._slots.set_capacity(0)

    async def _drop_client(self, drain: bool) -> None:
        client, self.client = self.client, None
        if self._connected is not None:
            self._connected.clear()
        if client is None:
            return
        if client.status == "running":
            for topic in (self.topic, "all"):  # before closing: no event may chase a closed comm
                with contextlib.suppress(Exception):
                    client.unsubscribe_topic(topic)
            if drain:
                with contextlib.suppress(Exception):
                    run = client.run(_dasktask.drain_idle, on_error="ignore")
                    await asyncio.wait_for(run, 10)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 10)

    # -- events from workers and the scheduler -------------------------------------------

    def _on_event(self, event: Any) -> None:
        """A worker's message for one attempt: ``start``, ``progress`` or ``log``."""
        try:
            message = event[1]
            job = self._keys.get(message.get("key"))
            if job is None:
                return
            op = message.get("op")
            if op == "start":
                job.started, job.worker, job.pid = True, str(message["worker"]), message.get("pid")
                log.debug("task %s runs on %s (pid %s)", job.spec.task_id, job.worker, job.pid)
            elif op == "progress":
                deliver_progress(
                    job.on_progress, job.spec.task_id, message.get("p"), message.get("m")
                )
            elif op == "log" and isinstance(message.get("data"), bytes):
                job.log.append(int(message.get("seq", -1)), message["data"])
        except Exception:
            log.exception("jupyter-tasks: bad event from a Dask worker")

    def _on_cluster_event(self, event: Any) -> None:
        """Workers joining or leaving change the count of threads; one that leaves fails the
        attempts it was running (Dask would rerun them)."""
        with contextlib.suppress(Exception):
            message = event[1]
            action = message.get("action")
            if action in ("add-worker", "remove-worker"):
                self._recount.set()
            if action != "remove-worker":
                return
            address = message.get("worker")
            for job in list(self._jobs.values()):
                if job.started and job.worker == address and job.lost is None:
                    job.lost = address
                    job.wake.set()

    # -- running and killing ---------------------------------------------------------------

    async def run(self, spec: RunSpec, on_progress: ProgressCallback) -> Outcome:
        """Run one attempt on the cluster; see ``Executor.run``."""
        if self._stopping or self._connected is None:
            raise TaskKilled("the executor is not running")
        key = f"jupyter-task-{spec.task_id}-{spec.attempt}"
        job = _Job(spec, on_progress, key, LogSink(spec.log_path), next(self._order))
        self._jobs[spec.task_id] = job
        self._keys[key] = job
        try:
            return await self._run_job(job)
        finally:
            self._jobs.pop(spec.task_id, None)
            self._keys.pop(key, None)
            self._release(job)
            await job.log.close()
            job.finished.set()

    async def kill(self, task_id: str) -> None:
        """Stop the attempt where it runs; returns once its processes are gone."""
        job = self._jobs.get(task_id)
        if job is None:
            return
        self._wake(job, killed=True)
        await job.finished.wait()

    @staticmethod
    def _wake(job: _Job, killed: bool) -> None:
        job.killed = job.killed or killed
        job.wake.set()

    async def _run_job(self, job: _Job) -> Outcome:
        for _ in range(MAX_RESUBMITS):
            self._release(job)  # a resubmission: the cancelled future must not answer for it
            await self._take_slot(job)
            try:
                client = await self._client_for(job)
                job.started, job.worker, job.pid = False, None, None
                job.future = client.submit(
                    _dasktask.run_task,
                    spec_dict(job.spec),
                    await self._blob_arg(client, job.spec),
                    self._options(job),
                    key=job.key,
                    priority=job.spec.priority,
                    pure=False,
                    retries=0,
                )
                ended = await self._until_end(job)
            finally:
                self._slots.release()
            if ended is not _RESUBMIT:
                assert isinstance(ended, Outcome)
                return ended
        return failed(WORKER_CRASHED, "the Dask scheduler kept going away; giving up")

    async def _take_slot(self, job: _Job) -> None:
        """Wait for a free thread of the cluster: highest priority first, ties oldest first.

        While it waits, a stand-in Dask task shows the attempt to the scheduler.
        """
        granted = self._slots.claim(job.spec.priority, job.order)
        stand_in: Any = None
        try:
            while not granted.done():
                if job.killed:
                    raise TaskKilled(f"task {job.spec.task_id} was killed")
                link = self._link_changed
                stand_in = self._stand_in(job, stand_in)
                helpers = [asyncio.ensure_future(e.wait()) for e in (job.wake, link)]
                waits: set[asyncio.Future[Any]] = {granted, *helpers}
                try:
                    await asyncio.wait(waits, timeout=STAND_IN_SECONDS, return_when=FIRST_COMPLETED)
                finally:
                    for helper in helpers:
                        helper.cancel()
        except BaseException:
            self._slots.withdraw(granted)
            raise
        finally:
            if stand_in is not None:
                with contextlib.suppress(Exception):
                    stand_in.release()

    def _stand_in(self, job: _Job, current: Any) -> Any:
        """The attempt's stand-in on the current connection (a new one if it was lost)."""
        client = self.client
        assert self._connected is not None
        usable = client is not None and self._connected.is_set() and client.status == "running"
        if current is not None:
            if usable and current.client is client and current.status == "pending":
                return current
            with contextlib.suppress(Exception):
                current.release()
        if not usable:
            return None
        try:
            return client.submit(
                _dasktask.stand_in,
                key=f"{job.key}-waiting-{next(self._order)}",
                resources={self._stand_in_resource: 1},
                priority=job.spec.priority,
                pure=False,
                retries=0,
            )
        except Exception as exc:  # only the scale-up signal is lost
            log.debug("jupyter-tasks: no stand-in for task %s: %s", job.spec.task_id, exc)
            return None

    async def _client_for(self, job: _Job) -> Any:
        """The connected client; waits (the task stays queued) while there is none."""
        assert self._connected is not None
        while True:
            if job.killed:
                raise TaskKilled(f"task {job.spec.task_id} was killed")
            client = self.client
            if self._connected.is_set() and client is not None and client.status == "running":
                return client
            # Connected but reconnecting: the watcher clears the flag within WATCH_SECONDS.
            event = job.wake if self._connected.is_set() else self._connected
            waits = [asyncio.ensure_future(e.wait()) for e in {event, job.wake}]
            try:
                await asyncio.wait(waits, timeout=WATCH_SECONDS, return_when=FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()

    async def _blob_arg(self, client: Any, spec: RunSpec) -> Any:
        """A ``callable`` task's uploaded payload, sent along (workers do not see our disk)."""
        blob_id = spec.parameters.get("blob_id")
        if spec.type_path != CALLABLE_TYPE or not isinstance(blob_id, str):
            return None
        path = os.path.join(spec.blob_dir, os.path.basename(blob_id))
        data = await asyncio.to_thread(read_bytes, path)
        if len(data) <= INLINE_BLOB_MAX:
            return data
        return await client.scatter(data, hash=False)

    def _options(self, job: _Job) -> dict[str, Any]:
        return {
            "key": job.key,
            "topic": self.topic,
            "grace": self.kill_grace_seconds,
            "memory_limit": self.worker_memory_limit,
            "max_tasks": self.max_tasks_per_worker,
            "idle_seconds": self.idle_seconds,
            "nice": self.nice,
            "log_tail_max": self.log_tail_max,
            "env_remove": list(self.env_remove),
        }

    async def _until_end(self, job: _Job) -> object:
        """The attempt's outcome, ``_RESUBMIT``, or ``TaskKilled`` once its processes are gone."""
        settle = asyncio.ensure_future(settled(job.future))
        woken = asyncio.ensure_future(job.wake.wait())
        try:
            await asyncio.wait({settle, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
        if job.killed or job.lost is not None:
            return await self._stop(job, settle)
        status, payload = settle.result()
        if status == "finished":
            return await self._outcome(job, payload)
        if status == "cancelled" and not job.started and payload in RESUBMIT_REASONS:
            return _RESUBMIT  # the scheduler went away before the task began: it waits
        where = f" on Dask worker {job.worker}" if job.worker else ""
        if status == "cancelled":
            message = f"the Dask task was cancelled ({payload}) while it ran{where}"
            return failed(WORKER_CRASHED, message)
        if "KilledWorker" in payload:
            return failed(WORKER_CRASHED, f"Dask workers died while running the task: {payload}")
        return failed(WORKER_CRASHED, f"Dask could not run the task{where}: {payload}")

    async def _stop(self, job: _Job, settle: asyncio.Future[tuple[str, Any]]) -> Outcome:
        """Stop a killed attempt (``TaskKilled``) or one whose worker was lost (an outcome)."""
        started = job.started and job.lost is None
        await self._stop_remote(job, cancel=not started)
        if started:  # its Dask task ends once the child is gone: keep the log's tail
            with contextlib.suppress(Exception):
                status, data = await asyncio.wait_for(asyncio.shield(settle), KILL_WAIT_SECONDS)
                if status == "finished":
                    header, _, tail = _dasktask.decode_frame(data)
                    await job.log.finish(int(header.get("log_chunks") or 0), tail)
        settle.cancel()
        if job.killed:
            raise TaskKilled(f"task {job.spec.task_id} was killed")
        return failed(WORKER_CRASHED, f"Dask worker {job.lost} was lost while running the task")

    async def _stop_remote(self, job: _Job, cancel: bool) -> None:
        """Kill the attempt where it runs (everywhere, if we do not know where yet)."""
        client, future = self.client, job.future
        if client is None or future is None or client.status != "running":
            return
        workers = [job.worker] if job.worker and job.lost is None else None
        bound = self.kill_grace_seconds + KILL_WAIT_SECONDS
        try:
            run = client.run(
                _dasktask.kill_task, job.key, self.kill_grace_seconds, workers=workers,
                on_error="ignore",
            )  # fmt: skip
            await asyncio.wait_for(run, bound)
            if cancel:
                await client.cancel([future], force=True)
        except Exception as exc:
            log.warning("jupyter-tasks: could not stop task %s: %s", job.spec.task_id, exc)

    def _release(self, job: _Job) -> None:
        future, job.future = job.future, None
        if future is not None:
            with contextlib.suppress(Exception):
                future.release()

    async def _outcome(self, job: _Job, data: Any) -> Outcome:
        """Decode the frame: write the log's tail and a large result to disk (bytes only)."""
        try:
            header, result, tail = _dasktask.decode_frame(data)
        except (ValueError, KeyError, TypeError) as exc:
            return failed(WORKER_CRASHED, f"the Dask worker's answer was malformed: {exc}")
        job.worker = job.worker or header.get("worker")
        await job.log.finish(int(header.get("log_chunks") or 0), tail)
        if job.killed:
            raise TaskKilled(f"task {job.spec.task_id} was killed")
        return await frame_outcome(job.spec, header, result)
