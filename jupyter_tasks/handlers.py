"""The ``/tasks`` REST API and event stream: parse, call the orchestrator, serialise.

Every verb carries ``@web.authenticated`` (``@ws_authenticated`` for the
WebSocket) and ``@authorized`` on the ``tasks`` resource: submitting, batches,
blobs and reruns need ``execute`` (they run code), cancel and delete ``write``,
everything else ``read``.  Handlers with a request body stream it, so a body
over its limit is refused (413) after at most that many bytes, and only once
the request is authenticated and authorized.

Domain errors from the engine are mapped to HTTP in one place
(``http_error``); every error answer is JSON ``{"message": ...}``.

The models (pydantic) and the engine are imported on first use, not here:
this module is imported while the server starts, and they would add a fifth
to the CPU time of a bare server start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from http.client import responses
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from jupyter_core.utils import ensure_async
from jupyter_server.auth import decorator
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from .errors import (
    InvalidParameters,
    InvalidTransition,
    QueueFull,
    StoreUnavailable,
    TaskNotFound,
    UnknownTaskType,
)

if TYPE_CHECKING:
    from .models import TaskRequest
    from .orchestrator import BlobWriter, Orchestrator, Subscription

AUTH_RESOURCE = "tasks"
MAX_BATCH = 10_000
MAX_LIST_LIMIT = 1_000
#: WebSocket close code for a subscriber that fell behind: reconnect for a fresh snapshot.
CLOSE_FELL_BEHIND = 4001
_TASK_ID = r"(?P<task_id>[0-9a-f]{32})"
_STATUSES = ("created", "running", "completed", "failed", "cancelled")  # models.TaskStatus
#: Aborts of abandoned uploads still removing their partial file.
_cleanups: set[asyncio.Future[None]] = set()


_Verb = TypeVar("_Verb", bound=Callable[..., Any])


def authorized(action: str) -> Callable[[_Verb], _Verb]:
    """Jupyter Server's ``@authorized(action)`` on the ``tasks`` resource, with its type kept."""
    return cast(Callable[[_Verb], _Verb], decorator.authorized(action, resource=AUTH_RESOURCE))


class TasksHTTPError(web.HTTPError):
    """An ``HTTPError`` that carries response headers (``Retry-After``)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, "%s", message)
        self.message = message
        self.headers = headers or {}


def http_error(exc: BaseException) -> web.HTTPError | None:
    """The one map from domain errors to HTTP answers; None for anything else."""
    if isinstance(exc, TaskNotFound):
        return TasksHTTPError(404, str(exc))
    if isinstance(exc, InvalidTransition):  # NoResult included
        return TasksHTTPError(409, str(exc))
    if isinstance(exc, QueueFull):
        return TasksHTTPError(503, str(exc), {"Retry-After": str(max(1, int(exc.retry_after)))})
    if isinstance(exc, StoreUnavailable):
        return TasksHTTPError(503, str(exc), {"Retry-After": "5"})
    if isinstance(exc, (UnknownTaskType, InvalidParameters)):
        return TasksHTTPError(400, str(exc))
    return None


def error_message(status_code: int, exc: BaseException | None) -> str:
    """The ``message`` of an error answer: the HTTPError's text, never a traceback."""
    if isinstance(exc, TasksHTTPError):
        return exc.message
    if isinstance(exc, web.HTTPError) and exc.log_message:
        try:
            return str(exc.log_message % exc.args) if exc.args else str(exc.log_message)
        except (TypeError, ValueError):
            return str(exc.log_message)
    if exc is not None and not isinstance(exc, web.HTTPError):
        return "Unhandled error"
    return responses.get(status_code, "Unknown HTTP Error")


