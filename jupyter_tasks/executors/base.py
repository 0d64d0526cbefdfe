"""The one small interface between the orchestrator and whatever runs tasks.

The orchestrator owns lifecycle, timeouts and the store; an executor owns
processes.  It is handed a ``RunSpec`` (plain data, JSON-able), runs it
somewhere, and reports an ``Outcome`` of plain data: the server never sees a
user object, only the pickled bytes' location and a JSON preview.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..models import TaskError

#: Called (on the event loop) when a running task reports progress.
ProgressCallback = Callable[[float | None, str | None], None]
#: The same for a run of a chunk: its task id first.
ChunkProgressCallback = Callable[[str, float | None, str | None], None]


@dataclass(frozen=True, slots=True)
class RunSpec:
    """Everything a worker needs to run one attempt of a task."""

    task_id: str
    attempt: int
    task_type: str  #: registered name, for messages
    type_path: str  #: "module:Class" of the TaskType; the worker imports it
    parameters: dict[str, Any]
    interpreter: str  #: Python executable whose worker pool runs the task
    root_dir: str  #: the server's root directory (cwd default, on sys.path)
    log_path: str  #: the task's log file; stdout/stderr of the task go there (appended)
    result_path: str  #: where a large pickled result is written
    blob_dir: str  #: where uploaded blobs live (``callable`` payloads)
    result_max_bytes: int
    inline_result_max: int = 64 * 1024  #: pickles up to this size come back in the message
    priority: int = 1  #: 1..10, for executors that schedule elsewhere (Dask)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended.  ``ok`` with a result, or not ``ok`` with an error."""

    ok: bool
    error: TaskError | None = None
    preview: dict[str, Any] | None = None  #: {"type", "repr", "value"?}
    result_size: int = 0
    result_inline: bytes | None = None  #: the pickle itself when small
    result_file: str | None = None  #: or the file the worker wrote it to
    #: False when the attempt left the task's log as it was: its length needs no check.
    log_written: bool = True


class TaskKilled(Exception):
    """Raised by ``Executor.run`` when the attempt was stopped by ``Executor.kill``."""


@dataclass(frozen=True)
class ExecutorHealth:
    """What ``/tasks/health`` reports of the executor."""

    healthy: bool
    workers: int
    detail: str = ""


class Executor(abc.ABC):
    """Runs task attempts; knows processes, not the store or HTTP."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Start (warm up) workers; return quickly, never block the loop."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop every worker and whatever they run; nothing may be left behind."""

    @abc.abstractmethod
    async def run(self, spec: RunSpec, on_progress: ProgressCallback) -> Outcome:
        """Run one attempt to its end.

        Returns an ``Outcome`` for anything the task itself did, crashes included
        (``WorkerCrashed``, ``MemoryLimitExceeded``, ``ResultTooLarge``); raises
        ``TaskKilled`` only when ``kill`` stopped it.
        """

    async def run_chunk(
        self,
        specs: list[RunSpec],
        on_progress: ChunkProgressCallback,
        on_begin: Callable[[str], None],
        on_end: Callable[[str, Outcome | None], None],
    ) -> list[str] | None:
        """Run ``specs`` one after another on one worker, with one request for them all.

        ``on_begin(task_id)`` is called when a run begins (as far as the server can tell:
        when the one before it ended), ``on_end(task_id, outcome)`` when it ended (None:
        ``kill`` stopped it).  Returns the task ids of the runs that never began, in
        order: after a ``kill`` of one of them or of the run before them, a crash, or
        changed code; the caller runs those one by one.  None: this executor has no such
        requests (the default), and the caller runs them all one by one.
        """
        return None

    def hold(self, spec: RunSpec, on_progress: ProgressCallback) -> Callable[[], None] | None:
        """Hand ``spec`` to an idle worker now; it begins only once ``go()`` is called.

        ``go`` may be called from any thread: the store calls it right after the commit
        that made the task durable, so the run begins without waiting for the event
        loop.  ``run(spec)`` then awaits that run.  If ``go`` is never to be called,
        ``drop_hold`` ends the hold.  None (the default) when the executor cannot hold
        a run at once; ``run`` then starts it as usual.
        """
        return None

    def drop_hold(self, task_id: str) -> None:
        """The held run of ``task_id`` must never begin: end whatever holds it."""
        return None

    @abc.abstractmethod
    async def kill(self, task_id: str) -> None:
        """Stop a running attempt: SIGTERM, then SIGKILL after the grace period.

        Returns once the task's processes are gone; a no-op for unknown ids.
        """

    @abc.abstractmethod
    def health(self) -> ExecutorHealth:
        """Cheap, synchronous health summary."""

    def live_log(self, task_id: str) -> str | None:
        """A file holding a running task's output not yet in its log, if the executor has one.

        The task's output so far is its log followed by this file's content.  None (the
        default) means the log itself is up to date.
        """
        return None
