"""The kernel API: find the server, submit work, get handles back.

``import jupyter_tasks as jt`` then ``jt.run(fn, *args, **kwargs)``.  The
first call finds the server: ``JUPYTER_TASKS_URL``/``JUPYTER_TASKS_TOKEN``
(set by the server extension for its kernels), then JupyterHub's variables,
then the parent server's runtime file; with no server at all, an engine runs
inside this process.  ``jt.connect(url, token)`` chooses explicitly.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .discovery import discover
from .errors import TaskNotFound, TasksError
from .handles import TaskDict, TaskGroup, TaskHandle
from .transport import (
    BATCH_INLINE_BUDGET,
    Backend,
    HttpBackend,
    ListQuery,
    LoopThread,
    pack_callable,
)

if TYPE_CHECKING:
    from .live import Hub
    from .widget import Board

__all__ = ["Client", "Mapper", "Runner", "board", "connect", "get", "map", "run", "submit", "tasks"]

MAX_BATCH = 10_000
PAGE = 1000


@dataclass(frozen=True)
class Options:
    """How a task runs, apart from what it runs (so ``fn`` keeps all its keyword names)."""

    description: str | None = None
    priority: int = 1
    timeout: float | None = None
    retries: int = 0
    tags: tuple[str, ...] = ()

    def merged(self, **changes: Any) -> Options:
        """A copy with the given (non-None) fields replaced."""
        given = {k: v for k, v in changes.items() if v is not None}
        if "tags" in given:
            given["tags"] = (
                (given["tags"],) if isinstance(given["tags"], str) else tuple(given["tags"])
            )
        return dataclasses.replace(self, **given)

    def request(self, task_type: str, description: str, parameters: TaskDict) -> TaskDict:
        """The TaskRequest JSON."""
        request: TaskDict = {
            "task_type": task_type,
            "description": description,
            "parameters": parameters,
            "priority": self.priority,
            "max_retries": self.retries,
            "tags": list(self.tags),
        }
        if self.timeout is not None:
            request["timeout_seconds"] = max(1, math.ceil(self.timeout))
        return request


def _short(value: Any) -> str:
    """A cheap, bounded label for an argument (never the repr of a 200 MB object)."""
    if value is None or isinstance(value, (bool, int, float, complex)):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 24 else value[:23] + "…")
    return f"<{type(value).__name__}>"


def describe_call(fn: Any, args: Iterable[Any], kwargs: Mapping[str, Any]) -> str:
    """``train(<DataFrame>, epochs=5)``: the default description of a call."""
    if isinstance(fn, functools.partial):  # name the function, not the wrapper
        args, kwargs = (*fn.args, *args), {**fn.keywords, **kwargs}
        fn = fn.func
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    parts = [_short(a) for a in args] + [f"{k}={_short(v)}" for k, v in kwargs.items()]
    text = f"{name}({', '.join(parts)})"
    return text if len(text) <= 200 else text[:199] + "…"


class Client:
    """A connection to one tasks API (a server, or the engine in this process)."""

    def __init__(self, backend: Backend, loop: LoopThread) -> None:
        self.backend = backend
        self.loop = loop
        self.pool = ThreadPoolExecutor(4, thread_name_prefix="jupyter-tasks")
        self._hub: Hub | None = None
        self._lock = threading.RLock()  # handle() creates handles, which start the hub
        self._handles: weakref.WeakValueDictionary[str, TaskHandle] = weakref.WeakValueDictionary()

    @classmethod
    def to_server(cls, url: str, token: str | None = None) -> Client:
        """A client of the server at ``url`` (its base URL, with or without ``tasks``)."""
        url = url.rstrip("/")
        if url.endswith("/tasks"):
            url = url[: -len("/tasks")]
        return cls(HttpBackend(url + "/", token), LoopThread())

    @classmethod
    def in_process(cls, db_path: str | None = None) -> Client:
        """A client of an engine running in this process."""
        from .embedded import EmbeddedBackend

        loop = LoopThread()
        try:
            return cls(EmbeddedBackend(loop, db_path), loop)
        except Exception as exc:
            loop.stop()
            raise TasksError(
                f"no Jupyter server found, and the in-process engine could not start: {exc}"
            ) from exc

    @property
    def hub(self) -> Hub:
        """The shared live subscription, started on first use."""
        with self._lock:
            if self._hub is None:
                from .live import Hub

                self._hub = Hub(self.backend, self.loop)
                self._hub.start()
            return self._hub

    def handle(self, task: TaskDict) -> TaskHandle:
        """The one handle of a task in this client (so rows and waits share state)."""
        with self._lock:
            handle = self._handles.get(task["task_id"])
            if handle is None:
                handle = TaskHandle(self, task)
                self._handles[handle.task_id] = handle
                return handle
        handle.update(task)
        return handle

    # -- the API ----------------------------------------------------------------------------

    def submit(
        self,
        task_type: str,
        description: str,
        parameters: TaskDict | None = None,
        *,
        priority: int = 1,
        timeout_seconds: float | None = None,
        max_retries: int = 0,
        tags: Iterable[str] = (),
    ) -> TaskHandle:
        """Submit a task of any type; returns its handle at once."""
        opts = Options(None, priority, timeout_seconds, max_retries, tuple(tags))
        return self.handle(
            self.backend.submit(opts.request(task_type, description, parameters or {}))
        )

    @property
    def run(self) -> Runner:
        """``client.run(fn, *args, **kwargs)``, like ``jt.run``."""
        return Runner(self)

    @property
    def map(self) -> Mapper:
        """``client.map(fn, iterable)``, like ``jt.map``."""
        return Mapper(self)

    def get(self, task_id: str) -> TaskHandle:
        """The handle of an existing task, by id or by a unique prefix of it."""
        task_id = task_id.strip().lower()
        if len(task_id) == 32:
            return self.handle(self.backend.get(task_id))
        if len(task_id) < 4:
            raise TaskNotFound(task_id)
        matches = [
            t for t in self._all(ListQuery(limit=PAGE), PAGE) if t["task_id"].startswith(task_id)
        ]
        if not matches:
            raise TaskNotFound(task_id)
        if len(matches) > 1:
            raise TasksError(f"task id prefix {task_id!r} is ambiguous ({len(matches)} tasks)")
        return self.handle(matches[0])

    def _all(self, query: ListQuery, limit: int | None) -> list[TaskDict]:
        out: list[TaskDict] = []
        cursor = None
        while limit is None or len(out) < limit:
            page = PAGE if limit is None else min(PAGE, limit - len(out))
            tasks, cursor = self.backend.list(dataclasses.replace(query, limit=page, cursor=cursor))
            out.extend(tasks)
            if not cursor or not tasks:
                break
        return out

    def tasks(
        self,
        status: str | Iterable[str] | None = None,
        *,
        group: str | None = None,
        tag: str | None = None,
        task_type: str | None = None,
        limit: int | None = 100,
    ) -> TaskGroup:
        """Tasks newest first; with ``group``, every task of that sweep in input order."""
        statuses = (status,) if isinstance(status, str) else tuple(status or ())
        query = ListQuery(statuses, task_type, group, tag)
        if group is not None:
            found = self._all(query, None)
            found.reverse()  # the server lists newest first; a batch is created in input order
            return TaskGroup(self, [self.handle(t) for t in found], group)
        return TaskGroup(self, [self.handle(t) for t in self._all(query, limit)])

    def board(
        self,
        status: str | Iterable[str] | None = None,
        *,
        group: str | None = None,
        tag: str | None = None,
        task_type: str | None = None,
        limit: int = 50,
    ) -> Board:
        """A live board of tasks, newest first, growing as tasks appear."""
        from .widget import Board

        statuses = (status,) if isinstance(status, str) else tuple(status or ())
        return Board(self, ListQuery(statuses, task_type, group, tag, limit=limit))

    def health(self) -> TaskDict:
        """The server's ``/tasks/health`` answer."""
        return self.backend.health()

    def close(self) -> None:
        """Stop the subscription, the connection and (in-process) the engine."""
        if self._hub is not None:
            self._hub.close()
        self.backend.close()
        self.loop.stop()
        self.pool.shutdown(wait=False)

    def __repr__(self) -> str:
        return f"<jupyter_tasks.Client {self.backend.label}>"


