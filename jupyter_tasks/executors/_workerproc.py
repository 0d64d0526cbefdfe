"""One worker process as the server sees it: launch, JSON messages, and watching it end.

The worker is a fresh interpreter (never a fork of the server) leading its own process
group.  Messages are newline-delimited JSON read with asyncio streams; the worker's end
is noticed by a thread waiting on the process, not by socket EOF alone, because a
task's forked child may still hold the socket open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import IO, Any

import psutil

from .._workerguard import AVAILABLE as GUARDED
from ..jsonout import dumps
from ..models import is_task_id
from ..worker import settle_spool, spool_tag
from ._chunkrun import ChunkRun
from ._proctree import describe_exit
from ._replies import deliver_progress
from .base import ProgressCallback, RunSpec

log = logging.getLogger(__name__)

WORKER_MODULE = "jupyter_tasks.worker"
#: Longest JSON line accepted from a worker (inline results are far smaller).
LINE_LIMIT = 64 << 20
#: After the process ended, how long to keep reading what it wrote before it died.
DRAIN_SECONDS = 0.5
STDERR_TAIL = 2000


def _runs(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _spool_task_id(spool: str) -> str | None:
    """The task id a spool was tagged with (``worker.spool_tag``), if it is one."""
    value = spool_tag(spool)
    return value if value is not None and is_task_id(value) else None


def sweep_spools(logs_dir: str, ours: set[int]) -> None:
    """Settle the spool files of workers that are gone (a server killed mid-run).

    What a spool holds is appended to the log of the task it was tagged with; empty and
    untagged spools are removed.  Workers in ``ours`` (started by this server) are left
    alone: their own end moves or removes their spool.
    """
    with contextlib.suppress(OSError), os.scandir(logs_dir) as entries:
        for entry in entries:
            parts = entry.name.split("-")
            if not (entry.name.startswith(".live-") and len(parts) >= 3 and parts[1].isdigit()):
                continue
            pid = int(parts[1])
            if pid in ours or _runs(pid):
                continue
            task_id = None if entry.name.endswith(".moving") else _spool_task_id(entry.path)
            log_path = None if task_id is None else os.path.join(logs_dir, f"{task_id}.log")
            with contextlib.suppress(OSError):
                settle_spool(entry.path, log_path)


#: Linux: requests are signalled on an eventfd the worker waits on, not by the socket.
#: A socket write wakes its reader as a "sync" wakeup: the kernel ran the woken worker
#: on the server's CPU and the server waited out the whole task inside its write
#: (220-570 us per request here, against 7-9 us with the eventfd).  Only guarded
#: workers (Linux) wait on it: the guard, not socket EOF, ends them with the server.
WAKE_BY_EVENTFD = GUARDED and hasattr(os, "eventfd")
#: Where requests are signalled that way, a chunk of runs may go in one request, each
#: begun once it takes a permit from a second eventfd (see ``_chunkrun``).
CHUNK_REQUESTS = WAKE_BY_EVENTFD


class WorkerStartError(Exception):
    """A worker could not be started: missing interpreter, failed import, no ``ready``."""


class Job:
    """One attempt of a task, from ``run()`` until its outcome; may visit several workers."""

    __slots__ = (
        "memory_used",
        "on_progress",
        "reply",
        "spec",
        "spool",
        "stop_reason",
        "waiter",
        "worker",
    )

    def __init__(self, spec: RunSpec, on_progress: ProgressCallback) -> None:
        self.spec = spec
        self.on_progress = on_progress
        self.reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.worker: WorkerProcess | None = None
        self.waiter: asyncio.Future[WorkerProcess] | None = None
        self.stop_reason: str | None = None  # "killed" or "memory"
        self.memory_used = 0
        self.spool: str | None = None  #: where the worker running it writes its output


def _popen(
    interpreter: str,
    env: dict[str, str],
    nice: int,
    wake_fd: int | None = None,
    permit_fd: int | None = None,
) -> tuple[subprocess.Popen[bytes], psutil.Process, socket.socket, IO[bytes]]:
    server_end, worker_end = socket.socketpair()
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 - owned by the WorkerProcess
    command = [interpreter, "-W", "ignore::RuntimeWarning:runpy", "-m", WORKER_MODULE]
    command += [str(worker_end.fileno()), "--nice", str(nice)]
    passed = [worker_end.fileno()]
    if wake_fd is not None:
        command += ["--wake", str(wake_fd)]
        passed.append(wake_fd)
    if permit_fd is not None:
        command += ["--permit", str(permit_fd)]
        passed.append(permit_fd)
    try:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            close_fds=True,
            pass_fds=passed,
            start_new_session=True,
        )
        try:
            # Taken before anyone can reap the child: psutil then refuses a reused pid.
            handle = psutil.Process(proc.pid)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    except BaseException:
        server_end.close()
        stderr.close()
        raise
    finally:
        worker_end.close()
    return proc, handle, server_end, stderr


async def launch(
    interpreter: str, env: dict[str, str], nice: int, on_gone: Callable[[WorkerProcess], None]
) -> WorkerProcess:
    """Start a worker process (off the loop); wait for ``ready`` with ``wait_ready``."""
    wake_fd = os.eventfd(0, os.EFD_SEMAPHORE | os.EFD_CLOEXEC) if WAKE_BY_EVENTFD else None
    permit_fd = None
    if CHUNK_REQUESTS:
        permit_fd = os.eventfd(0, os.EFD_SEMAPHORE | os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    try:
        parts = await asyncio.to_thread(_popen, interpreter, env, nice, wake_fd, permit_fd)
        return WorkerProcess(
            interpreter, *parts, on_gone=on_gone, wake_fd=wake_fd, permit_fd=permit_fd
        )
    except BaseException as exc:
        for fd in (wake_fd, permit_fd):
            if fd is not None:
                os.close(fd)
        if isinstance(exc, (OSError, psutil.Error)):
            raise WorkerStartError(f"cannot run {interpreter!r}: {exc}") from exc
        raise


class WorkerProcess:
    """A running worker: its process, its socket, the job it runs, and how it ended."""

    def __init__(
        self,
        interpreter: str,
        proc: subprocess.Popen[bytes],
        handle: psutil.Process,
        sock: socket.socket,
        stderr: IO[bytes],
        *,
        on_gone: Callable[[WorkerProcess], None],
        wake_fd: int | None = None,
        permit_fd: int | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.interpreter = interpreter
        self.pid = proc.pid
        self.handle = handle
        self.ready: asyncio.Future[None] = loop.create_future()
        self.exited: asyncio.Future[int] = loop.create_future()
        self.job: Job | None = None  #: the job it runs (a chunk's: the run going on now)
        self.chunk: ChunkRun | None = None  #: the chunk request it works through
        self.permit_fd = permit_fd  #: where a chunk's permits go (None: no chunk requests)
        self.tasks_done = 0
        self.idle_since = time.monotonic()
        self.doomed = False  # being retired or killed: never hand it a task again
        self.terminating: asyncio.Future[None] | None = None
        self.protocol_error: str | None = None
        self.spool_path: str | None = None
        self._spool_gen = 0
        self._token = os.urandom(4).hex()  # a reused pid never shares a spool name
        self._proc = proc
        self._sock = sock
        self._stderr = stderr
        self._on_gone = on_gone
        self._wake_fd = wake_fd
        self._wake_lock = threading.Lock()
        self._unwoken = False  # a request was written with wake=False, not woken for yet
        #: It said (in ``ready``) that it waits on the eventfd: one that cannot (no guard in
        #: its interpreter) or an older worker reads its socket at once, woken or not.
        self._waits_on_wake = False
        #: It said (in ``ready``) that it takes a chunk's shared fields once (``shared``).
        self.takes_shared_fields = False
        self._writer: asyncio.StreamWriter | None = None
        self.supervisor = loop.create_task(self._supervise())
        name = f"jupyter-tasks-worker-{self.pid}"
        threading.Thread(target=self._watch, args=(loop,), name=name, daemon=True).start()

    @property
    def is_ready(self) -> bool:
        return self.ready.done() and not self.ready.cancelled() and self.ready.exception() is None

    async def wait_ready(self, timeout: float) -> None:
        """Wait for the worker's ``ready``; a worker that does not answer in time is killed."""
        try:
            await asyncio.wait_for(asyncio.shield(self.ready), timeout)
        except asyncio.TimeoutError:
            self.kill_now()
            raise WorkerStartError(f"no answer from the worker within {timeout:g} s") from None

    def send(self, message: dict[str, Any], wake: bool = True) -> None:
        """Queue one message; ``ConnectionError`` when the worker's socket is already closed.

        With ``wake=False`` a worker that waits on its eventfd reads it only at the next
        ``wake()`` (see ``LocalExecutor.hold``).
        """
        if self._writer is None or self._writer.is_closing():
            raise ConnectionError("the worker's socket is closed")
        self._writer.write(dumps(message) + b"\n")
        if wake:
            self.wake()
        else:
            with self._wake_lock:
                self._unwoken = True

    @property
    def wakes_by_eventfd(self) -> bool:
        """Whether it reads a request only when woken (so a request can be held back)."""
        return self._wake_fd is not None and self._waits_on_wake

    def wake(self) -> None:
        """Signal one request on the eventfd; safe from any thread, a no-op once it is gone."""
        with self._wake_lock:  # the fd is never closed (and its number reused) under us
            if self._wake_fd is not None:
                os.eventfd_write(self._wake_fd, 1)
                self._unwoken = False

    def _left_unread(self) -> bool:
        """Once it is gone: whether it never read its last request (not woken for it, or
        the wake still pending), so the run it asked for never began."""
        with self._wake_lock:
            if self._wake_fd is None or not self._waits_on_wake:  # (``wakes_by_eventfd``)
                return False
            if self._unwoken:
                return True
            poller = select.poll()  # not select(): a busy server's fds pass 1023
            poller.register(self._wake_fd, select.POLLIN)
            try:
                return any(events & select.POLLIN for _, events in poller.poll(0))
            except OSError:
                return False  # unknown: as if it had read it (it may have begun)

    def spool_for(self, logs_dir: str) -> str:
        """The file the worker's next task writes its output to (see ``worker._Spool``)."""
        self.spool_path = f"{logs_dir}{os.sep}.live-{self.pid}-{self._token}{self._spool_gen}"
        return self.spool_path

    def retire_spool(self) -> None:
        """The worker handed its spool over as a task's log: the next task gets a new name."""
        self._spool_gen += 1
        self.spool_path = None

    def _rescue_spool(self) -> None:
        """Thread, once the worker is gone: a running task's output becomes its log."""
        path, job = self.spool_path, self.job
        if path is None:
            return
        owner = job if job is not None and job.spool == path else None
        with contextlib.suppress(OSError):
            settle_spool(path, None if owner is None else owner.spec.log_path)

    def kill_now(self) -> None:
        """SIGKILL the worker's group at once (protocol errors, start timeouts)."""
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Thread: wait for the exit, kill what is left of its group, reap, tell the loop."""
        if hasattr(os, "waitid"):
            # Wait without reaping, so the group id cannot be reused while we signal it.
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
            self._kill_group()
            returncode = self._proc.wait()
        else:
            returncode = self._proc.wait()
            self._kill_group()
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            loop.call_soon_threadsafe(self._set_exited, returncode)

    def _kill_group(self) -> None:
        """SIGKILL what is left of the group of a worker that ended: nothing is orphaned."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def _set_exited(self, returncode: int) -> None:
        if not self.exited.done():
            self.exited.set_result(returncode)

    async def _supervise(self) -> None:
        """Owns the reader; when the process ends, settles whatever still waits on it."""
        reading: asyncio.Task[None] | None = None
        try:
            reader, self._writer = await asyncio.open_connection(sock=self._sock, limit=LINE_LIMIT)
            reading = asyncio.ensure_future(self._read(reader))
            returncode = await self.exited
            await asyncio.wait({reading}, timeout=DRAIN_SECONDS)
            try:
                await asyncio.to_thread(self._rescue_spool)
            finally:
                self._finish(returncode)
        finally:
            if reading is not None and not reading.done():
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reading
            if self._writer is not None:
                self._writer.close()
            else:
                self._sock.close()
            with self._wake_lock:
                for fd in (self._wake_fd, self.permit_fd):
                    if fd is not None:
                        os.close(fd)
                self._wake_fd = self.permit_fd = None
            self._stderr.close()
            self._on_gone(self)

    def _finish(self, returncode: int) -> None:
        if not self.ready.done():
            detail = self._stderr_tail()
            message = f"{describe_exit(returncode)} before it was ready"
            self.ready.set_exception(
                WorkerStartError(f"{message}: {detail}" if detail else message)
            )
        if self.chunk is not None:
            self.chunk.worker_exited({"op": "exit", "returncode": returncode})
            return
        job = self.job
        if job is not None and not job.reply.done():
            reply: dict[str, Any] = {"op": "exit", "returncode": returncode}
            if self._left_unread():
                reply["unread"] = True  # the run never began: it may go to another worker
            job.reply.set_result(reply)

    def _stderr_tail(self) -> str:
        fd = self._stderr.fileno()
        size = os.fstat(fd).st_size
        data = os.pread(fd, STDERR_TAIL, max(0, size - STDERR_TAIL))
        return data.decode(errors="replace").strip()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await reader.readline()
                if not line:
                    return
                message = json.loads(line)
                if not isinstance(message, dict):
                    raise ValueError("not a JSON object")
            except ConnectionResetError:
                return  # it ended with a request unread (a chunk's runs skipped): like EOF
            except ValueError as exc:
                # Killed, and what it wrote before that is still read: a chunk's replies.
                if self.protocol_error is None:
                    log.error("worker %d broke the protocol (%s); killing it", self.pid, exc)
                    self.protocol_error = str(exc) or type(exc).__name__
                    self.kill_now()
                continue
            except ConnectionError as exc:
                log.error("worker %d broke the protocol (%s); killing it", self.pid, exc)
                self.protocol_error = str(exc) or type(exc).__name__
                self.kill_now()
                return
            self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if self.chunk is not None and op != "ready":
            try:
                self.chunk.dispatch(message)
            except Exception as exc:  # a malformed reply: the run going on fails with it
                log.error("worker %d sent a bad %s (%r); killing it", self.pid, op, exc)
                self.protocol_error = f"bad {op}: {exc!r}"
                self.kill_now()
            return
        job = self.job
        if op == "ready":
            self._waits_on_wake = message.get("wakes") is True
            self.takes_shared_fields = message.get("shared") is True
            if not self.ready.done():
                self.ready.set_result(None)
        elif job is None or message.get("task_id") != job.spec.task_id:
            return
        elif op == "progress":
            deliver_progress(
                job.on_progress, job.spec.task_id, message.get("progress"), message.get("message")
            )
        elif op in ("done", "stale") and not job.reply.done():
            job.reply.set_result(message)
