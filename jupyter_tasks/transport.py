"""How the kernel reaches the tasks API: one small backend interface, over HTTP or in-process.

HTTP calls are plain blocking ``http.client`` requests on a keep-alive
connection per thread: they work the same inside a running kernel (whose event
loop is busy running the cell) and in a script, with no nested event loop.
Only the event stream is asynchronous, and it runs on a private loop thread.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import io
import json
import pickle
import socket
import ssl
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import IO, Any, Protocol, TypeVar
from urllib.parse import quote, unquote, urlencode, urlsplit

from .errors import InvalidParameters, InvalidTransition, NoResult, QueueFull, TaskNotFound
from .errors import TasksError as TasksError

T = TypeVar("T")
TaskDict = dict[str, Any]

#: A pickled payload up to this size goes inline (base64) in the JSON body of ``POST /tasks``.
INLINE_PAYLOAD_BYTES = 256 * 1024
#: Larger ``callable`` payloads (and every payload of a big batch) go through ``POST /tasks/blobs``.
BATCH_INLINE_BUDGET = 16 << 20
CHUNK_BYTES = 1 << 20


class ServerUnreachable(TasksError, ConnectionError):
    """The tasks server did not answer (not running, wrong URL, network)."""


class AccessDenied(TasksError, PermissionError):
    """The server refused the credential (403)."""


class EventStreamClosed(Exception):
    """The event stream ended; the subscriber reconnects and resynchronises."""


@dataclass(frozen=True)
class ListQuery:
    """Filters of ``GET /tasks``."""

    statuses: tuple[str, ...] = ()
    task_type: str | None = None
    group: str | None = None
    tag: str | None = None
    limit: int = 100
    cursor: str | None = None

    def params(self) -> list[tuple[str, str]]:
        """The query string as pairs (``status`` repeats)."""
        pairs = [("status", s) for s in self.statuses]
        for key in ("task_type", "group", "tag", "cursor"):
            value = getattr(self, key)
            if value is not None:
                pairs.append((key, value))
        pairs.append(("limit", str(self.limit)))
        return pairs


class LoopThread:
    """An asyncio loop on a daemon thread: the event stream and timers live here."""

    def __init__(self, name: str = "jupyter-tasks") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            pending = asyncio.all_tasks(self.loop)
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    @property
    def in_thread(self) -> bool:
        """True when called from the loop's own thread."""
        return threading.current_thread() is self._thread

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the loop and wait for its result from another thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        """Stop the loop and let the thread end."""
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if not self.in_thread:
            self._thread.join(timeout=5)


class Backend(Protocol):
    """What the client needs from the tasks API, wherever it runs.

    Tasks are their JSON form (``Task.to_json()``); failures are the engine's own
    exceptions (``TaskNotFound``, ``InvalidTransition``...) either way.
    """

    label: str  #: where tasks run, for people

    def submit(self, request: TaskDict) -> TaskDict:
        """``POST /tasks``: the created task."""

    def submit_batch(self, requests: list[TaskDict]) -> list[TaskDict]:
        """``POST /tasks/batch``: the created tasks, in order, one group."""

    def get(self, task_id: str) -> TaskDict:
        """``GET /tasks/{id}``."""

    def list(self, query: ListQuery) -> tuple[list[TaskDict], str | None]:
        """``GET /tasks``: a page, newest first, and the next cursor."""

    def cancel(self, task_id: str) -> TaskDict:
        """``POST /tasks/{id}/cancel``: the cancelled task."""

    def delete(self, task_id: str) -> None:
        """``DELETE /tasks/{id}``."""

    def result_preview(self, task_id: str) -> TaskDict:
        """``GET /tasks/{id}/result`` as JSON: ``{"type", "repr", "value"?}``."""

    def load_result(self, task_id: str) -> Any:
        """The result object, unpickled here from the streamed pickle."""

    def logs(self, task_id: str, offset: int = 0) -> tuple[bytes, int]:
        """Log bytes from ``offset`` and the next offset."""

    def upload_blob(self, source: IO[bytes], size: int) -> str:
        """``POST /tasks/blobs`` from a file, in chunks: the blob id."""

    def health(self) -> TaskDict:
        """``GET /tasks/health``."""

    def events(self) -> AsyncIterator[TaskDict]:
        """The event stream: a snapshot message, then live events (on the loop thread)."""

    def close(self) -> None:
        """Release connections (and, in-process, the engine)."""


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket (a server started with ``--sock``)."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__("localhost", **kwargs)
        self._socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._socket_path)
        self.sock = sock


