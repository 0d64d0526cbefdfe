"""No server at all (VS Code's local kernels, plain IPython, a script): run the engine here.

The same ``Orchestrator`` the server hosts runs on the client's loop thread,
with its SQLite store under the user's Jupyter data directory and local worker
processes.  The store takes leases per owner, so several kernels may share the
file: each runs its own tasks, and a sweep is found again after a restart.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import IO, Any, TypeVar

from .transport import CHUNK_BYTES, ListQuery, LoopThread, TaskDict

T = TypeVar("T")

DB_ENV = "JUPYTER_TASKS_EMBEDDED_DB"


def default_db_path() -> str:
    """``<Jupyter data dir>/jupyter_tasks/kernel.db`` (or ``$JUPYTER_TASKS_EMBEDDED_DB``)."""
    if os.environ.get(DB_ENV):
        return os.path.abspath(os.path.expanduser(os.environ[DB_ENV]))
    from jupyter_core.paths import jupyter_data_dir

    return os.path.join(jupyter_data_dir(), "jupyter_tasks", "kernel.db")


def _at_exit(fn: Callable[[], None]) -> None:
    """Run ``fn`` at exit while thread pools still work (the engine needs them to stop).

    ``atexit`` runs after ``concurrent.futures`` has shut its pools down, so the
    engine could not stop its workers then; threading's own exit hooks run
    earlier, last registered first.
    """
    import concurrent.futures.thread  # noqa: F401 - its hook must be registered before ours

    register = getattr(threading, "_register_atexit", None)
    if register is None:  # pragma: no cover - present since Python 3.9
        atexit.register(fn)
    else:
        register(fn)


class EmbeddedBackend:
    """The tasks API served by an orchestrator inside this process."""

    def __init__(self, loop: LoopThread, db_path: str | None = None) -> None:
        from .orchestrator import EngineConfig, Orchestrator

        self.db_path = db_path or default_db_path()
        os.makedirs(os.path.dirname(self.db_path), exist_ok=True)
        self.label = f"in-process engine ({self.db_path})"
        self._loop = loop
        config = EngineConfig(db_path=self.db_path, root_dir=os.getcwd())
        self._orch = Orchestrator(config)
        self._closed = False
        self._call(self._orch.start(), timeout=120)
        _at_exit(self.close)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self._loop.run(coro, timeout)

    def _request(self, request: TaskDict) -> Any:
        from pydantic import ValidationError

        from .errors import InvalidParameters
        from .models import TaskRequest

        try:
            return TaskRequest.model_validate(request)
        except ValidationError as exc:
            raise InvalidParameters.from_validation(exc) from None

    def submit(self, request: TaskDict) -> TaskDict:
        return self._call(self._orch.submit(self._request(request))).to_json()

    def submit_batch(self, requests: list[TaskDict]) -> list[TaskDict]:
        parsed = [self._request(r) for r in requests]
        return [t.to_json() for t in self._call(self._orch.submit_batch(parsed))]

    def get(self, task_id: str) -> TaskDict:
        return self._call(self._orch.get(task_id)).to_json()

    def list(self, query: ListQuery) -> tuple[list[TaskDict], str | None]:
        from .models import TaskStatus

        statuses = [TaskStatus(s) for s in query.statuses] or None
        tasks, nxt = self._call(
            self._orch.list(
                statuses, query.task_type, query.group, query.tag, query.limit, query.cursor
            )
        )
        return [t.to_json() for t in tasks], nxt

    def cancel(self, task_id: str) -> TaskDict:
        return self._call(self._orch.cancel(task_id)).to_json()

    def delete(self, task_id: str) -> None:
        self._call(self._orch.delete(task_id))

    def result_preview(self, task_id: str) -> TaskDict:
        return dict(self._call(self._orch.result(task_id)).preview)

    def load_result(self, task_id: str) -> Any:
        info = self._call(self._orch.result(task_id))
        if info.inline is not None or info.path is None:
            return pickle.loads(info.inline or b"")
        with open(info.path, "rb") as fh:
            return pickle.load(fh)

    def logs(self, task_id: str, offset: int = 0) -> tuple[bytes, int]:
        data, nxt = self._call(self._orch.logs(task_id, offset))
        return data, nxt

    def upload_blob(self, source: IO[bytes], size: int) -> str:
        writer = self._orch.open_blob()
        try:
            while chunk := source.read(CHUNK_BYTES):
                self._call(writer.write(chunk))
            return self._call(writer.commit())
        except BaseException:
            self._call(writer.abort())
            raise

    def health(self) -> TaskDict:
        return dict(self._orch.health())

    async def events(self) -> AsyncIterator[TaskDict]:
        """Subscribe first, then snapshot, so that nothing falls in between."""
        sub = self._orch.subscribe()
        try:
            tasks: Any = await self._orch.snapshot()
            yield {"event": "snapshot", "tasks": [t.to_json() for t in tasks]}
            async for event in sub:
                yield event
        finally:
            sub.close()

    def close(self) -> None:
        """Stop the engine and its workers (also at interpreter exit)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):  # the loop may already be gone at exit
            self._call(self._orch.stop(), timeout=60)
