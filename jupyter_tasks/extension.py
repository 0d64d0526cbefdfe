"""The Jupyter Server extension: configuration, wiring, start and stop, the kernels' environment.

``TasksApp`` owns one ``Orchestrator``.  While the server initialises it only
makes the kernel credential and sets the kernels' environment; the engine
(task type registry, executor, store, workers) is built and started once the
server's event loop runs and the server already answers requests, so loading
the extension adds little to server start.  Requests that arrive before the
engine is up wait for it; ``/tasks/health`` answers 503 until then, and every
route answers 503 with the reason if it cannot start.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join
from traitlets import (
    Bool,
    CaselessStrEnum,
    Float,
    Int,
    List,
    TraitError,
    Unicode,
    default,
    validate,
)

from ._version import __version__
from .auth import KernelTokenIdentityProvider, new_kernel_token

if TYPE_CHECKING:
    from .executors.base import Executor
    from .orchestrator import EngineConfig, Orchestrator

URL_ENV = "JUPYTER_TASKS_URL"
TOKEN_ENV = "JUPYTER_TASKS_TOKEN"

_WILDCARD_HOSTS = {"", "0.0.0.0", "localhost", "*"}
#: Seconds between starts of an engine that failed to start (a full disk or a read-only
#: database may be fixed meanwhile); requests and /tasks/health start it again.
START_RETRY_SECONDS = 2.0


class EngineStartError(RuntimeError):
    """The engine could not start (bad ``db_path``, executor failure); the API answers 503."""


class TasksApp(ExtensionApp):
    """Background tasks for Jupyter: the ``/tasks`` REST API, its event stream and its engine."""

    name = "jupyter_tasks"
    description = "Background tasks for Jupyter: a task queue behind the /tasks REST API."
    version = __version__
    load_other_extensions = True
    open_browser = False

    max_workers = Int(
        help="How many tasks run at once (worker processes). Default: the number of CPUs."
    ).tag(config=True)

    max_queue_size = Int(
        10_000,
        help="Tasks that may wait in the queue; beyond it, submits answer 503 with Retry-After.",
    ).tag(config=True)

    db_path = Unicode(
        help="The SQLite file holding tasks, results and logs (results and blobs live beside it). "
        "Default: <Jupyter data dir>/jupyter_tasks/tasks.db. Use a local disk: SQLite's WAL "
        "mode does not work on network file systems."
    ).tag(config=True)

    sqlite_synchronous = CaselessStrEnum(
        ["NORMAL", "FULL"],
        default_value="NORMAL",
        help="SQLite 'synchronous' setting. NORMAL loses nothing on a process crash; FULL "
        "also survives power loss and OS crashes, at a fraction of the commit rate.",
    ).tag(config=True)

    default_timeout_seconds = Int(
        None,
        allow_none=True,
        help="Timeout for tasks that do not set timeout_seconds. None: no timeout.",
    ).tag(config=True)

    result_max_bytes = Int(
        1 << 30, help="Largest pickled result kept; a larger one fails the task (ResultTooLarge)."
    ).tag(config=True)

    log_max_bytes = Int(10 << 20, help="Log bytes kept per task; beyond it the tail is kept.").tag(
        config=True
    )

    max_body_bytes = Int(
        1 << 20, help="Largest request body of POST /tasks (and of rerun/cancel); larger -> 413."
    ).tag(config=True)

    max_batch_body_bytes = Int(
        64 << 20,
        help="Largest request body of POST /tasks/batch (up to 10,000 requests); larger -> 413.",
    ).tag(config=True)

    max_blob_bytes = Int(
        2 << 30,
        help="Largest upload to POST /tasks/blobs (streamed to disk, never held in memory); "
        "larger -> 413.",
    ).tag(config=True)

    retention_seconds = Int(
        7 * 24 * 3600,
        help="Finished tasks (with their results, logs and blobs) are forgotten this long "
        "after they finish.",
    ).tag(config=True)

    worker_memory_limit = Int(
        help="Bytes of resident memory a task's process tree may use before it is killed "
        "(MemoryLimitExceeded). Default: 80% of physical memory. 0: no limit."
    ).tag(config=True)

    max_tasks_per_worker = Int(
        0, help="Replace a worker process after this many tasks. 0: never."
    ).tag(config=True)

    kill_grace_seconds = Float(
        2.0,
        help="On timeout or cancel a task gets SIGTERM, then SIGKILL after this many seconds.",
    ).tag(config=True)

    allowed_task_types = List(
        Unicode(),
        default_value=None,
        allow_none=True,
        help="Task types this server runs (e.g. ['python', 'callable'] to switch 'shell' off). "
        "None: every registered type. A refused type answers 400 like an unknown one.",
    ).tag(config=True)

    executor = Unicode(
        "local",
        help="Where tasks run: 'local' (worker processes on this machine), 'dask' (a "
        "dask.distributed cluster, see dask_address) or the import path of an Executor "
        "subclass ('package.module:Class'), built with Class.from_config(config, "
        "dask_address) when it has that class method, else with no arguments.",
    ).tag(config=True)

    dask_address = Unicode(
        None,
        allow_none=True,
        help="Scheduler address for executor='dask' (e.g. 'tcp://10.0.0.5:8786'). "
        "None: a LocalCluster.",
    ).tag(config=True)

    gc_freeze_at_start = Bool(
        True,
        help="Once the engine has started, move every object then alive (the server's "
        "modules, classes and settings, which live as long as it does) out of the cyclic "
        "garbage collector's sight with gc.freeze(). Its full collections then skip them: "
        "under a burst of tasks they come far cheaper (a JupyterLab server holds some "
        "200,000 such objects, 0.25 s of collecting each time on a small machine), and so "
        "do the pauses every request waits through. Process-wide; undone when the "
        "extension stops. False leaves the collector alone.",
    ).tag(config=True)

    @default("max_workers")
    def _default_max_workers(self) -> int:
        return os.cpu_count() or 1

    @default("db_path")
    def _default_db_path(self) -> str:
        return os.path.join(self.data_dir, "jupyter_tasks", "tasks.db")

    @default("worker_memory_limit")
    def _default_worker_memory_limit(self) -> int:
        import psutil

        return int(psutil.virtual_memory().total * 0.8)

    @validate("max_workers", "max_queue_size")
    def _validate_at_least_one(self, proposal: dict[str, Any]) -> int:
        return _at_least(proposal, 1)

    @validate("result_max_bytes", "log_max_bytes", "retention_seconds")
    def _validate_positive(self, proposal: dict[str, Any]) -> int:
        return _at_least(proposal, 1)

    @validate("max_body_bytes", "max_batch_body_bytes", "max_blob_bytes")
    def _validate_body_limit(self, proposal: dict[str, Any]) -> int:
        return _at_least(proposal, 1024)

    @validate("worker_memory_limit", "max_tasks_per_worker")
    def _validate_not_negative(self, proposal: dict[str, Any]) -> int:
        return _at_least(proposal, 0)

    @validate("default_timeout_seconds")
    def _validate_timeout(self, proposal: dict[str, Any]) -> int | None:
        if proposal["value"] is None:
            return None
        return _at_least(proposal, 1)

    @validate("kill_grace_seconds")
    def _validate_grace(self, proposal: dict[str, Any]) -> float:
        value = float(proposal["value"])
        if not 0 <= value <= 3600:
            raise TraitError(f"kill_grace_seconds must be in 0..3600, not {value}")
        return value

    @validate("executor")
    def _validate_executor(self, proposal: dict[str, Any]) -> str:
        value = str(proposal["value"]).strip()
        if value in ("local", "dask") or re.fullmatch(r"[A-Za-z_][\w.]*[.:][A-Za-z_]\w*", value):
            return value
        raise TraitError(
            f"executor must be 'local', 'dask' or an import path like 'pkg.mod:Class', "
            f"not {value!r}"
        )

    # -- lifecycle ---------------------------------------------------------------------------

    #: Built when the engine starts; None before (and when it could not be built).
    orchestrator: Orchestrator | None = None
    kernel_token = ""
    _loaded = False
    _stopping = False
    _start_task: asyncio.Future[None] | None = None
    _start_failed_at = 0.0
    _froze = False

    def initialize_settings(self) -> None:
        """The kernel credential and the kernels' environment (the engine comes later)."""
        self._saved_env: dict[str, str | None] = {}
        self.event_sockets: set[Any] = set()
        self.kernel_token = new_kernel_token()
        assert self.serverapp is not None
        self.settings["jupyter_tasks_identity"] = KernelTokenIdentityProvider(
            self.serverapp.identity_provider, self.kernel_token
        )
        self._set_kernel_env()
        self._loaded = True

    def initialize_handlers(self) -> None:
        """Add the ``/tasks`` routes (imported here: the server may not need them at all)."""
        from .handlers import default_handlers

        self.handlers.extend(default_handlers)

    def engine_config(self) -> EngineConfig:
        """The traits, mapped one to one onto the engine's settings."""
        from .orchestrator import EngineConfig

        assert self.serverapp is not None
        return EngineConfig(
            db_path=os.path.abspath(os.path.expanduser(self.db_path)),
            root_dir=os.path.abspath(os.path.expanduser(self.serverapp.root_dir)),
            max_workers=self.max_workers,
            max_queue_size=self.max_queue_size,
            sqlite_synchronous=self.sqlite_synchronous.upper(),
            default_timeout_seconds=self.default_timeout_seconds,
            result_max_bytes=self.result_max_bytes,
            log_max_bytes=self.log_max_bytes,
            retention_seconds=self.retention_seconds,
            worker_memory_limit=self.worker_memory_limit,
            max_tasks_per_worker=self.max_tasks_per_worker,
            kill_grace_seconds=self.kill_grace_seconds,
            allowed_task_types=(
                None if self.allowed_task_types is None else list(self.allowed_task_types)
            ),
        )

    def _make_executor(self, config: EngineConfig) -> Executor:
        """The executor the ``executor`` trait names (built by the engine's one factory)."""
        from .executors.factory import ExecutorConfigError, make_executor

        try:
            return make_executor(self.executor, config, self.dask_address)
        except ExecutorConfigError as exc:
            raise EngineStartError(f"TasksApp.executor={self.executor!r}: {exc}") from exc

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """Runs once the server's loop is running: final URL for kernels, then the engine."""
        if not self._loaded:
            return  # loading failed and was logged; the routes are not there either
        self._set_kernel_env()
        await self.ensure_started()

    def ensure_started(self) -> asyncio.Future[None]:
        """Start the engine once; every caller awaits the same start.

        A start that failed is made again, at most every ``START_RETRY_SECONDS``.
        """
        task = self._start_task
        if task is None or (
            self.start_error is not None
            and not self._stopping
            and time.monotonic() - self._start_failed_at >= START_RETRY_SECONDS
        ):
            task = self._start_task = asyncio.ensure_future(self._start_engine())
        return task

    @property
    def start_error(self) -> str | None:
        """Why the last start of the engine failed; None while it starts or once it runs."""
        task = self._start_task
        if task is None or not task.done() or task.cancelled():
            return None
        exc = task.exception()
        return None if exc is None else str(exc)

    async def _start_engine(self) -> None:
        if not self._loaded:
            raise EngineStartError("the extension did not load; see the server's log")
        try:
            self.orchestrator = await asyncio.to_thread(self._build_engine)
            await self.orchestrator.start()
        except Exception as exc:
            first = not self._start_failed_at
            self._start_failed_at = time.monotonic()
            await self._discard_engine()
            db_path = Path(os.path.abspath(os.path.expanduser(self.db_path)))
            reason = f"{exc}{await asyncio.to_thread(_disk_hint, db_path)}"
            self.log.error(
                "jupyter_tasks: the task engine failed to start: %s", reason, exc_info=first
            )
            raise EngineStartError(f"the task engine failed to start: {reason}") from exc
        self.log.info("jupyter_tasks: task engine started (db %s)", self.db_path)
        self._freeze_startup_objects()

    def _freeze_startup_objects(self) -> None:
        """``gc_freeze_at_start``: once, unless someone else froze the collector already.

        No collection first (unless a start failed before): a started server holds a few
        hundred unreachable objects at most, a full collection would pause it a quarter of
        a second.  What is in flight then (requests that waited for the start) and later
        dies in a cycle is not reclaimed until the extension stops: a few requests' worth.
        """
        if self.gc_freeze_at_start and not self._froze and gc.get_freeze_count() == 0:
            if self._start_failed_at:
                gc.collect()  # what the failed start left (an engine, tracebacks) goes first
            gc.freeze()
            self._froze = True

    def _build_engine(self) -> Orchestrator:
        """Runs on a thread: the imports and the task type registry cost a few hundred ms of
        CPU, and the server is answering its first requests meanwhile."""
        from .orchestrator import Orchestrator

        config = self.engine_config()
        return Orchestrator(config, executor=self._make_executor(config))

    async def _discard_engine(self) -> None:
        """Release what a failed start left open (workers, the database): a retry starts clean."""
        orchestrator, self.orchestrator = self.orchestrator, None
        if orchestrator is None:
            return
        for part in (orchestrator.executor.stop, orchestrator.store.close):
            with contextlib.suppress(Exception):
                await part()

    async def store_problem(self) -> str | None:
        """Why the task database takes no writes now, or None while it does.

        One small write answers (the owner's heartbeat, through the store's usual commit):
        a full disk or a read-only database shows here as it happens, and so does its end.
        """
        from .errors import StoreUnavailable

        orchestrator = self.orchestrator
        if orchestrator is None:
            return "the task engine is not running"
        try:
            await orchestrator.store.heartbeat(orchestrator.owner.owner_id, time.time())
        except StoreUnavailable as exc:
            return f"{exc}{await asyncio.to_thread(_disk_hint, orchestrator.store.db_path)}"
        return None

    @property
    def engine_running(self) -> bool:
        """True once the engine started successfully (and until it stops)."""
        task = self._start_task
        return task is not None and task.done() and not task.cancelled() and not task.exception()

    async def stop_extension(self) -> None:
        """Close event streams, stop the engine (workers, loops), restore the environment."""
        self._stopping = True
        for socket in list(getattr(self, "event_sockets", ())):
            socket.close(1001, "server shutting down")
        task = self._start_task
        if task is not None and not task.done():
            # Let a start in progress finish, so that stop() knows every worker it started.
            done, _ = await asyncio.wait({task}, timeout=60)
            if not done:
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        try:
            if self.orchestrator is not None:
                await self.orchestrator.stop()
        except Exception:  # a full or read-only disk must not keep the server from exiting
            self.log.exception("jupyter_tasks: the task engine did not stop cleanly")
        finally:
            self._restore_kernel_env()
            if self._froze:
                self._froze = False
                gc.unfreeze()

    # -- the kernels' environment -------------------------------------------------------------

    def kernel_url(self) -> str:
        """The server's URL as a kernel on this machine reaches it, with base_url."""
        app = self.serverapp
        assert app is not None
        if app.sock:
            from urllib.parse import quote

            return f"http+unix://{quote(app.sock, safe='')}{app.base_url}"
        host = app.ip
        if host in _WILDCARD_HOSTS:
            host = "127.0.0.1"
        elif host == "::":
            host = "[::1]"
        elif ":" in host:
            host = f"[{host}]"
        scheme = "https" if app.certfile else "http"
        return url_path_join(f"{scheme}://{host}:{app.port}", app.base_url)

    def _set_kernel_env(self) -> None:
        """Kernels inherit the server's environment: this is how they find the API."""
        for name, value in ((URL_ENV, self.kernel_url()), (TOKEN_ENV, self.kernel_token)):
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def _restore_kernel_env(self) -> None:
        saved: dict[str, str | None] = getattr(self, "_saved_env", {})
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        saved.clear()


def _disk_hint(db_path: Path) -> str:
    """What the file system says of the database: a read-only or a full one, else nothing."""
    directory = db_path.parent
    try:
        stats = os.statvfs(directory)
    except OSError:
        return ""
    if stats.f_flag & os.ST_RDONLY:
        return f" ({directory} is on a read-only file system)"
    if stats.f_bavail == 0:
        return f" (no space left on the device of {directory})"
    for path in (db_path, db_path.with_name(db_path.name + "-wal"), directory):
        if path.exists() and not os.access(path, os.W_OK):
            return f" ({path} is read-only)"
    return ""


def _at_least(proposal: dict[str, Any], minimum: int) -> int:
    value = proposal["value"]
    if not isinstance(value, int) or value < minimum:
        name = proposal["trait"].name
        raise TraitError(f"TasksApp.{name} must be an integer >= {minimum}, not {value!r}")
    return value
