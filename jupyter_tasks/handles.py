"""Task handles: what ``jt.run`` and friends return, shaped like ``concurrent.futures``.

A handle holds the latest known state of one task (a Task as JSON).  The
kernel's event subscription keeps it current, so reading ``status`` never
costs a request; ``wait`` blocks on a condition, never polls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

from .errors import InvalidTransition

if TYPE_CHECKING:
    from .client import Client

TaskDict = dict[str, Any]

FINISHED_STATUSES = frozenset({"completed", "failed", "cancelled"})
_RANK = {"created": 0, "running": 1, "completed": 2, "failed": 2, "cancelled": 2}


class RemoteTraceback(Exception):
    """The traceback of the exception raised in the worker, shown as the cause."""

    def __str__(self) -> str:
        return "\n\n" + str(self.args[0]).rstrip()


class TaskFailed(Exception):
    """The task raised (or was stopped by a timeout, a crash...) in its worker."""

    def __init__(
        self,
        task_id: str,
        remote_type: str,
        remote_message: str,
        remote_traceback: str | None = None,
    ) -> None:
        super().__init__(f"{remote_type}: {remote_message} (task {task_id})")
        self.task_id = task_id
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback


class TaskCancelled(concurrent.futures.CancelledError):
    """The task was cancelled before it finished."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} was cancelled")
        self.task_id = task_id


def is_finished(task: TaskDict) -> bool:
    """True when the task reached a status it never leaves."""
    return task.get("status") in FINISHED_STATUSES


def is_newer(current: TaskDict | None, incoming: TaskDict, ordered: bool = False) -> bool:
    """Whether ``incoming`` should replace ``current``.

    Events (``ordered``) arrive in server order and always win, except over a
    final state.  REST answers carry no sequence number, so they win only when
    they are not behind: a later attempt, or the same attempt at least as far along.
    """
    if current is None:
        return True
    if is_finished(current):
        return False
    if ordered:
        return True
    new_key = (incoming.get("attempt", 0), _RANK.get(incoming.get("status", ""), 0))
    old_key = (current.get("attempt", 0), _RANK.get(current.get("status", ""), 0))
    return new_key >= old_key


def raise_for_outcome(task: TaskDict) -> None:
    """Raise ``TaskFailed``/``TaskCancelled`` for a task that did not complete."""
    status = task.get("status")
    if status == "cancelled":
        raise TaskCancelled(task["task_id"])
    if status == "failed":
        error = task.get("error") or {}
        tb = error.get("traceback")
        exc = TaskFailed(task["task_id"], error.get("type", "Error"), error.get("message", ""), tb)
        if tb:
            raise exc from RemoteTraceback(tb)
        raise exc


