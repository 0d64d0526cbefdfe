"""Uploaded blobs (large ``callable`` payloads), streamed to disk off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO


class BlobWriter:
    """Streams an upload to a temporary file beside the database, then names it.

    ``await write(chunk)`` any number of times, then ``blob_id = await commit()``;
    ``await abort()`` removes the partial file.  ``size`` counts bytes written.
    Writes run one at a time on a private thread, in order, so the loop never waits
    on the disk and the upload is never held whole in memory.
    """

    def __init__(self, blob_dir: str) -> None:
        self.blob_dir = blob_dir
        self.blob_id = uuid.uuid4().hex
        self.size = 0
        self._tmp = os.path.join(blob_dir, f".upload-{self.blob_id}")
        self._file: BinaryIO | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="jupyter-tasks-blob")

    async def _run(self, fn: object, *args: object) -> object:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)  # type: ignore[arg-type]

    def _write(self, chunk: bytes) -> None:
        if self._file is None:
            self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in commit/abort
        self._file.write(chunk)

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        await self._run(self._write, bytes(chunk))

    def _commit(self) -> str:
        if self._file is None:
            self._file = open(self._tmp, "wb")  # noqa: SIM115
        self._file.close()
        final = os.path.join(self.blob_dir, self.blob_id)
        os.replace(self._tmp, final)
        return self.blob_id

    async def commit(self) -> str:
        try:
            return str(await self._run(self._commit))
        finally:
            self._pool.shutdown(wait=False)

    def _abort(self) -> None:
        if self._file is not None:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)

    async def abort(self) -> None:
        try:
            await self._run(self._abort)
        finally:
            self._pool.shutdown(wait=False)


def remove_files(paths: list[str]) -> None:
    """Remove files that may already be gone (runs on a worker thread)."""
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)