class TasksHandlerMixin(web.RequestHandler):
    """Identity (server auth plus the kernel token), the engine and JSON errors."""

    auth_resource = AUTH_RESOURCE

    @property
    def identity_provider(self) -> Any:
        """The server's identity provider, also accepting the kernel token (tasks routes only)."""
        return self.settings["jupyter_tasks_identity"]

    @property
    def tasks_app(self) -> Any:
        """The ``TasksApp`` (settings key = the extension's name)."""
        return self.settings["jupyter_tasks"]

    async def engine(self) -> Orchestrator:
        """The running orchestrator; waits while it starts, 503 if it could not start."""
        try:
            await asyncio.shield(self.tasks_app.ensure_started())
        except Exception as exc:
            raise TasksHTTPError(503, str(exc), {"Retry-After": "5"}) from None
        orchestrator: Orchestrator = self.tasks_app.orchestrator
        return orchestrator

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        """Domain errors become their HTTP answer instead of a 500."""
        exc_info = kwargs.get("exc_info") or (None, None, None)
        mapped = http_error(exc_info[1]) if exc_info[1] is not None else None
        if mapped is not None:
            kwargs["exc_info"] = (type(mapped), mapped, exc_info[2])
        else:
            mapped = exc_info[1]
        if isinstance(mapped, web.HTTPError):
            status_code = mapped.status_code
        super().send_error(status_code, **kwargs)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Domain errors are the client's mistake: logged like an HTTPError, no traceback."""
        mapped = http_error(value) if value is not None else None
        if mapped is not None:
            typ, value, tb = type(mapped), mapped, None
        super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """JSON ``{"message": ...}`` for every error, with the error's headers."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        for name, value in getattr(exc, "headers", {}).items():
            self.set_header(name, value)
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": error_message(status_code, exc)}))

    def allowed_methods(self) -> list[str]:
        """The verbs this route implements (for the ``Allow`` header of a 405)."""
        base = web.RequestHandler
        return [m for m in ("GET", "POST", "DELETE") if _overrides(type(self), base, m.lower())]


class TasksHandler(TasksHandlerMixin, APIHandler):
    """Base of the HTTP routes; routes with ``body_limit_trait`` stream their body, capped."""

    #: The body limit: the name of a ``TasksApp`` trait, or None for routes without a body.
    body_limit_trait: ClassVar[str | None] = None
    #: What a body-carrying request must be authorized for before its body is read.
    body_action: ClassVar[str] = "execute"

    def initialize(self, **kwargs: Any) -> None:
        super().initialize(**kwargs)
        self._chunks: list[bytes] = []
        self._received = 0
        self._writer: BlobWriter | None = None  # uploads only

    @property
    def body_limit(self) -> int:
        name = self.body_limit_trait
        return 0 if name is None else int(getattr(self.tasks_app, name))

    async def prepare(self) -> None:  # type: ignore[override]
        """Authenticate, authorize and check the declared size before any body byte is read."""
        await super().prepare()
        if self.body_limit_trait is None or self._finished:
            return  # not streamed: Tornado has read the (server-capped) body already
        if self.request.method not in ("POST", "PUT", "PATCH", "DELETE"):
            return
        if self.current_user is None:
            raise web.HTTPError(403)
        action = self.body_action
        if not await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, action, AUTH_RESOURCE)
        ):
            raise web.HTTPError(403, f"User is not authorized to {action} on resource: tasks.")
        limit = max(self.body_limit, 0)
        declared = self.request.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        # Tornado's own cap (the server's max_body_size, checked against each chunk's declared
        # size before its bytes arrive) answers a bare 400; ours, counted in data_received as
        # the bytes stream in, answers 413. So Tornado's is lifted for these routes.
        self.request.connection.set_max_body_size(1 << 62)  # type: ignore[union-attr]

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        """Keep a small body in memory, up to its limit (larger bodies are blobs)."""
        if self._finished:
            return None
        self._received += len(chunk)
        if self._received > self.body_limit:
            self.send_error(413, exc_info=_exc_info(_too_large(self.body_limit)))
            return None
        self._chunks.append(chunk)
        return None

    def json_body(self) -> dict[str, Any]:
        """The body as a JSON object; 400 naming ``body`` when it is not one."""
        if self._finished:
            raise web.Finish()
        return parse_json_object(b"".join(self._chunks))

    def write_json(self, status: int, value: Any) -> None:
        self.set_status(status)
        self.finish(json.dumps(value, allow_nan=False))

    def task_url(self, task_id: str) -> str:
        return str(url_path_join(self.base_url, "tasks", task_id))

    def cursor(self) -> str | None:
        """The ``cursor`` query (empty = first page); the store checks it is one it gave out."""
        return self.get_argument("cursor", "") or None

    def query_int(self, name: str, default: int, low: int, high: int | None = None) -> int:
        raw = self.get_argument(name, None)
        if raw is None:
            return default
        ok = raw.isascii() and raw.isdigit() and len(raw) <= 18
        if not ok or int(raw) < low or (high is not None and int(raw) > high):
            bounds = f"{low}..{high}" if high is not None else f">= {low}"
            raise InvalidParameters(f"must be an integer {bounds}, not {raw[:40]!r}", field=name)
        return int(raw)


# -- parsing ----------------------------------------------------------------------------------


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Decode and parse ourselves: no 500 on non-UTF-8, NaN or absurd nesting."""
    if not raw.strip():
        raise InvalidParameters("empty; send a JSON object", field="body")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidParameters(f"not UTF-8 (byte {exc.start})", field="body") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidParameters(f"not valid JSON: {exc}", field="body") from None
    if not isinstance(value, dict):
        raise InvalidParameters(f"must be a JSON object, not {_json_kind(value)}", field="body")
    if "\\ud" in text.lower():  # a \uXXXX escape of a UTF-16 surrogate: is it paired?
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidParameters("holds an unpaired UTF-16 surrogate", field="body") from None
    return value


