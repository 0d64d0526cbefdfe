"""What runs on a Dask worker: one task attempt in a child process, and the kill hook.

``run_task`` is the function ``DaskExecutor`` submits.  It never raises and returns one
``bytes`` object (a *frame*: a JSON header, the result's pickle, the log's tail), which Dask
moves without pickling, so the server decodes JSON and copies bytes, nothing more.
Progress and log chunks travel as Dask events (``Worker.log_event``) on the executor's
topic; ``kill_task`` reaches the worker through ``Client.run``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import socket
import struct
import sys
import tempfile
import time
from typing import Any

from .._workerguard import AVAILABLE as GUARDED
from ..models import MEMORY_LIMIT_EXCEEDED, WORKER_CRASHED
from ._daskchild import POOL, Child, ChildGone, ChildStartError
from ._proctree import describe_exit, trees_rss

MAGIC = b"JTD1"
ROOT_DIR_MISSING = "RootDirMissing"
#: Task types that do not read the server's root directory (they run anywhere).
ROOTLESS_TYPES = frozenset({"jupyter_tasks.tasktypes.callable:CallableTask"})
#: The child's environment names the Dask worker it runs on (tasks may print it).
WORKER_ENV = "JUPYTER_TASKS_DASK_WORKER"
TICK_SECONDS = 0.25
STALE_RETRIES = 4
LOG_CHUNKS_PER_TICK = 4


# -- frames --------------------------------------------------------------------------------


def encode_frame(header: dict[str, Any], result: bytes = b"", log: bytes = b"") -> bytes:
    """``MAGIC``, the header's length, the JSON header, the result bytes, the log bytes."""
    header = {**header, "result_size": len(result), "log_size": len(log)}
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join((MAGIC, struct.pack(">I", len(head)), head, result, log))


def decode_frame(data: object) -> tuple[dict[str, Any], bytes, bytes]:
    """Header, result bytes, log bytes; ``ValueError`` for anything malformed."""
    if not isinstance(data, bytes) or data[:4] != MAGIC or len(data) < 8:
        raise ValueError("the Dask task did not return a jupyter-tasks frame")
    (size,) = struct.unpack(">I", data[4:8])
    header = json.loads(data[8 : 8 + size])
    if not isinstance(header, dict):
        raise ValueError("the frame's header is not a JSON object")
    start = 8 + size
    result_size, log_size = int(header["result_size"]), int(header["log_size"])
    if start + result_size + log_size != len(data):
        raise ValueError("the frame's sizes do not add up")
    result = data[start : start + result_size]
    return header, result, data[start + result_size :]


def _error_frame(error_type: str, message: str, log: bytes = b"", **extra: Any) -> bytes:
    header = {"status": "error", "error": {"type": error_type, "message": message}, **extra}
    return encode_frame(header, log=log)


# -- events ------------------------------------------------------------------------------------


class _Publisher:
    """Dask events for one attempt: ``{"key", "op", ...}`` on the executor's topic."""

    def __init__(self, worker: Any, topic: str, key: str) -> None:
        self._worker, self._topic, self._key = worker, topic, key

    def send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):  # events are best effort; the result is not
            self._worker.log_event(self._topic, {"key": self._key, **message})


