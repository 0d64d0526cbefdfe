"""The ``/tasks`` REST routes: parse, call the orchestrator, serialise.

Submitting, batches, blobs and reruns need the ``execute`` action (they run
code), cancel and delete ``write``, everything else ``read``; authentication,
error answers and body limits live in ``handlerbase``, the event stream in
``eventstream``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Any

from tornado import web
from tornado.iostream import StreamClosedError

from .errors import InvalidParameters
from .eventstream import EventsHandler
from .handlerbase import (
    TasksHandler,
    TasksHTTPError,
    authorized,
    exc_info_of,
    parse_task_request,
    parse_task_requests,
    too_large,
)

MAX_BATCH = 10_000
MAX_LIST_LIMIT = 1_000
_TASK_ID = r"(?P<task_id>[0-9a-f]{32})"
#: A path under ``/tasks/`` shaped like a task route: ``{id}`` or ``{id}/<verb>``.
_ID_ROUTE = re.compile(r"(?P<id>[^/]*)(?:/(?:cancel|rerun|result|logs))?/?", re.DOTALL)
_FIXED_ROUTES = frozenset({"batch", "blobs", "types", "health", "events", "openapi.json"})
#: Aborts of abandoned uploads still removing their partial file.
_cleanups: set[asyncio.Future[None]] = set()


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
        statuses = self.query_statuses()
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
        requests = parse_task_requests(items)
        # The parsed body is not needed any more: let it go before the store's write, or
        # it lives through collections meanwhile and lands in the collector's oldest
        # generation, to be walked by each full collection (thousands of objects a batch).
        del body, items
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
                raise too_large(self.body_limit)
            await writer.write(chunk)
        except Exception as exc:  # an answer now: raising here would drop the connection
            self._writer = None
            with contextlib.suppress(Exception):
                await writer.abort()
            self.send_error(500, exc_info=exc_info_of(exc))

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
    """``GET /tasks/health``: 200 while the engine works (even when the queue is full), else 503.

    It works when its workers do and its database takes writes (a full disk or a
    read-only file answers 503, with the reason in ``detail``).  An engine that failed to
    start is started again (after a pause), so the answer turns 200 once the cause is gone.
    """

    @web.authenticated
    @authorized("read")
    async def get(self) -> None:
        app = self.tasks_app
        if not app.engine_running:
            app.ensure_started()  # in the background: a failed start is made again
            detail = app.start_error or "the task engine is not running"
            self.write_json(503, _unhealthy(detail))
            return
        try:
            health = dict(app.orchestrator.health())
            if health.get("healthy"):
                problem = await app.store_problem()
                if problem is not None:
                    health.update(healthy=False, accepting=False, detail=problem)
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


@web.stream_request_body
class CancelHandler(TasksHandler):
    """``POST /tasks/{id}/cancel``: 200 with the cancelled task; 409 when already finished.

    No body is needed; one is counted against ``max_body_bytes``, never buffered beyond it.
    """

    body_limit_trait = "max_body_bytes"
    body_action = "write"

    @web.authenticated
    @authorized("write")
    async def post(self, task_id: str) -> None:
        task = await (await self.engine()).cancel(task_id)
        self.write_json(200, task.to_json())


@web.stream_request_body
class RerunHandler(TasksHandler):
    """``POST /tasks/{id}/rerun``: a new task with the same request (no body needed, capped)."""

    body_limit_trait = "max_body_bytes"

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
    async def get(self, path: str = "") -> None:
        from .models import is_task_id

        match = _ID_ROUTE.fullmatch(path)
        if match and match["id"] not in _FIXED_ROUTES and not is_task_id(match["id"]):
            shown = match["id"] if len(match["id"]) <= 64 else match["id"][:64] + "..."
            message = f"{shown!r} is not a task id (32 lower-case hex characters)"
            raise TasksHTTPError(404, f"task_id: {message}")
        raise TasksHTTPError(404, f"no such route: {self.request.method} {self.request.path}")

    post = put = patch = delete = get


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