class TaskHandle:
    """One task: its live state, its result, and a row when displayed."""

    def __init__(self, client: Client, task: TaskDict) -> None:
        self._client = client
        self.task_id: str = task["task_id"]
        self._task = task
        self._cond = threading.Condition()
        self._settled = False
        self._callbacks: list[Callable[[TaskHandle], None]] = []
        self._future: concurrent.futures.Future[None] | None = None
        self.bound_names: list[str] = []
        self._row: Any = None
        if is_finished(task):
            self._settled = True
        else:
            cached = client.hub.watch(self.task_id, self._on_update)
            if cached is not None:
                self._on_update(cached, ordered=False)

    # -- state ---------------------------------------------------------------------------

    @property
    def task(self) -> TaskDict:
        """The latest known Task (JSON form)."""
        return dict(self._task)

    @property
    def status(self) -> str:
        """``created``, ``running``, ``completed``, ``failed`` or ``cancelled``."""
        return str(self._task["status"])

    @property
    def progress(self) -> float | None:
        """Fraction done (0..1) as last reported by the task, or None."""
        value = self._task.get("progress")
        return None if value is None else float(value)

    @property
    def message(self) -> str | None:
        """The task's last progress message."""
        return self._task.get("message")

    @property
    def description(self) -> str:
        """What the task is, as submitted."""
        return str(self._task.get("description", ""))

    @property
    def group(self) -> str | None:
        """The batch id when the task came from ``jt.map``."""
        return self._task.get("group")

    @property
    def error(self) -> TaskDict | None:
        """``{"type", "message", "traceback"}`` when the task failed."""
        return self._task.get("error")

    def done(self) -> bool:
        """True once the task finished (completed, failed or cancelled)."""
        return is_finished(self._task)

    def cancelled(self) -> bool:
        """True when the task was cancelled."""
        return self._task.get("status") == "cancelled"

    def update(self, task: TaskDict, ordered: bool = False) -> None:
        """Take a newer state (from a REST answer) and pass it on to live rows."""
        self._on_update(task, ordered)
        self._client.hub.offer(task)

    def _on_update(self, task: TaskDict, ordered: bool = True) -> None:
        with self._cond:
            if not is_newer(self._task, task, ordered):
                return
            self._task = task
            self._cond.notify_all()
            finished = is_finished(task)
        if finished:
            self._client.hub.unwatch(self.task_id, self._on_update)
            self._client.pool.submit(self._settle)

    def _settle(self) -> None:
        """Run done callbacks (``-o`` bindings) before waiters wake, so they see them."""
        with self._cond:
            if self._settled:
                return
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self._run_callback(callback)
        with self._cond:
            self._settled = True
            self._cond.notify_all()
            future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    def _run_callback(self, callback: Callable[[TaskHandle], None]) -> None:
        try:
            callback(self)
        except Exception as exc:  # a callback's failure must not hide the outcome
            print(f"jupyter-tasks: callback for task {self.task_id} failed: {exc}", file=sys.stderr)

    def add_done_callback(self, fn: Callable[[TaskHandle], None]) -> None:
        """Call ``fn(handle)`` once the task finished (at once if it already has)."""
        with self._cond:
            if not self._settled:
                self._callbacks.append(fn)
                return
        self._run_callback(fn)

    # -- waiting and results ---------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> TaskHandle:
        """Block until the task finished and its ``-o`` bindings are done.

        ``TimeoutError`` after ``timeout`` seconds.
        """
        self._wait_for(lambda: self._settled, timeout)
        return self

    def _wait_for(self, ready: Callable[[], bool], timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not ready():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"task {self.task_id} still {self.status} after {timeout}s")
                self._cond.wait(left)

    def _wait_finished(self, timeout: float | None) -> None:
        """Only the outcome (done callbacks may call ``result()`` themselves)."""
        self._wait_for(lambda: is_finished(self._task), timeout)

    def result(self, timeout: float | None = None) -> Any:
        """The task's return value, unpickled here; raises ``TaskFailed``/``TaskCancelled``.

        Each call fetches the object again (streamed): keep it in a variable.
        """
        self._wait_finished(timeout)
        raise_for_outcome(self._task)
        return self._client.backend.load_result(self.task_id)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The error the task ended with (``TaskFailed``/``TaskCancelled``), or None."""
        self._wait_finished(timeout)
        try:
            raise_for_outcome(self._task)
        except (TaskFailed, TaskCancelled) as exc:
            return exc
        return None

    def preview(self) -> TaskDict:
        """The server's JSON preview of the result: ``{"type", "repr", "value"?}``."""
        return self._client.backend.result_preview(self.task_id)

    def _done_future(self) -> concurrent.futures.Future[None]:
        with self._cond:
            if self._future is None:
                self._future = concurrent.futures.Future()
                if self._settled:
                    self._future.set_result(None)
            return self._future

    def __await__(self) -> Generator[Any, None, Any]:
        return self._async_result().__await__()

    async def _async_result(self) -> Any:
        await asyncio.wrap_future(self._done_future())
        return await asyncio.get_running_loop().run_in_executor(self._client.pool, self.result)

    # -- actions ---------------------------------------------------------------------------

    def cancel(self) -> bool:
        """Ask the server to stop the task; False when it had already finished."""
        if self.done():
            return False
        try:
            self.update(self._client.backend.cancel(self.task_id))
        except InvalidTransition:
            self.refresh()
            return False
        return True

    def refresh(self) -> TaskHandle:
        """Fetch the task's state now (the live subscription normally does this)."""
        self.update(self._client.backend.get(self.task_id))
        return self

    def logs(self, offset: int = 0) -> str:
        """What the task printed (stdout and stderr), from byte ``offset``."""
        chunks: list[bytes] = []
        while True:
            data, next_offset = self._client.backend.logs(self.task_id, offset)
            if not data or next_offset <= offset:
                break
            chunks.append(data)
            offset = next_offset
        return b"".join(chunks).decode("utf-8", "replace")

    # -- display ---------------------------------------------------------------------------

    def __repr__(self) -> str:
        pct = "" if self.progress is None else f" {self.progress:.0%}"
        msg = f" {self.message}" if self.message else ""
        return f"<TaskHandle {self.task_id[:8]} {self.description!r} {self.status}{pct}{msg}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from .widget import widgets_available

        if not widgets_available():
            return {"text/plain": repr(self)}
        if self._row is None:
            from .widget import TaskRow

            self._row = TaskRow(self)
        bundle: dict[str, Any] = self._row.widget._repr_mimebundle_(
            include=include, exclude=exclude
        )
        bundle["text/plain"] = repr(self)
        return bundle