class HttpBackend:
    """The REST API of a Jupyter server running the jupyter_tasks extension."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0) -> None:
        if not url.endswith("/"):
            url += "/"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "http+unix"):
            raise ValueError(f"unsupported URL {url!r}: use http://, https:// or http+unix://")
        self.url = url
        self.label = url
        self._parts = parts
        self._prefix = parts.path.rstrip("/") + "/tasks"
        self._token = token or None
        self._timeout = timeout
        self._local = threading.local()

    # -- connections -------------------------------------------------------------------------

    def _new_connection(self) -> http.client.HTTPConnection:
        host, port = self._parts.hostname or "127.0.0.1", self._parts.port
        if self._parts.scheme == "http+unix":
            return _UnixConnection(unquote(self._parts.netloc), timeout=self._timeout)
        if self._parts.scheme == "https":
            return http.client.HTTPSConnection(
                host,
                port,
                timeout=self._timeout,
                context=ssl.create_default_context(),
                blocksize=CHUNK_BYTES,
            )
        return http.client.HTTPConnection(host, port, timeout=self._timeout, blocksize=CHUNK_BYTES)

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, True
        conn = self._new_connection()
        self._local.conn = conn
        return conn, False

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"token {self._token}"
        headers.update(extra or {})
        return headers

    def _open(
        self,
        method: str,
        path: str,
        body: bytes | IO[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        """Send one request; a keep-alive connection the server closed is retried once."""
        seekable = body if body is not None and not isinstance(body, bytes) else None
        start = seekable.tell() if seekable is not None else 0
        for attempt in (0, 1):
            conn, reused = self._connection()
            try:
                conn.request(method, self._prefix + path, body=body, headers=self._headers(headers))
                return conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._drop()
                if not reused or attempt:
                    raise self._unreachable(exc) from exc
                if seekable is not None:
                    seekable.seek(start)
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise self._unreachable(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _unreachable(self, exc: BaseException) -> ServerUnreachable:
        return ServerUnreachable(f"cannot reach the jupyter-tasks server at {self.url}: {exc}")

    def _call(
        self,
        method: str,
        path: str,
        payload: Any = None,
        task_id: str | None = None,
        query: list[tuple[str, str]] | None = None,
    ) -> Any:
        """A JSON request and its JSON answer; errors become the domain's exceptions."""
        body = None if payload is None else json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if query:
            path = f"{path}?{urlencode(query)}"
        resp = self._open(method, path, body, headers)
        try:
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            raise self._unreachable(exc) from exc
        if resp.status >= 400:
            raise self._error(resp, data, task_id)
        return json.loads(data) if data else None

    def _error(self, resp: http.client.HTTPResponse, data: bytes, task_id: str | None) -> Exception:
        """Map an error answer onto the exceptions the engine raises in-process."""
        try:
            message = str(json.loads(data).get("message") or resp.reason)
        except (ValueError, AttributeError):
            message = data.decode("utf-8", "replace").strip()[:200] or resp.reason
        code = resp.status
        if code in (401, 403):
            return AccessDenied(
                f"the server at {self.url} refused the credential ({code}): set "
                "JUPYTER_TASKS_TOKEN or call jt.connect(url, token)"
            )
        if code == 404 and task_id is not None:
            return TaskNotFound(task_id)
        if code == 404:
            return ServerUnreachable(
                f"{self.url} has no /tasks API (404): is the jupyter_tasks extension enabled?"
            )
        if code == 409:
            return NoResult(message) if "result" in message.lower() else InvalidTransition(message)
        if code == 400:
            return InvalidParameters(message)
        if code == 503 and resp.getheader("Retry-After"):
            return QueueFull(message, int(resp.getheader("Retry-After") or 1))
        return TasksError(f"the tasks server answered {code}: {message}")

    # -- the API -----------------------------------------------------------------------------

    def submit(self, request: TaskDict) -> TaskDict:
        return dict(self._call("POST", "", request))

    def submit_batch(self, requests: list[TaskDict]) -> list[TaskDict]:
        return list(self._call("POST", "/batch", {"tasks": requests})["tasks"])

    def get(self, task_id: str) -> TaskDict:
        return dict(self._call("GET", f"/{_quote_id(task_id)}", task_id=task_id))

    def list(self, query: ListQuery) -> tuple[list[TaskDict], str | None]:
        data = self._call("GET", "", query=query.params())
        return list(data["tasks"]), data.get("next")

    def cancel(self, task_id: str) -> TaskDict:
        return dict(self._call("POST", f"/{_quote_id(task_id)}/cancel", {}, task_id=task_id))

    def delete(self, task_id: str) -> None:
        self._call("DELETE", f"/{_quote_id(task_id)}", task_id=task_id)

    def result_preview(self, task_id: str) -> TaskDict:
        return dict(self._call("GET", f"/{_quote_id(task_id)}/result", task_id=task_id))

    def health(self) -> TaskDict:
        return dict(self._call("GET", "/health"))

    def logs(self, task_id: str, offset: int = 0) -> tuple[bytes, int]:
        resp = self._open("GET", f"/{_quote_id(task_id)}/logs?offset={int(offset)}")
        data = resp.read()
        if resp.status >= 400:
            raise self._error(resp, data, task_id)
        return data, int(resp.getheader("X-Next-Offset") or offset + len(data))

    def load_result(self, task_id: str) -> Any:
        """Unpickle the result straight off the socket: never a second copy in memory."""
        resp = self._open(
            "GET", f"/{_quote_id(task_id)}/result", headers={"Accept": "application/octet-stream"}
        )
        if resp.status >= 400:
            raise self._error(resp, resp.read(), task_id)
        try:
            value = pickle.load(resp)
            resp.read()
        except BaseException:
            self._drop()
            raise
        return value

    def upload_blob(self, source: IO[bytes], size: int) -> str:
        """Stream a file to ``POST /tasks/blobs`` in chunks; returns the blob id."""
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        resp = self._open("POST", "/blobs", source, headers)
        data = resp.read()
        if resp.status >= 400:
            raise self._error(resp, data, None)
        return str(json.loads(data)["blob_id"])

    async def events(self) -> AsyncIterator[TaskDict]:
        """The ``/tasks/events`` WebSocket: a snapshot, then live events, until it closes."""
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        if self._parts.scheme == "http+unix":
            raise EventStreamClosed("no WebSocket over a Unix socket; polling instead")
        scheme = "wss" if self._parts.scheme == "https" else "ws"
        url = f"{scheme}://{self._parts.netloc}{self._prefix}/events"
        request = HTTPRequest(url, headers=self._headers(), connect_timeout=10, request_timeout=30)
        conn = await websocket_connect(request, max_message_size=1 << 30)
        try:
            while True:
                message = await conn.read_message()
                if message is None:
                    raise EventStreamClosed(f"closed ({conn.close_code}): {conn.close_reason}")
                yield json.loads(message)
        finally:
            conn.close()

    def close(self) -> None:
        self._drop()


