"""The server's end of a task's log on Dask: chunks from events, appended off the loop.

Chunks are numbered by the worker.  Dask delivers one worker's events in order and before
the task's result, but the sink does not rely on it: a missing chunk is waited for a
moment when the result arrives, then marked as lost in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

log = logging.getLogger(__name__)

#: How long the result waits for chunks that were sent before it but have not arrived.
CHUNK_WAIT_SECONDS = 2.0
LOST = b"\n[jupyter-tasks: part of the output was lost in transit]\n"


class LogSink:
    """Appends a task's log chunks to its file in order, writing in a thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.received = 0  #: the next chunk number expected
        self._pending: list[bytes] = []
        self._early: dict[int, bytes] = {}
        self._writer: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()
        self._closed = False

    def append(self, seq: int, data: bytes) -> None:
        """A chunk from an event; out-of-order chunks wait for the gap to fill."""
        if self._closed or seq < self.received:
            return
        self._early[seq] = data
        while self.received in self._early:
            self._pending.append(self._early.pop(self.received))
            self.received += 1
        self._arrived.set()
        self._kick()

    async def finish(self, chunks: int, tail: bytes) -> None:
        """The attempt ended after sending ``chunks`` chunks; ``tail`` is what follows them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CHUNK_WAIT_SECONDS
        while self.received < chunks and loop.time() < deadline:
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), deadline - loop.time())
        if self.received < chunks:
            self._pending += [*(self._early.pop(k) for k in sorted(self._early)), LOST]
            self.received = chunks
        if tail:
            self._pending.append(tail)
        self._closed = True
        self._kick()
        await self.close()

    async def close(self) -> None:
        """Stop taking chunks; return once everything taken is on disk."""
        self._closed = True
        while self._writer is not None:
            await asyncio.shield(self._writer)

    def _kick(self) -> None:
        if self._writer is None and self._pending:
            self._writer = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            while self._pending:
                data, self._pending = b"".join(self._pending), []
                try:
                    await asyncio.to_thread(_append, self.path, data)
                except OSError as exc:
                    log.warning("jupyter-tasks: cannot write the log %s: %s", self.path, exc)
        finally:
            self._writer = None


def _append(path: str, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