def parse_task_request(value: Any, index: int | None = None) -> TaskRequest:
    """A ``TaskRequest``, or ``InvalidParameters`` naming the first wrong field."""
    from pydantic import ValidationError

    from .models import TaskRequest

    if not isinstance(value, dict):
        raise InvalidParameters(f"must be a JSON object, not {_json_kind(value)}", index=index)
    try:
        return TaskRequest.model_validate(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(part) for part in err["loc"]) or None
        raise InvalidParameters(err["msg"], field=field, index=index) from None


def _overrides(cls: type, base: type, name: str) -> bool:
    """Whether ``cls`` overrides ``base.name``."""
    return getattr(cls, name, None) is not getattr(base, name, None)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def _too_large(limit: int) -> TasksHTTPError:
    return TasksHTTPError(413, f"body: larger than the limit of {limit} bytes")


def _exc_info(exc: BaseException) -> tuple[type[BaseException], BaseException, None]:
    return (type(exc), exc, None)


# -- HTTP routes ------------------------------------------------------------------------------


@web.stream_request_body
class TasksCollectionHandler(TasksHandler):
    """``POST /tasks`` submits one task; ``GET /tasks`` lists them, newest first."""

    body_limit_trait = "max_body_bytes"

    @web.authenticated
    @authorized("execute")
    async def post(self) -> None:
        request = parse_task_request(self.json_body())
        task = await (await self.engine()).submit(request)
        self.set_header("Location", self.task_url(task.task_id))
        self.write_json(201, task.to_json())

    @web.authenticated
    @authorized("read")
    async def get(self) -> None:
        statuses = self.get_arguments("status")
        for status in statuses:
            if status not in _STATUSES:
                raise InvalidParameters(f"must be one of {', '.join(_STATUSES)}", field="status")
        from .models import TaskStatus

        tasks, cursor = await (await self.engine()).list(
            statuses=[TaskStatus(s) for s in statuses] or None,
            task_type=self.get_argument("task_type", None),
            group=self.get_argument("group", None),
            tag=self.get_argument("tag", None),
            limit=self.query_int("limit", 100, 1, MAX_LIST_LIMIT),
            cursor=self.cursor(),
        )
        self.write_json(200, {"tasks": [t.to_json() for t in tasks], "next": cursor})