def _quote_id(task_id: str) -> str:
    return quote(task_id, safe="")


class Spool(io.RawIOBase):
    """Bytes in memory up to a limit, then a temporary file; never both copies at once.

    ``tempfile.SpooledTemporaryFile`` writes first and rolls over after, so a
    single large write (a 200 MB array in a pickle) would sit in memory too.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit
        self._memory: io.BytesIO | None = io.BytesIO()
        self._file: IO[bytes] | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        if self._memory is not None and self._memory.tell() + size > self._limit:
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
            self._file.write(self._memory.getbuffer())
            self._memory = None
        target: IO[bytes] = self._memory if self._memory is not None else self._file  # type: ignore[assignment]
        return target.write(data)

    @property
    def in_memory(self) -> bool:
        """True while the content is still under the limit."""
        return self._memory is not None

    def getvalue(self) -> bytes:
        assert self._memory is not None
        return self._memory.getvalue()

    def rewind(self) -> tuple[IO[bytes], int]:
        """The file and its size, positioned at the start (only once spilled)."""
        assert self._file is not None
        size = self._file.tell()
        self._file.seek(0)
        return self._file, size

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


def pack_callable(
    backend: Backend, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], inline: bool = True
) -> TaskDict:
    """The ``callable`` parameters for ``fn(*args, **kwargs)``: inline if small, else a blob."""
    import cloudpickle

    spool = Spool(INLINE_PAYLOAD_BYTES if inline else 0)
    with spool:
        cloudpickle.dump((fn, args, kwargs), spool, protocol=pickle.HIGHEST_PROTOCOL)
        if spool.in_memory:
            encoded = base64.b64encode(spool.getvalue()).decode("ascii")
            return {"pickle_b64": encoded, "python": sys.executable}
        source, size = spool.rewind()
        return {"blob_id": backend.upload_blob(source, size), "python": sys.executable}