class Runner:
    """``jt.run(fn, *args, **kwargs)``; ``jt.run.options(priority=5)(fn, ...)`` sets options."""

    def __init__(self, client: Client | None = None, options: Options | None = None) -> None:
        self._client = client
        self._options = options or Options()

    def options(
        self,
        *,
        description: str | None = None,
        priority: int | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        tags: str | Iterable[str] | None = None,
    ) -> Runner:
        """A runner with these options (``timeout`` in seconds; ``retries`` after failures)."""
        changes = dict(description=description, priority=priority, timeout=timeout)
        merged = self._options.merged(**changes, retries=retries, tags=tags)
        return type(self)(self._client, merged)

    def __call__(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskHandle:
        """Run ``fn(*args, **kwargs)`` in a worker of this interpreter; returns its handle."""
        client = self._client or default_client()
        params = pack_callable(client.backend, fn, args, kwargs)
        description = self._options.description or describe_call(fn, args, kwargs)
        return client.handle(
            client.backend.submit(self._options.request("callable", description, params))
        )

    def __repr__(self) -> str:
        return f"<jupyter_tasks run {self._options}>"


class Mapper(Runner):
    """``jt.map(fn, xs[, ys...])``: one task per item, one batch request, one group."""

    def __call__(self, fn: Callable[..., Any], /, *iterables: Iterable[Any]) -> TaskGroup:  # type: ignore[override]
        """Run ``fn(x)`` (or ``fn(x, y, ...)``) for every item; results keep input order."""
        if not iterables:
            raise TypeError("jt.map(fn, iterable, ...) needs at least one iterable")
        items = list(zip(*iterables, strict=False))  # shortest wins, as builtins.map
        if not items:
            raise ValueError("jt.map got no items")
        if len(items) > MAX_BATCH:
            raise ValueError(f"jt.map takes up to {MAX_BATCH:,} items per call, not {len(items):,}")
        client = self._client or default_client()
        budget = BATCH_INLINE_BUDGET
        requests = []
        for index, args in enumerate(items):
            params = pack_callable(client.backend, fn, args, {}, inline=budget > 0)
            budget -= len(params.get("pickle_b64", ""))
            if self._options.description:
                description = f"{self._options.description} [{index}]"
            else:
                description = describe_call(fn, args, {})
            requests.append(self._options.request("callable", description, params))
        created = client.backend.submit_batch(requests)
        handles = [client.handle(t) for t in created]
        return TaskGroup(client, handles, created[0].get("group"))


# -- the default client -------------------------------------------------------------------------

_default: Client | None = None
_default_lock = threading.Lock()


def _announce_embedded(client: Client) -> None:
    print(
        "jupyter-tasks: no Jupyter server found; tasks run in local worker processes of "
        f"this kernel (store: {getattr(client.backend, 'db_path', '?')})",
        file=sys.stderr,
    )


def default_client() -> Client:
    """The client the module-level API uses, found on first use."""
    global _default
    with _default_lock:
        if _default is None:
            info = discover()
            if info is not None:
                _default = Client.to_server(info.url, info.token)
            else:
                _default = Client.in_process()
                _announce_embedded(_default)
        return _default


def connect(
    url: str | None = None, token: str | None = None, *, in_process: bool = False
) -> Client:
    """Use the server at ``url`` from now on (``None``: find it again); returns the client.

    ``in_process=True`` runs an engine inside this process instead.  The previous
    client is closed.
    """
    global _default
    with _default_lock:
        old, _default = _default, None
    if old is not None:
        old.close()
    with _default_lock:
        if in_process:
            _default = Client.in_process()
        elif url is not None:
            _default = Client.to_server(url, token)
    return default_client()


def submit(
    task_type: str,
    description: str,
    parameters: TaskDict | None = None,
    *,
    priority: int = 1,
    timeout_seconds: float | None = None,
    max_retries: int = 0,
    tags: Iterable[str] = (),
) -> TaskHandle:
    """Submit a task of any registered type (``python``, ``shell``, ``callable``...)."""
    return default_client().submit(
        task_type,
        description,
        parameters,
        priority=priority,
        timeout_seconds=timeout_seconds,
        max_retries=max_retries,
        tags=tags,
    )


def get(task_id: str) -> TaskHandle:
    """The handle of an existing task (a unique prefix of its id will do)."""
    return default_client().get(task_id)


def tasks(
    status: str | Iterable[str] | None = None,
    *,
    group: str | None = None,
    tag: str | None = None,
    task_type: str | None = None,
    limit: int | None = 100,
) -> TaskGroup:
    """Tasks newest first; ``group=`` gives a sweep back, in input order."""
    return default_client().tasks(status, group=group, tag=tag, task_type=task_type, limit=limit)


def board(
    status: str | Iterable[str] | None = None,
    *,
    group: str | None = None,
    tag: str | None = None,
    task_type: str | None = None,
    limit: int = 50,
) -> Board:
    """A live board of tasks, newest first."""
    return default_client().board(status, group=group, tag=tag, task_type=task_type, limit=limit)


#: ``jt.run(fn, *args, **kwargs)``; options via ``jt.run.options(...)``.
run = Runner()
#: ``jt.map(fn, iterable, ...)``; options via ``jt.map.options(...)``.
map = Mapper()
