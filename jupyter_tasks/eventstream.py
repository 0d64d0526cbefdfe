"""``GET /tasks/events``: the WebSocket that streams task events, a snapshot first."""

from __future__ import annotations

import asyncio
import struct
import weakref
from typing import TYPE_CHECKING, Any, ClassVar

from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web
from tornado.iostream import IOStream, StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from .errors import InvalidParameters
from .handlerbase import TASK_STATUSES, TasksHandlerMixin, authorized
from .jsonout import dumps

if TYPE_CHECKING:
    from .orchestrator import Subscription

#: WebSocket close code for a subscriber that fell behind: reconnect for a fresh snapshot.
CLOSE_FELL_BEHIND = 4001

#: Texts of recent events (UTF-8), by ``seq``, per engine's hub: with several sockets open
#: (the Lab panel, kernels), each event is turned into text once, not once per socket.
_PAYLOADS: weakref.WeakKeyDictionary[Any, dict[int, bytes]] = weakref.WeakKeyDictionary()
PAYLOADS_KEPT = 1024
#: Longer texts are not kept: at most ``PAYLOADS_KEPT`` of these per engine (16 MiB).
PAYLOAD_KEPT_BYTES = 16 * 1024


class EventsHandler(  # type: ignore[misc]  # prepare(): the mixin's runs JupyterHandler's
    TasksHandlerMixin, WebSocketMixin, WebSocketHandler, JupyterHandler
):
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
        origin = self.get_origin()
        if origin is not None and not self.check_origin(origin):  # before any other answer
            raise web.HTTPError(403, "cross-origin request refused")
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            raise web.HTTPError(400, "this route is a WebSocket: send an Upgrade request")
        from .models import is_task_id  # pydantic's module: not imported at server start

        self._task_ids = self.get_arguments("task_id")
        for task_id in self._task_ids:
            if not is_task_id(task_id):
                raise InvalidParameters("must be 32 lower-case hex characters", field="task_id")
        self._group = self.get_argument("group", None)
        self._statuses = self.query_statuses((*TASK_STATUSES, "deleted")) or None
        self._engine = await self.engine()
        await super().get(*args, **kwargs)

    async def open(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().open()
        # Events are small and live: Nagle's algorithm would hold one back until the
        # client acknowledges the one before (tens of ms with delayed ACKs).
        self.set_nodelay(True)
        self.tasks_app.event_sockets.add(self)
        task_ids = self._task_ids or None
        subscription = self._engine.subscribe(
            task_ids, self._group, self.max_pending, self._statuses
        )
        try:
            snapshot = await self._engine.snapshot(task_ids, self._group, self._statuses)
        except Exception:
            self.log.exception("jupyter_tasks: no snapshot for an event stream")
            subscription.close()
            self.close(1011, "the task store cannot be read")
            return
        if self.ws_connection is None:
            subscription.close()
            return
        tasks = [task.to_json() for task in snapshot]
        self.write_message(_dumps({"event": "snapshot", "tasks": tasks}).decode())
        self._pump = asyncio.ensure_future(self._forward(subscription))

    async def _forward(self, subscription: Subscription) -> None:
        """Owned by this socket: started in ``open``, cancelled in ``on_close``.

        Events already queued go out together, in one write: a burst of events leaves in
        full packets, not in a system call, a packet and a wake-up of the client each.
        """
        try:
            unflushed = 0
            async for event in subscription:
                payloads = [self._payload(event)]
                room = self.max_unflushed - unflushed  # (at most that many left unwritten)
                while len(payloads) < room and (more := subscription.take()):
                    payloads.append(self._payload(more))
                written = self._send(payloads)
                unflushed = 0 if written.done() else unflushed + len(payloads)
                if unflushed >= self.max_unflushed:
                    if not await self._flushed(written, subscription):
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

    def _payload(self, event: dict[str, Any]) -> bytes:
        """An event's JSON text (UTF-8), made once for all the sockets that send it."""
        if len(self.tasks_app.event_sockets) < 2:
            return _dumps(event)
        payloads = _PAYLOADS.setdefault(self._engine.events, {})
        seq = event["seq"]
        payload = payloads.get(seq)
        if payload is None:
            payload = _dumps(event)
            if len(payload) <= PAYLOAD_KEPT_BYTES:  # (a task with large parameters: made anew)
                payloads[seq] = payload
                if len(payloads) > PAYLOADS_KEPT:
                    del payloads[next(iter(payloads))]  # the oldest
        return payload

    def _send(self, payloads: list[bytes]) -> asyncio.Future[None]:
        """Write text messages in one write; the future settles once the socket took them.

        tornado writes each message on its own (a system call and a packet each, in a
        task of its own) and has no call for several, so the frames are made here:
        final, unmasked text frames as a server sends them (RFC 6455, section 5.2).
        Never compressed, which a connection may do message by message.
        """
        protocol = self.ws_connection
        stream = getattr(protocol, "stream", None)
        if protocol is None or protocol.is_closing() or not isinstance(stream, IOStream):
            for payload in payloads:  # (raises WebSocketClosedError once closed)
                written = self.write_message(payload.decode())
            return written
        parts: list[bytes] = []
        for payload in payloads:
            parts += (_frame_header(len(payload)), payload)
        try:
            return stream.write(b"".join(parts))
        except StreamClosedError:
            raise WebSocketClosedError() from None

    async def _flushed(self, written: asyncio.Future[None], subscription: Subscription) -> bool:
        """Wait until the socket has taken ``written``; False when it stalls for
        ``write_stall_seconds``, or at once when the engine drops the subscription meanwhile
        (``max_pending`` events behind): its events are released as soon as it is closed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.write_stall_seconds
        while not written.done():
            left = deadline - loop.time()
            if left <= 0 or subscription.dropped:
                return False
            await asyncio.wait({written}, timeout=min(left, 0.25))
        return True

    def on_message(self, message: str | bytes) -> None:
        """Clients have nothing to say on this stream; messages are ignored."""

    def on_close(self) -> None:
        self.tasks_app.event_sockets.discard(self)
        if len(self.tasks_app.event_sockets) < 2 and hasattr(self, "_engine"):
            _PAYLOADS.pop(self._engine.events, None)  # one socket left: nothing to share
        if self._pump is not None:
            self._pump.cancel()


def _frame_header(size: int) -> bytes:
    """The header of a final text frame without a mask, its length in the shortest form."""
    if size < 126:
        return struct.pack("!BB", 0x81, size)
    if size <= 0xFFFF:
        return struct.pack("!BBH", 0x81, 126, size)
    return struct.pack("!BBQ", 0x81, 127, size)


def _dumps(value: Any) -> bytes:
    return dumps(value, default=_json_default)


def _json_default(value: Any) -> Any:
    """Events are JSON already; a model or a datetime that slips in is still sent."""
    if hasattr(value, "to_json"):
        return value.to_json()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
