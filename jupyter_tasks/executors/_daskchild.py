"""Task processes on a Dask worker: warm ``jupyter_tasks.worker`` children, one task each at a time.

A Dask worker thread cannot be interrupted, so the Dask task only talks to a child process
(the JSON protocol ``LocalExecutor`` uses) and a kill stops the child's whole process tree.
Children stay warm between tasks, one pool per interpreter in each Dask worker process, and
are reaped when idle.  A child whose Dask worker dies sees its socket close and kills its
own process group (``worker.py``), so nothing outlives the worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections import OrderedDict
from typing import IO, Any

import psutil

from ._proctree import terminate_tree
from ._workerproc import _popen

#: Longest JSON line accepted from a child (inline results are far smaller).
LINE_LIMIT = 64 << 20
STDERR_TAIL = 2000
#: How long a child that closed its socket gets to exit before it is killed.
EXIT_WAIT_SECONDS = 5.0
REAP_INTERVAL_SECONDS = 5.0
#: Keys killed before their task started, remembered so that the task refuses to start.
DOOMED_MAX = 10_000


class ChildStartError(Exception):
    """A child process could not be started or did not say ``ready``."""


class ChildGone(Exception):
    """The child process ended (or broke the protocol) while we waited for it."""

    def __init__(self, returncode: int, detail: str = "") -> None:
        super().__init__(detail or f"exit status {returncode}")
        self.returncode = returncode
        self.detail = detail


class Child:
    """One ``python -m jupyter_tasks.worker`` process leading its own process group."""

    def __init__(self, interpreter: str, env: dict[str, str], nice: int) -> None:
        try:
            proc, handle, sock, stderr = _popen(interpreter, env, nice)
        except (OSError, psutil.Error) as exc:
            raise ChildStartError(f"cannot run {interpreter!r}: {exc}") from exc
        self.interpreter = interpreter
        self.pid = proc.pid
        self.handle = handle
        self.killed = False  #: set by the kill hook before it terminates the tree
        self.tasks_done = 0
        self.idle_since = time.monotonic()
        self._proc = proc
        self._sock = sock
        self._stderr: IO[bytes] = stderr
        self._buffer = bytearray()
        self._returncode: int | None = None

    def wait_ready(self, timeout: float) -> None:
        """Block until the child's ``ready``; a child that fails or stays silent is killed."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self.read(max(0.0, deadline - time.monotonic()))
            except ChildGone as gone:
                tail = self.stderr_tail()
                raise ChildStartError(f"{gone} before it was ready: {tail}".rstrip(": ")) from None
            if message is not None and message.get("op") == "ready":
                return
            if time.monotonic() >= deadline:
                self.kill_now()
                raise ChildStartError(f"no answer from the task process within {timeout:g} s")

    def send(self, message: dict[str, Any]) -> None:
        """Send one request; ``ChildGone`` when the socket is already closed."""
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        try:
            self._sock.sendall(data)
        except OSError:
            raise ChildGone(self.reap(), "the task process closed its socket") from None

    def read(self, timeout: float) -> dict[str, Any] | None:
        """The next message, or None after ``timeout``; ``ChildGone`` once the child ended."""
        deadline = time.monotonic() + timeout
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[: newline + 1]
                return self._decode(line)
            if len(self._buffer) > LINE_LIMIT:
                self.kill_now()
                raise ChildGone(self.reap(), "the task process sent an over-long message")
            data = self._recv(deadline)
            if data is None:
                return None
            self._buffer += data

    def _decode(self, line: bytes) -> dict[str, Any] | None:
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            self.kill_now()
            raise ChildGone(self.reap(), "the task process broke the protocol")
        return message

    def _recv(self, deadline: float) -> bytes | None:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if self.exited():  # a forked grandchild may hold the socket open: ask the pid
                    raise ChildGone(self.reap())
                return None
            self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            if not data:
                raise ChildGone(self.reap())
            return data

    def exited(self) -> bool:
        """True once the process has ended (without reaping it: its group id stays ours)."""
        if self._returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def reap(self) -> int:
        """Wait for the exit (killing a child that lingers), clear its group, return its status."""
        if self._returncode is not None:
            return self._returncode
        deadline = time.monotonic() + EXIT_WAIT_SECONDS
        while not self.exited() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.exited():
            self.kill_now()
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # what the task left in the group
        self._returncode = self._proc.wait()
        self.close()
        return self._returncode

    def kill_now(self) -> None:
        """SIGKILL the child's group at once."""
        if self._returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)

    def terminate(self, grace: float) -> None:
        """SIGTERM the child's tree, SIGKILL after ``grace``; reaping is left to its reader."""
        if self._returncode is None:
            terminate_tree(self.handle, grace)

    def stop(self, grace: float) -> None:
        """Terminate and reap (an idle child nobody reads from)."""
        self.terminate(grace)
        self.reap()

    def stderr_tail(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            fd = self._stderr.fileno()
            size = os.fstat(fd).st_size
            data = os.pread(fd, STDERR_TAIL, max(0, size - STDERR_TAIL))
            return data.decode(errors="replace").strip()
        return ""

    def close(self) -> None:
        self._sock.close()
        self._stderr.close()


class Pool:
    """The children of one Dask worker process: idle ones per interpreter, busy ones per key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[str, list[Child]] = {}
        self._running: dict[str, Child] = {}
        self._doomed: OrderedDict[str, None] = OrderedDict()
        self._reaper: threading.Thread | None = None
        self.idle_seconds = 60.0

    def acquire(self, interpreter: str, env: dict[str, str], nice: int, timeout: float) -> Child:
        """An idle child of ``interpreter``, or a new one once it is ready."""
        with self._lock:
            idle = self._idle.get(interpreter, [])
            while idle:
                child = idle.pop()
                if not child.exited():
                    return child
                child.reap()
            self._start_reaper()
        child = Child(interpreter, env, nice)
        try:
            child.wait_ready(timeout)
        except BaseException:
            child.kill_now()
            child.reap()
            raise
        return child

    def release(self, child: Child, keep: bool, max_idle: int) -> None:
        """Keep a healthy child for the next task (up to ``max_idle`` per interpreter)."""
        if keep and not child.killed and not child.exited():
            with self._lock:
                idle = self._idle.setdefault(child.interpreter, [])
                if len(idle) < max_idle:
                    child.idle_since = time.monotonic()
                    idle.append(child)
                    return
        child.stop(1.0)

    def begin(self, key: str, child: Child) -> bool:
        """Record that ``child`` runs ``key``; False when ``key`` was killed already."""
        with self._lock:
            if key in self._doomed:
                return False
            self._running[key] = child
            return True

    def end(self, key: str) -> None:
        with self._lock:
            self._running.pop(key, None)

    def is_doomed(self, key: str) -> bool:
        with self._lock:
            return key in self._doomed

    def doom(self, key: str) -> Child | None:
        """Remember that ``key`` is killed; the child running it (marked killed), if any."""
        with self._lock:
            self._doomed[key] = None
            while len(self._doomed) > DOOMED_MAX:
                self._doomed.popitem(last=False)
            child = self._running.get(key)
            if child is not None:
                child.killed = True
            return child

    def take_idle(self, older_than: float | None = None) -> list[Child]:
        """Remove and return idle children (all, or those idle since before ``older_than``)."""
        taken: list[Child] = []
        with self._lock:
            for idle in self._idle.values():
                keep = [c for c in idle if older_than is not None and c.idle_since >= older_than]
                taken += [c for c in idle if c not in keep]
                idle[:] = keep
        return taken

    def _start_reaper(self) -> None:
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(
                target=self._reap_forever, name="jupyter-tasks-reaper", daemon=True
            )
            self._reaper.start()

    def _reap_forever(self) -> None:
        while True:
            time.sleep(REAP_INTERVAL_SECONDS)
            for child in self.take_idle(time.monotonic() - self.idle_seconds):
                with contextlib.suppress(Exception):
                    child.stop(1.0)


#: The pool of this Dask worker process (tasks and the kill hook share it).
POOL = Pool()