class LogStreamer:
    """Ships what the task writes to its (worker-local) log as events, throttled and bounded.

    The scheduler keeps a bounded history per topic, so chunks are small and a task that
    writes faster than ``backlog`` allows loses the middle of its output (marked), never the
    end: whatever was not streamed comes back in the frame (``tail``), capped at ``tail_max``.
    """

    def __init__(self, path: str, publisher: _Publisher, options: dict[str, Any]) -> None:
        self.path = path
        self.seq = 0
        self._publisher = publisher
        self._offset = 0
        self._next = 0.0
        self._interval = float(options.get("log_interval", 0.5))
        self._chunk = int(options.get("log_chunk", 32 << 10))
        self._backlog = int(options.get("log_backlog", 1 << 20))
        self._tail_max = int(options.get("log_tail_max", 10 << 20))

    def tick(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._interval
        size = self._size()
        if size - self._offset > self._backlog:
            self._publish(_skipped(size - self._chunk - self._offset))
            self._offset = size - self._chunk
        budget = self._chunk * LOG_CHUNKS_PER_TICK
        while self._offset < size and budget > 0:
            data = self._read(self._offset, min(self._chunk, size - self._offset, budget))
            if not data:
                break
            self._publish(data)
            self._offset += len(data)
            budget -= len(data)

    def tail(self) -> bytes:
        """Everything not streamed yet (its last ``tail_max`` bytes)."""
        size = self._size()
        start, marker = self._offset, b""
        if size - start > self._tail_max:
            marker = _skipped(size - self._tail_max - start)
            start = size - self._tail_max
        self._offset = size
        return marker + self._read(start, size - start)

    def _publish(self, data: bytes) -> None:
        self._publisher.send({"op": "log", "seq": self.seq, "data": data})
        self.seq += 1

    def _size(self) -> int:
        try:
            return os.path.getsize(self.path)
        except OSError:
            return 0

    def _read(self, offset: int, size: int) -> bytes:
        if size <= 0:
            return b""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(offset)
                return fh.read(size)
        except OSError:
            return b""


def _skipped(count: int) -> bytes:
    return f"\n[jupyter-tasks: {count} bytes of output skipped]\n".encode()


# -- one attempt -------------------------------------------------------------------------------


def run_task(spec: dict[str, Any], blob: bytes | None, options: dict[str, Any]) -> bytes:
    """The Dask task: run one attempt in a child process and return a frame; never raises."""
    address = "?"
    try:
        from distributed import get_worker

        worker = get_worker()
        address = str(worker.address)
        return _Attempt(spec, blob, options, worker).run()
    except BaseException as exc:  # the server must get bytes, whatever happened here
        message = f"jupyter-tasks failed on Dask worker {address}: {type(exc).__name__}: {exc}"
        return _error_frame(WORKER_CRASHED, message, worker=address)


class _Attempt:
    """One attempt on this Dask worker: scratch directory, child, conversation, frame."""

    def __init__(
        self, spec: dict[str, Any], blob: bytes | None, options: dict[str, Any], worker: Any
    ) -> None:
        self.spec, self.blob, self.options = spec, blob, options
        self.worker = worker
        self.address = str(worker.address)
        self.key = str(options["key"])
        self.publisher = _Publisher(worker, str(options["topic"]), self.key)
        self.memory_used = 0
        self.pid: int | None = None

    def run(self) -> bytes:
        if POOL.is_doomed(self.key):
            return encode_frame({"status": "killed", "worker": self.address})
        missing = self._root_missing()
        if missing is not None:
            return _error_frame(ROOT_DIR_MISSING, missing, worker=self.address)
        scratch = tempfile.mkdtemp(prefix="jupyter-task-", dir=self._scratch_parent())
        try:
            local, interpreter = self._localize(scratch)
            log = LogStreamer(local["log_path"], self.publisher, self.options)
            return self._drive(local, interpreter, log)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _root_missing(self) -> str | None:
        root = str(self.spec["root_dir"])
        if self.spec["type_path"] in ROOTLESS_TYPES or os.path.isdir(root):
            return None
        return (
            f"the server's root directory {root!r} does not exist on Dask worker "
            f"{self.address} (host {socket.gethostname()}); {self.spec['task_type']} tasks "
            "need it shared with the workers at the same path"
        )

    def _scratch_parent(self) -> str:
        parent = getattr(self.worker, "local_directory", None)
        if isinstance(parent, str) and os.path.isdir(parent):
            return parent
        return tempfile.gettempdir()

    def _localize(self, scratch: str) -> tuple[dict[str, Any], str]:
        """The spec with worker-local log, result and blob paths; the interpreter to use."""
        local = dict(self.spec)
        local["log_path"] = os.path.join(scratch, "task.log")
        local["result_path"] = os.path.join(scratch, "result.pickle")
        notes: list[str] = []
        if not os.path.isdir(local["root_dir"]):
            local["root_dir"] = scratch  # a rootless type: its cwd is the scratch directory
        if self.blob is not None:
            blob_dir = os.path.join(scratch, "blobs")
            os.mkdir(blob_dir)
            blob_id = os.path.basename(str(self.spec["parameters"].get("blob_id")))
            with open(os.path.join(blob_dir, blob_id), "wb") as fh:
                fh.write(self.blob)
            local["blob_dir"] = blob_dir
        interpreter = str(self.spec["interpreter"])
        if not _usable(interpreter):
            notes.append(
                f"jupyter-tasks: {interpreter} does not exist on Dask worker {self.address}; "
                f"running the task with {sys.executable}\n"
            )
            interpreter = sys.executable
        with open(local["log_path"], "w") as fh:
            fh.writelines(notes)
        return local, interpreter

    def _env(self) -> dict[str, str]:
        remove = [str(name) for name in self.options.get("env_remove", ())]
        names = {name for name in remove if not name.endswith("*")}
        prefixes = tuple(name[:-1] for name in remove if name.endswith("*"))
        env = {k: v for k, v in os.environ.items() if k not in names and not k.startswith(prefixes)}
        env[WORKER_ENV] = self.address
        return env

    def _drive(self, local: dict[str, Any], interpreter: str, log: LogStreamer) -> bytes:
        POOL.idle_seconds = float(self.options.get("idle_seconds", 60.0))
        nice, ready = int(self.options.get("nice", 0)), float(self.options.get("ready_timeout", 60))
        for _ in range(STALE_RETRIES):
            try:
                child = POOL.acquire(interpreter, self._env(), nice, ready)
            except ChildStartError as exc:
                message = f"could not start a task process on Dask worker {self.address}: {exc}"
                return _error_frame(WORKER_CRASHED, message, log.tail(), worker=self.address)
            if not POOL.begin(self.key, child):
                POOL.release(child, True, self._max_idle())
                return encode_frame({"status": "killed", "worker": self.address})
            self.pid = child.pid
            self.publisher.send({"op": "start", "worker": self.address, "pid": child.pid})
            try:
                reply = self._converse(child, local, log)
            except ChildGone as gone:
                return self._gone_frame(child, gone, log)
            finally:
                POOL.end(self.key)
            if reply.get("op") == "stale":
                POOL.release(child, False, 0)
                continue
            child.tasks_done += 1
            max_tasks = int(self.options.get("max_tasks", 0))
            POOL.release(child, not 0 < max_tasks <= child.tasks_done, self._max_idle())
            return self._done_frame(reply, local, log)
        message = "every task process on the Dask worker reported changed code; giving up"
        return _error_frame(WORKER_CRASHED, message, log.tail(), worker=self.address)

    def _max_idle(self) -> int:
        nthreads = getattr(getattr(self.worker, "state", None), "nthreads", 1)
        return int(self.options.get("max_idle") or nthreads or 1)

    def _converse(self, child: Child, local: dict[str, Any], log: LogStreamer) -> dict[str, Any]:
        """Send the run request; forward progress and log until ``done`` (or ``stale``)."""
        child.send({"op": "run", **local})
        limit = int(self.options.get("memory_limit", 0))
        check_at = time.monotonic() + 1.0
        while True:
            message = child.read(TICK_SECONDS)
            log.tick()
            if message is not None and message.get("task_id") == local["task_id"]:
                op = message.get("op")
                if op == "progress":
                    progress = {"p": message.get("progress"), "m": message.get("message")}
                    self.publisher.send({"op": "progress", **progress})
                elif op in ("done", "stale"):
                    return message
            if limit > 0 and time.monotonic() >= check_at:
                check_at = time.monotonic() + 1.0
                self._check_memory(child, limit)

    def _check_memory(self, child: Child, limit: int) -> None:
        used = trees_rss([child.pid], not GUARDED).get(child.pid, 0)
        if used > limit and not self.memory_used:
            self.memory_used = used
            child.terminate(float(self.options.get("grace", 2.0)))

    def _gone_frame(self, child: Child, gone: ChildGone, log: LogStreamer) -> bytes:
        base = {"worker": self.address, "pid": child.pid, "log_chunks": log.seq}
        if child.killed:
            return encode_frame({"status": "killed", **base}, log=log.tail())
        if self.memory_used:
            limit = int(self.options.get("memory_limit", 0))
            message = f"the task's processes used {self.memory_used} bytes, limit {limit}"
            error = {"type": MEMORY_LIMIT_EXCEEDED, "message": message}
        else:
            how = gone.detail or describe_exit(gone.returncode)
            message = f"task process: {how} on Dask worker {self.address} (see its log)"
            error = {"type": WORKER_CRASHED, "message": message}
        return encode_frame({"status": "error", "error": error, **base}, log=log.tail())

    def _done_frame(self, reply: dict[str, Any], local: dict[str, Any], log: LogStreamer) -> bytes:
        result = b""
        if reply.get("ok"):
            inline = reply.get("inline")
            if isinstance(inline, str):
                result = base64.b64decode(inline)
            else:  # the file the spec named, whatever the reply says
                with open(local["result_path"], "rb") as fh:
                    result = fh.read()
        fields = ("ok", "error", "preview", "size")
        header = {
            "status": "done",
            "reply": {name: reply.get(name) for name in fields},
            "worker": self.address,
            "pid": self.pid,
        }
        tail = log.tail()
        header["log_chunks"] = log.seq
        return encode_frame(header, result, tail)


def _usable(interpreter: str) -> bool:
    return (
        os.path.isabs(interpreter)
        and os.path.isfile(interpreter)
        and os.access(interpreter, os.X_OK)
    )


# -- out-of-band hooks (``Client.run``) ------------------------------------------------------


async def kill_task(key: str, grace: float) -> bool:
    """Stop the attempt ``key`` on this worker (or keep it from starting); True if it ran here."""
    child = POOL.doom(key)
    if child is None:
        return False
    await asyncio.to_thread(child.terminate, grace)
    return True


async def drain_idle() -> int:
    """Stop this worker's idle task processes (when a server stops); how many there were."""
    children = POOL.take_idle()

    def stop_all() -> None:
        for child in children:
            with contextlib.suppress(Exception):
                child.stop(1.0)

    await asyncio.to_thread(stop_all)
    return len(children)


def stand_in() -> None:
    """Stands for an attempt that waits for a free thread; asks a resource no worker has.

    It only shows Dask the waiting work (adaptive clusters scale up to it) and never runs.
    """
