"""The base of every ``/tasks`` handler: authentication, errors as JSON, request bodies.

Every verb carries ``@web.authenticated`` (``@ws_authenticated`` for the
WebSocket) and ``@authorized`` on the ``tasks`` resource.  Handlers with a
request body stream it, so a body over its limit is refused (413) after at
most that many bytes, and only once the request is authenticated and authorized.
Domain errors from the engine are mapped to HTTP in one place (``http_error``);
every error answer is JSON ``{"message": ...}``.

The models (pydantic) and the engine are imported on first use, not here:
this module is imported while the server starts, and they would add a fifth
to the CPU time of a bare server start.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from http.client import responses
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from jupyter_core.utils import ensure_async
from jupyter_server.auth import decorator
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from .errors import (
    InvalidParameters,
    InvalidTransition,
    QueueFull,
    StoreUnavailable,
    TaskNotFound,
    UnknownTaskType,
)
from .jsonout import dumps

if TYPE_CHECKING:
    from .models import TaskRequest
    from .orchestrator import BlobWriter, Orchestrator

AUTH_RESOURCE = "tasks"
#: The values of a ``status`` query (``models.TaskStatus``, not imported at server start).
TASK_STATUSES = ("created", "running", "completed", "failed", "cancelled")
#: Longest ``message`` of an error answer (see ``error_message``).
MESSAGE_MAX = 1_000


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
    """The ``message`` of an error answer: the HTTPError's text, never a traceback.

    A message that quotes a huge input (a 500 kB field name, task type or path) keeps
    its two ends, which name the field and what is wrong with it.
    """
    message = _error_text(status_code, exc)
    if len(message) <= MESSAGE_MAX:
        return message
    return f"{message[: MESSAGE_MAX * 2 // 3]} ... {message[-MESSAGE_MAX // 4 :]}"


def _error_text(status_code: int, exc: BaseException | None) -> str:
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

    async def prepare(self) -> None:  # type: ignore[override]
        """Authentication first, whatever the verb: a stranger learns no route and no verb.

        Jupyter Server identifies the user here but refuses only inside decorated verbs,
        so a verb a route lacks would answer 405 to anyone.  OPTIONS stays open: it is
        the CORS preflight, which carries no credentials and answers no data.
        """
        pending = super().prepare()
        if pending is not None:
            await pending
        if not self._finished and self.current_user is None and self.request.method != "OPTIONS":
            raise web.HTTPError(403)

    def query_statuses(self, allowed: tuple[str, ...] = TASK_STATUSES) -> list[str]:
        """The repeatable ``status`` query; 400 naming it for a value not in ``allowed``."""
        statuses = self.get_arguments("status")
        for status in statuses:
            if status not in allowed:
                raise InvalidParameters(f"must be one of {', '.join(allowed)}", field="status")
        return statuses

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
            raise too_large(limit)
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
            self.send_error(413, exc_info=exc_info_of(too_large(self.body_limit)))
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
        self.finish(dumps(value))

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
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
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


def parse_task_request(value: Any) -> TaskRequest:
    """A ``TaskRequest``, or ``InvalidParameters`` naming the first wrong field."""
    return parse_task_requests([value], batch=False)[0]


def parse_task_requests(values: list[Any], batch: bool = True) -> list[TaskRequest]:
    """``TaskRequest``s in order, or ``InvalidParameters`` naming the first wrong field
    (and, in a batch, its index)."""
    from pydantic import ValidationError  # once per batch: a lazy import costs per item

    from .models import TaskRequest

    requests = []
    for i, value in enumerate(values):
        index = i if batch else None
        if not isinstance(value, dict):
            raise InvalidParameters(f"must be a JSON object, not {_json_kind(value)}", index=index)
        try:
            requests.append(TaskRequest.model_validate(value))
        except ValidationError as exc:
            raise InvalidParameters.from_validation(exc, index=index) from None
    return requests


def _overrides(cls: type, base: type, name: str) -> bool:
    """Whether ``cls`` overrides ``base.name``."""
    return getattr(cls, name, None) is not getattr(base, name, None)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """A number past a float's range (``1e400``) would be read as infinity, which JSON
    cannot carry back out: every answer holding the task would fail."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is beyond the range of a 64-bit float")
    return value


def _json_kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def too_large(limit: int) -> TasksHTTPError:
    return TasksHTTPError(413, f"body: larger than the limit of {limit} bytes")


def exc_info_of(exc: BaseException) -> tuple[type[BaseException], BaseException, None]:
    return (type(exc), exc, None)