class TaskGroup(Sequence[TaskHandle]):
    """Several tasks handled together: a ``jt.map`` sweep or a ``jt.tasks`` listing."""

    def __init__(
        self, client: Client, handles: list[TaskHandle], group_id: str | None = None
    ) -> None:
        self._client = client
        self.handles = handles
        self.group_id = group_id
        self._row: Any = None

    @overload
    def __getitem__(self, index: int) -> TaskHandle: ...
    @overload
    def __getitem__(self, index: slice) -> list[TaskHandle]: ...
    def __getitem__(self, index: int | slice) -> TaskHandle | list[TaskHandle]:
        return self.handles[index]

    def __len__(self) -> int:
        return len(self.handles)

    @property
    def task_ids(self) -> list[str]:
        """The tasks' ids, in order."""
        return [h.task_id for h in self.handles]

    def counts(self) -> dict[str, int]:
        """How many tasks are in each status."""
        counts = dict.fromkeys(("created", "running", "completed", "failed", "cancelled"), 0)
        for handle in self.handles:
            counts[handle.status] = counts.get(handle.status, 0) + 1
        return counts

    def done(self) -> bool:
        """True once every task finished."""
        return all(h.done() for h in self.handles)

    def wait(self, timeout: float | None = None) -> TaskGroup:
        """Block until every task finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for handle in self.handles:
            handle.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return self

    def results(self, timeout: float | None = None, return_exceptions: bool = False) -> list[Any]:
        """Every task's result in order; the first failure raises unless ``return_exceptions``."""
        self.wait(timeout)
        out: list[Any] = []
        for handle in self.handles:
            try:
                out.append(handle.result())
            except (TaskFailed, TaskCancelled) as exc:
                if not return_exceptions:
                    raise
                out.append(exc)
        return out

    def as_completed(self, timeout: float | None = None) -> Iterator[TaskHandle]:
        """Yield handles as their tasks finish (finished ones first)."""
        finished: queue.SimpleQueue[TaskHandle] = queue.SimpleQueue()
        for handle in self.handles:
            handle.add_done_callback(finished.put)
        deadline = None if timeout is None else time.monotonic() + timeout
        for _ in range(len(self.handles)):
            left = None if deadline is None else deadline - time.monotonic()
            try:
                yield finished.get(timeout=None if left is None else max(0.0, left))
            except queue.Empty:
                raise TimeoutError(f"{self.counts()} after {timeout}s") from None

    def cancel(self) -> int:
        """Cancel every unfinished task; returns how many were cancelled."""
        return sum(1 for h in self.handles if not h.done() and h.cancel())

    def __repr__(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.counts().items() if v)
        label = f" {self.group_id[:8]}" if self.group_id else ""
        return f"<TaskGroup{label} of {len(self.handles)}: {counts or 'empty'}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from .widget import widgets_available

        if not widgets_available():
            return {"text/plain": repr(self)}
        if self._row is None:
            from .widget import GroupRow

            self._row = GroupRow(self)
        bundle: dict[str, Any] = self._row.widget._repr_mimebundle_(
            include=include, exclude=exclude
        )
        bundle["text/plain"] = repr(self)
        return bundle