@web.stream_request_body
class BatchHandler(TasksHandler):
    """``POST /tasks/batch``: all or nothing, in order, one group id."""

    body_limit_trait = "max_batch_body_bytes"

    @web.authenticated
    @authorized("execute")
    async def post(self) -> None:
        body = self.json_body()
        items = body.get("tasks")
        if set(body) != {"tasks"} or not isinstance(items, list):
            raise InvalidParameters('must be {"tasks": [TaskRequest, ...]}', field="body")
        most = min(MAX_BATCH, self.tasks_app.max_queue_size)  # larger could never be queued
        if not 1 <= len(items) <= most:
            raise InvalidParameters(f"must hold 1..{most} task requests", field="tasks")
        requests = [parse_task_request(item, index=i) for i, item in enumerate(items)]
        tasks = await (await self.engine()).submit_batch(requests)
        self.write_json(201, {"tasks": [t.to_json() for t in tasks]})


@web.stream_request_body
class BlobHandler(TasksHandler):
    """``POST /tasks/blobs``: raw bytes streamed to disk as they arrive, never held whole."""

    body_limit_trait = "max_blob_bytes"

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        if self.request.method == "POST" and not self._finished:
            self._writer = (await self.engine()).open_blob()

    async def data_received(self, chunk: bytes) -> None:  # type: ignore[override]
        writer = self._writer
        if writer is None or self._finished:
            return
        self._received += len(chunk)
        try:
            if self._received > self.body_limit:
                raise _too_large(self.body_limit)
            await writer.write(chunk)
        except Exception as exc:  # an answer now: raising here would drop the connection
            self._writer = None
            with contextlib.suppress(Exception):
                await writer.abort()
            self.send_error(500, exc_info=_exc_info(exc))

    def on_connection_close(self) -> None:
        self._abandon()
        super().on_connection_close()

    def on_finish(self) -> None:
        self._abandon()

    def _abandon(self) -> None:
        """An upload that was not committed leaves no partial file behind."""
        writer, self._writer = self._writer, None
        if writer is not None:
            cleanup = asyncio.ensure_future(writer.abort())
            _cleanups.add(cleanup)
            cleanup.add_done_callback(_cleanups.discard)

    @web.authenticated
    @authorized("execute")
    async def post(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None or self._finished:
            raise web.Finish()
        if writer.size == 0:
            await writer.abort()
            raise InvalidParameters("empty; a blob needs at least one byte", field="body")
        blob_id = await writer.commit()
        self.write_json(201, {"blob_id": blob_id, "size": writer.size})


class TypesHandler(TasksHandler):
    """``GET /tasks/types``: the task types this server allows, with their parameter schemas."""

    @web.authenticated
    @authorized("read")
    async def get(self) -> None:
        self.write_json(200, {"types": (await self.engine()).types()})


class HealthHandler(TasksHandler):
    """``GET /tasks/health``: 200 while the engine works (even when the queue is full), else 503."""

    @web.authenticated
    @authorized("read")
    async def get(self) -> None:
        app = self.tasks_app
        if not app.engine_running:
            self.write_json(503, _unhealthy("the task engine is not running"))
            return
        try:
            health = dict(app.orchestrator.health())
        except Exception as exc:  # a broken store must still get its 503 with the usual body
            health = _unhealthy(str(exc))
        self.write_json(200 if health.get("healthy") else 503, health)


class TaskHandler(TasksHandler):
    """``GET /tasks/{id}`` and ``DELETE /tasks/{id}`` (forgets result, logs and blobs too)."""

    @web.authenticated
    @authorized("read")
    async def get(self, task_id: str) -> None:
        task = await (await self.engine()).get(task_id)
        self.write_json(200, task.to_json())

    @web.authenticated
    @authorized("write")
    async def delete(self, task_id: str) -> None:
        await (await self.engine()).delete(task_id)
        self.set_status(204)
        self.finish()


class CancelHandler(TasksHandler):
    """``POST /tasks/{id}/cancel``: 200 with the cancelled task; 409 when already finished."""

    body_action = "write"

    @web.authenticated
    @authorized("write")
    async def post(self, task_id: str) -> None:
        task = await (await self.engine()).cancel(task_id)
        self.write_json(200, task.to_json())


class RerunHandler(TasksHandler):
    """``POST /tasks/{id}/rerun``: a new task with the same request."""

    @web.authenticated
    @authorized("execute")
    async def post(self, task_id: str) -> None:
        task = await (await self.engine()).rerun(task_id)
        self.set_header("Location", self.task_url(task.task_id))
        self.write_json(201, task.to_json())


class ResultHandler(TasksHandler):
    """``GET /tasks/{id}/result``: a JSON preview, or the pickle itself, streamed from disk.

    The server never unpickles: it serves the bytes a worker wrote.
    """

    @web.authenticated
    @authorized("read")
    async def get(self, task_id: str) -> None:
        engine = await self.engine()
        info = await engine.result(task_id)
        if "application/octet-stream" not in self.request.headers.get("Accept", ""):
            self.write_json(200, _json_safe_preview(info.preview))
            return
        self.set_header("Content-Type", "application/octet-stream")  # before the first flush
        self.set_header("Content-Length", str(info.size))
        try:
            async with contextlib.aclosing(engine.result_chunks(task_id)) as chunks:  # type: ignore[type-var]
                async for chunk in chunks:
                    self.write(chunk)
                    await self.flush()
        except StreamClosedError:
            return  # the client went away; nothing to answer
        self.finish(set_content_type="application/octet-stream")


class LogsHandler(TasksHandler):
    """``GET /tasks/{id}/logs?offset=n``: text from byte ``offset``; next offset in a header."""

    @web.authenticated
    @authorized("read")
    async def get(self, task_id: str) -> None:
        offset = self.query_int("offset", 0, 0)
        data, next_offset = await (await self.engine()).logs(task_id, offset=offset)
        self.set_header("X-Next-Offset", str(next_offset))
        self.finish(data, set_content_type="text/plain; charset=utf-8")


class OpenAPIHandler(TasksHandler):
    """``GET /tasks/openapi.json``: the REST contract, with a parameters schema per task type."""

    @web.authenticated
    @authorized("read")
    async def get(self) -> None:
        types = (await self.engine()).types()
        max_batch = min(MAX_BATCH, self.tasks_app.max_queue_size)
        from .openapi import build_openapi

        self.write_json(200, build_openapi(types, base_url=self.base_url, max_batch=max_batch))


@web.stream_request_body
class NotFoundHandler(TasksHandler):
    """Any other path under ``/tasks/``: a JSON 404, never an HTML page."""

    body_limit_trait = "max_body_bytes"
    body_action = "read"

    @web.authenticated
    @authorized("read")
    async def get(self, *args: str) -> None:
        raise web.HTTPError(404, f"no such route: {self.request.method} {self.request.path}")

    post = put = patch = delete = get


# -- the event stream -------------------------------------------------------------------------


class EventsHandler(TasksHandlerMixin, WebSocketMixin, WebSocketHandler, JupyterHandler):
    """``GET /tasks/events`` (WebSocket): a snapshot, then every event with its ``seq``.

    Subscribes before taking the snapshot, so no event falls between the two.
    Writes are bounded twice: at most ``max_unflushed`` messages wait in the
    socket's buffer, and the engine drops a subscription with more than
    ``max_pending`` undelivered events; a dropped subscriber is closed with
    ``CLOSE_FELL_BEHIND`` and may reconnect for a fresh snapshot.
    """

    max_pending: ClassVar[int] = 10_000
    max_unflushed: ClassVar[int] = 256
    write_stall_seconds: ClassVar[float] = 30.0
    _pump: asyncio.Future[None] | None = None

    def set_default_headers(self) -> None:
        """No HTML security headers on a WebSocket handshake."""

    @ws_authenticated
    @authorized("read")
    async def get(self, *args: Any, **kwargs: Any) -> None:
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            raise web.HTTPError(400, "this route is a WebSocket: send an Upgrade request")
        self._task_ids = self.get_arguments("task_id")
        for task_id in self._task_ids:
            if len(task_id) != 32 or any(c not in "0123456789abcdef" for c in task_id):
                raise InvalidParameters("must be 32 lower-case hex characters", field="task_id")
        self._group = self.get_argument("group", None)
        self._engine = await self.engine()
        await super().get(*args, **kwargs)

    async def open(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().open()
        self.tasks_app.event_sockets.add(self)
        task_ids = self._task_ids or None
        subscription = self._engine.subscribe(task_ids, self._group, self.max_pending)
        try:
            snapshot = await self._engine.snapshot(task_ids, self._group)
        except Exception:
            self.log.exception("jupyter_tasks: no snapshot for an event stream")
            subscription.close()
            self.close(1011, "the task store cannot be read")
            return
        if self.ws_connection is None:
            subscription.close()
            return
        tasks = [task.to_json() for task in snapshot]
        self.write_message(_dumps({"event": "snapshot", "tasks": tasks}))
        self._pump = asyncio.ensure_future(self._forward(subscription))

    async def _forward(self, subscription: Subscription) -> None:
        """Owned by this socket: started in ``open``, cancelled in ``on_close``."""
        try:
            unflushed = 0
            async for event in subscription:
                written = self.write_message(_dumps(event))
                unflushed = 0 if written.done() else unflushed + 1
                if unflushed >= self.max_unflushed:
                    done, _ = await asyncio.wait({written}, timeout=self.write_stall_seconds)
                    if not done:
                        self.close(CLOSE_FELL_BEHIND, "subscriber fell behind")
                        return
                    unflushed = 0
            if subscription.dropped:
                self.close(CLOSE_FELL_BEHIND, "subscriber fell behind")
            else:
                self.close(1001, "event stream ended")
        except (WebSocketClosedError, StreamClosedError):
            pass
        finally:
            subscription.close()

    def on_message(self, message: str | bytes) -> None:
        """Clients have nothing to say on this stream; messages are ignored."""

    def on_close(self) -> None:
        self.tasks_app.event_sockets.discard(self)
        if self._pump is not None:
            self._pump.cancel()


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, allow_nan=False)


def _json_default(value: Any) -> Any:
    """Events are JSON already; a model or a datetime that slips in is still sent."""
    if hasattr(value, "to_json"):
        return value.to_json()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _unhealthy(detail: str) -> dict[str, Any]:
    body: dict[str, Any] = {"healthy": False, "accepting": False, "queued": 0, "running": 0}
    body.update(workers=0, detail=detail)
    return body


def _json_safe_preview(preview: dict[str, Any]) -> dict[str, Any]:
    """``value`` only when it is strict JSON (a NaN would break clients' parsers)."""
    try:
        json.dumps(preview, allow_nan=False)
    except (TypeError, ValueError):
        return {k: v for k, v in preview.items() if k != "value"}
    return preview


# -- routes (base_url is prepended by the extension) ------------------------------------------

default_handlers: list[tuple[str, type[Any]]] = [
    (r"/tasks/?", TasksCollectionHandler),
    (r"/tasks/batch", BatchHandler),
    (r"/tasks/blobs", BlobHandler),
    (r"/tasks/types", TypesHandler),
    (r"/tasks/health", HealthHandler),
    (r"/tasks/events", EventsHandler),
    (r"/tasks/openapi\.json", OpenAPIHandler),
    (rf"/tasks/{_TASK_ID}", TaskHandler),
    (rf"/tasks/{_TASK_ID}/cancel", CancelHandler),
    (rf"/tasks/{_TASK_ID}/rerun", RerunHandler),
    (rf"/tasks/{_TASK_ID}/result", ResultHandler),
    (rf"/tasks/{_TASK_ID}/logs", LogsHandler),
    (r"/tasks/(.*)", NotFoundHandler),
]
