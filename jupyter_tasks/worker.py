"""What runs inside a worker process: the main loop, the task context, result and error capture.

``LocalExecutor`` starts ``python -m jupyter_tasks.worker <fd> [--nice N] [--wake FD]
[--permit FD]`` as a fresh interpreter and talks newline-delimited JSON over the inherited
socket ``fd``: a ``run`` request at a time, or a ``chunk`` of runs, each begun once it
takes a permit (see ``_run_chunk``).  Only plain data crosses the socket; the result's
pickle travels as base64 or as a file path, so the server never unpickles anything.

Top-level imports are standard library only: ``import jupyter_tasks`` imports this module
for ``set_progress``, and that must stay cheap in a kernel.
"""

from __future__ import annotations

import base64
import contextlib
import faulthandler
import importlib
import json
import math
import numbers
import os
import pickle
import queue
import reprlib
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

#: Seconds between two progress messages; calls in between only keep the latest value.
PROGRESS_INTERVAL = 0.05
PREVIEW_REPR_MAX = 1000
PREVIEW_VALUE_MAX = 64 * 1024
#: Pickles larger than this get no JSON ``value`` (dumping them would only be discarded).
PREVIEW_JSON_PICKLE_MAX = 4 * PREVIEW_VALUE_MAX
MESSAGE_MAX = 10_000
TRACEBACK_MAX = 100_000
PROGRESS_MESSAGE_MAX = 1000

_progress: _Progress | None = None


def set_progress(fraction: float | None, message: str | None = None) -> None:
    """Report the running task's progress, 0..1 (or None: unknown) and an optional message.

    A no-op outside a worker, so task code runs unchanged in a notebook.  Values are
    clamped to 0..1; sends are throttled, and the latest value always arrives before
    the task's end.
    """
    value = None
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
            raise TypeError(f"progress must be a number from 0 to 1 or None, not {fraction!r}")
        if math.isnan(fraction):
            raise ValueError("progress must not be NaN")
        value = min(1.0, max(0.0, float(fraction)))
    if _progress is not None:
        text = None if message is None else str(message)[:PROGRESS_MESSAGE_MAX]
        _progress.report(value, text)


class _Channel:
    """The worker's end of the socket; sends take a lock: progress may come from any thread."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            self._sock.sendall(data)

    def requests(self, wake_fd: int | None = None) -> Iterator[dict[str, Any]]:
        """The server's requests; EOF means the server is gone, so end everything.

        With ``wake_fd`` (an eventfd) the server signals each request it wrote there,
        and this waits on it rather than on the socket (see ``WAKE_BY_EVENTFD``).
        """
        try:
            with self._sock.makefile("rb") as stream:
                while True:
                    if wake_fd is not None:
                        os.eventfd_read(wake_fd)
                    line = stream.readline()
                    if not line:
                        break
                    yield json.loads(line)
        except (OSError, ValueError):
            pass
        _die_with_group()

    def read_forever(self, inbox: queue.SimpleQueue[dict[str, Any]]) -> None:
        """Thread: feed requests to the main thread, which may be deep in a task meanwhile."""
        for request in self.requests():
            inbox.put(request)


def _die_with_group() -> None:
    """Kill this worker's process group and its descendants (some may have left the group)."""
    with contextlib.suppress(Exception):
        import psutil

        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
    try:
        os.killpg(os.getpgrp(), signal.SIGKILL)
    finally:
        os._exit(1)


class _Progress:
    """Throttles progress messages: at most one per ``PROGRESS_INTERVAL``, latest value wins."""

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel
        self._cond = threading.Condition()
        self._task_id: str | None = None
        self._pending: tuple[float | None, str | None] | None = None
        self._last_sent = 0.0
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()  # a forked child of a task must not write to our socket

    def begin(self, task_id: str) -> None:
        with self._cond:
            self._task_id, self._pending, self._last_sent = task_id, None, 0.0

    def end(self) -> None:
        """Send what is still pending, then ignore reports until the next task."""
        with self._cond:
            if self._pending is not None:
                self._send_locked()
            self._task_id = None

    def report(self, fraction: float | None, message: str | None) -> None:
        with self._cond:
            if self._task_id is None or os.getpid() != self._pid:
                return
            self._pending = (fraction, message)
            if time.monotonic() - self._last_sent >= PROGRESS_INTERVAL:
                self._send_locked()
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._flush_later, daemon=True)
                self._thread.start()
            self._cond.notify()

    def _flush_later(self) -> None:
        with self._cond:
            while True:
                if self._pending is None or self._task_id is None:
                    self._cond.wait()
                    continue
                delay = self._last_sent + PROGRESS_INTERVAL - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                self._send_locked()

    def _send_locked(self) -> None:
        assert self._pending is not None
        fraction, message = self._pending
        self._pending = None
        self._last_sent = time.monotonic()
        self._channel.send(
            {"op": "progress", "task_id": self._task_id, "progress": fraction, "message": message}
        )


class _Context:
    """The ``TaskContext`` a task type's ``run`` receives."""

    def __init__(self, spec: dict[str, Any], scope: _TaskScope) -> None:
        self.task_id: str = spec["task_id"]
        self.root_dir: str = spec["root_dir"]
        self.blob_dir: str = spec["blob_dir"]
        self._scope = scope

    def set_progress(self, fraction: float | None, message: str | None = None) -> None:
        set_progress(fraction, message)

    def log_fd(self) -> int:
        return self._scope.log_fd()


class _Spool:
    """The worker's output file, reused by every task that prints nothing.

    Creating a file per task is the dearest step of a short task on a journalling file
    system, and most tasks print nothing.  So output goes to a spool file the server
    names (``spool_path``); a task that wrote something hands the spool over as its log
    (a rename, or an append after an earlier attempt's output) and the spool is
    *retired*: the server names a fresh one for the next task, so a name never holds
    two tasks' output.
    """

    def __init__(self) -> None:
        self.path: str | None = None
        self.fd = -1

    def open(self, path: str) -> int:
        if path != self.path:
            if self.path is not None:  # empty (a spool with output was retired): drop it
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            self.close()
            self.fd = _open_appending(path, truncate=True)
            self.path = path
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.path, self.fd = None, -1

    def hand_over(self, log_path: str, retire: bool) -> bool:
        """Make what the task wrote its log; True when the spool was retired.

        ``retire`` hands over even an empty spool: something of the task's may still
        hold it open, and what it writes later belongs in this task's log, not the next.
        """
        if self.path is None or (not retire and os.fstat(self.fd).st_size == 0):
            return False
        spool = self.path
        self.close()
        with contextlib.suppress(OSError):  # a full disk: the output is lost, the name retired
            hand_over_output(spool, log_path)
        return True


#: The extended attribute naming the task whose output a spool holds (where the file
#: system has them): a server killed mid-task leaves spools that the next start sweeps,
#: and this tells it whose log each belongs to.
SPOOL_TASK_ATTRIBUTE = "user.jupyter_tasks.task_id"


def spool_tag(spool: str | int) -> str | None:
    """The task id a spool (a path or an open fd) is tagged with; None when it has none."""
    try:
        return os.getxattr(spool, SPOOL_TASK_ATTRIBUTE).decode("ascii")
    except (AttributeError, OSError, UnicodeDecodeError):  # (no tags on some file systems)
        return None


def hand_over_output(spool: str, log_path: str) -> None:
    """Move a spool's content to the end of a task's log; the spool's name is gone after.

    The spool leaves its name in one atomic step (a rename) before anything is copied, so
    a reader that still finds the spool under its name knows the log does not hold it yet.
    """
    if not os.path.exists(log_path):
        os.rename(spool, log_path)
        return
    moving = spool + ".moving"  # an earlier attempt's output comes first: append
    os.rename(spool, moving)
    try:
        with open(moving, "rb") as src, open(log_path, "ab") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    finally:
        os.unlink(moving)


def settle_spool(spool: str, log_path: str | None) -> None:
    """A spool whose worker is gone: what it holds goes to ``log_path``, else it is removed."""
    if log_path is not None and os.path.getsize(spool) > 0:
        hand_over_output(spool, log_path)
    else:
        os.unlink(spool)


def _open_appending(path: str, truncate: bool = False) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
    try:
        return os.open(path, flags, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, flags, 0o644)


_SPOOL = _Spool()


class _TaskScope:
    """Per-task process state: output into the log, cwd and ``sys.path``, SIGTERM's handler.

    Everything is put back afterwards, or set anew before each task (the cwd), so one
    task cannot leak its setup into the next.  Each system call here is paid by every
    task, so the worker's own stdout and stderr are copied once, not per task (high up,
    out of the way of the task's own descriptors), and the task gets a copy of its log's
    descriptor only when it asks for one (``log_fd``).
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self._log_path = os.path.abspath(spec["log_path"])
        self._spool_path: str | None = spec.get("spool_path")
        self._task_id: str = spec["task_id"]
        self._root = os.path.abspath(spec["root_dir"])
        self._out_fd = -1  # where the task's output goes: the spool, or its own log
        self._own_fd = False  # (its own log: closed afterwards)
        self._copy_fd = -1  # the copy handed to the task (``log_fd``)
        self.log_fd_shared = False
        self.spool_retired = False

    def log_fd(self) -> int:
        """A descriptor of the task's log for processes it starts; closed after the task."""
        self.log_fd_shared = True  # a process it starts may write after the task
        if self._copy_fd < 0:
            self._copy_fd = os.dup(self._out_fd)  # the task may close its copy
        return self._copy_fd

    def __enter__(self) -> _TaskScope:
        global _std_fds
        os.chdir(self._root)  # (every time: a task may have left another cwd)
        if self._spool_path is not None:
            self._out_fd = _SPOOL.open(self._spool_path)
            with contextlib.suppress(AttributeError, OSError):  # not everywhere
                os.setxattr(self._out_fd, SPOOL_TASK_ATTRIBUTE, self._task_id.encode())
        else:
            self._out_fd, self._own_fd = _open_appending(self._log_path), True
        _flush_std()
        self._streams = (sys.stdout, sys.stderr)
        if _std_fds is None:
            _std_fds = (_keep_fd(1), _keep_fd(2))
        os.dup2(self._out_fd, 1)
        os.dup2(self._out_fd, 2)
        self._on_term = signal.getsignal(signal.SIGTERM)
        if sys.path[:1] != [self._root]:
            sys.path.insert(0, self._root)
        # Modules created a moment ago must be found (the finder caches directory listings).
        invalidate = getattr(sys.path_importer_cache.get(self._root), "invalidate_caches", None)
        if invalidate is not None:
            invalidate()
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout, sys.stderr = self._streams
        _flush_std()
        assert _std_fds is not None
        try:
            for fd, saved in zip((1, 2), _std_fds, strict=True):
                os.dup2(saved, fd)
        except OSError:  # the task closed the worker's own copies: end it, not the next task
            os._exit(STD_LOST_EXIT)
        for fd in (self._copy_fd, self._out_fd if self._own_fd else -1):
            if fd >= 0:
                with contextlib.suppress(OSError):  # the task may have closed it
                    os.close(fd)
        if self._spool_path is not None:
            retire = self.log_fd_shared or _has_children()
            self.spool_retired = _SPOOL.hand_over(self._log_path, retire)
        if signal.getsignal(signal.SIGTERM) is not self._on_term:  # a task may ignore SIGTERM
            signal.signal(signal.SIGTERM, self._on_term)


#: The worker's own descriptors 1 and 2, copied before the first task (see ``_TaskScope``).
_std_fds: tuple[int, int] | None = None
#: The worker's exit code when a task closed those copies: the task fails, the worker
#: is replaced.
STD_LOST_EXIT = 70


def _keep_fd(fd: int) -> int:
    """A copy of ``fd`` numbered 100 or above where allowed (tasks' own descriptors take
    the lowest free numbers), closed on exec."""
    import fcntl  # (here: kernels import this module, and not only on POSIX)

    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100)
    except (AttributeError, OSError):  # (a limit of open files under 100)
        return os.dup(fd)


def _has_children() -> bool:
    """Whether a child of this worker is still there (one syscall; assume so elsewhere)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    except (AttributeError, OSError):
        return True
    return True


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()


class _ModuleTimes:
    """Modification times of imported modules under the root, to refuse running changed code."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._scanned = 0  # len(sys.modules) at the last scan
        self._files: dict[str, int] = {}  # path -> mtime_ns when first seen (-1: suspect)
        self._roots: dict[str, str] = {}

    def changed(self) -> bool:
        for path, mtime in self._files.items():
            try:
                if os.stat(path).st_mtime_ns != mtime:
                    return True
            except OSError:
                return True
        return False

    def record(self, root_dir: str, started_ns: int) -> None:
        """Note the modules imported by the last task; a file newer than its start is suspect."""
        if len(sys.modules) == self._scanned:
            return  # nothing was imported (the usual case): skip the set difference
        self._scanned = len(sys.modules)
        root = self._roots.get(root_dir)
        if root is None:
            root = self._roots[root_dir] = os.path.join(os.path.realpath(root_dir), "")
        for name in sys.modules.keys() - self._seen:
            self._seen.add(name)
            path = getattr(sys.modules.get(name), "__file__", None)
            if not isinstance(path, str):
                continue
            path = os.path.realpath(path)
            if not path.startswith(root) or path in self._files:
                continue
            try:
                mtime = os.stat(path).st_mtime_ns
            except OSError:
                continue
            self._files[path] = -1 if mtime >= started_ns else mtime


class _TooLarge(Exception):
    pass


class _SpillWriter:
    """Collects a pickle in memory; past ``inline_max`` it moves to the result file.

    Past ``hard_max`` it raises ``_TooLarge`` at once, so a huge result is never written whole.
    """

    def __init__(self, path: str, inline_max: int, hard_max: int) -> None:
        self.path, self._inline_max, self._hard_max = path, inline_max, hard_max
        self.buffer = bytearray()
        self.file: Any = None
        self.size = 0

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        self.size += size
        if self.size > self._hard_max:
            raise _TooLarge
        if self.file is None and self.size > self._inline_max:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            self.file = open(self.path, "wb")  # noqa: SIM115 - closed by close()
            self.file.write(self.buffer)
            self.buffer = bytearray()
        if self.file is not None:
            self.file.write(data)
        else:
            self.buffer += data
        return size

    def close(self, discard: bool = False) -> None:
        if self.file is not None:
            self.file.close()
            if discard:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)


def _pickle_result(value: Any, spec: dict[str, Any]) -> _SpillWriter:
    """Pickle with protocol 5; fall back to cloudpickle for what plain pickle cannot name."""
    args = (spec["result_path"], spec["inline_result_max"], spec["result_max_bytes"])
    writer = _SpillWriter(*args)
    try:
        pickle.Pickler(writer, protocol=5).dump(value)
    except Exception as exc:
        writer.close(discard=True)
        if isinstance(exc, _TooLarge):
            raise
        import cloudpickle

        writer = _SpillWriter(*args)
        try:
            cloudpickle.Pickler(writer, protocol=5).dump(value)
        except BaseException:
            writer.close(discard=True)
            raise
    writer.close()
    return writer


def _result_reply(value: Any, spec: dict[str, Any]) -> dict[str, Any]:
    try:
        writer = _pickle_result(value, spec)
    except _TooLarge:
        limit = spec["result_max_bytes"]
        message = f"the result's pickle is larger than result_max_bytes ({limit} bytes)"
        return {"ok": False, "error": {"type": "ResultTooLarge", "message": message}}
    except Exception as exc:
        error = _error_info(exc)
        error["message"] = f"the result could not be pickled: {error['message']}"
        return {"ok": False, "error": error}
    spilled = writer.file is not None
    inline = None if spilled else base64.b64encode(writer.buffer).decode()
    preview = _preview(value, writer.size)
    file = spec["result_path"] if spilled else None
    return {"ok": True, "preview": preview, "size": writer.size, "inline": inline, "file": file}


def _make_repr() -> reprlib.Repr:
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxtuple, short.maxdict = 6, 100, 100, 50
    short.maxset, short.maxfrozenset, short.maxdeque, short.maxarray = 100, 100, 100, 100
    short.maxstring = short.maxother = short.maxlong = PREVIEW_REPR_MAX
    return short


_REPR = _make_repr()
_SCALARS = (int, float, bool, type(None), complex)


def _preview(value: Any, pickle_size: int) -> dict[str, Any]:
    """``{"type", "repr", "value"?}``: ``value`` only when the object is small, plain JSON."""
    cls = type(value)
    name = cls.__qualname__
    if cls.__module__ != "builtins":
        name = f"{cls.__module__}.{name}"
    try:
        text = repr(value) if cls in _SCALARS else _REPR.repr(value)
    except Exception as exc:
        text = f"<repr failed: {type(exc).__name__}: {exc}>"
    if len(text) > PREVIEW_REPR_MAX:
        text = text[: PREVIEW_REPR_MAX - 3] + "..."
    preview: dict[str, Any] = {"type": name, "repr": text}
    if pickle_size <= PREVIEW_JSON_PICKLE_MAX:
        try:
            encoded = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            pass
        else:
            if len(encoded) <= PREVIEW_VALUE_MAX:
                preview["value"] = json.loads(encoded)
    return preview


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 15] + "... (truncated)"


def _error_info(exc: BaseException) -> dict[str, Any]:
    """``{"type", "message", "traceback"}`` without the worker's own frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    try:
        message = str(exc)
    except Exception:
        message = f"<str() of {type(exc).__name__} failed>"
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return {
        "type": type(exc).__name__,
        "message": _clip(message, MESSAGE_MAX),
        "traceback": _clip(text, TRACEBACK_MAX),
    }


def load_object(path: str) -> Any:
    """Import ``"module:Qual.name"`` and return the object it names."""
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one task as described by a ``run`` request and return the ``done`` reply."""
    scope = _TaskScope(spec)
    try:
        with scope:
            reply = _run_in_scope(spec, scope)
    except OSError as exc:  # the root or the log cannot be used: the task never started
        reply = {"ok": False, "error": _error_info(exc)}
    return {"op": "done", "task_id": spec["task_id"], "spool_retired": scope.spool_retired, **reply}


def _run_in_scope(spec: dict[str, Any], scope: _TaskScope) -> dict[str, Any]:
    assert _progress is not None
    _progress.begin(spec["task_id"])
    try:
        task_type = load_object(spec["type_path"])()
        value = task_type.run(spec["parameters"], _Context(spec, scope))
    except BaseException as exc:
        return {"ok": False, "error": _error_info(exc)}
    finally:
        _progress.end()
    return _result_reply(value, spec)


def _hook_tqdm() -> None:
    """Let a tqdm bar drive the task's progress, where tqdm is installed."""
    try:
        bar_class: Any = importlib.import_module("tqdm.std").tqdm
    except Exception:
        return
    for method_name in ("refresh", "close"):
        original = getattr(bar_class, method_name)

        def hooked(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            result = __original(self, *args, **kwargs)
            _report_bar(self)
            return result

        setattr(bar_class, method_name, hooked)


def _report_bar(bar: Any) -> None:
    """Outermost bars only (``pos`` 0): nested bars would make progress jump back and forth."""
    with contextlib.suppress(Exception):  # a progress hook must never break the task
        if _progress is not None and getattr(bar, "pos", 0) in (0, None):
            n, total, desc = bar.n, bar.total, bar.desc or ""
            counts = f"{n}/{total}" if total else f"{n}"
            set_progress(n / total if total else None, f"{desc}: {counts}" if desc else counts)


def _setup(sock: socket.socket) -> _Channel:
    """Process-wide setup, once per worker."""
    global _progress
    os.set_inheritable(sock.fileno(), False)  # children of tasks must not hold the socket
    faulthandler.enable()
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(line_buffering=True)
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]  # the server's cwd is not the tasks' root
    channel = _Channel(sock)
    _progress = _Progress(channel)
    importlib.import_module("psutil")  # needed on the way out, when importing may be unsafe
    importlib.import_module("jupyter_tasks.tasktypes.base")  # pay for pydantic while warming
    _hook_tqdm()
    return channel


def main(argv: list[str] | None = None) -> int:
    """Serve ``run`` requests until told to exit, or until a module under the root changed."""
    args = sys.argv[1:] if argv is None else argv
    fd = int(args[0])
    nice = int(args[args.index("--nice") + 1]) if "--nice" in args else 0
    wake_fd = int(args[args.index("--wake") + 1]) if "--wake" in args else None
    permit_fd = int(args[args.index("--permit") + 1]) if "--permit" in args else None
    for passed in (wake_fd, permit_fd):
        if passed is not None:
            os.set_inheritable(passed, False)  # children of tasks must not hold it
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
    from ._workerguard import guard  # here: kernels import this module and need no guard

    guarded = guard(fd)
    channel = _setup(socket.socket(fileno=fd))
    if guarded:
        # The guard ends this process when the server goes: read requests right here,
        # without a thread hop per task.
        requests = channel.requests(wake_fd)
    else:
        inbox: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        threading.Thread(target=channel.read_forever, args=(inbox,), daemon=True).start()
        requests = iter(inbox.get, None)
    # "wakes": it waits on the eventfd before each request, so a request can be held back.
    waits = guarded and wake_fd is not None
    # "shared": a chunk's fields common to its runs may come once (see ``_run_chunk``).
    channel.send(
        {
            "op": "ready",
            "pid": os.getpid(),
            "python": sys.executable,
            "wakes": waits,
            "shared": True,
        }
    )
    modules = _ModuleTimes()
    for request in requests:
        if request.get("op") == "exit":
            return 0
        if request.get("op") == "chunk":
            runs = request["runs"]
            if not _run_chunk(channel, modules, runs, request.get("shared") or {}, permit_fd):
                return 0
            continue
        if request.get("op") != "run":
            continue
        if modules.changed():
            channel.send({"op": "stale", "task_id": request["task_id"]})
            return 0
        _run_and_reply(channel, modules, request)
    return 0


def _run_and_reply(channel: _Channel, modules: _ModuleTimes, request: dict[str, Any]) -> None:
    started_ns = time.time_ns()
    reply = run_one(request)
    modules.record(request["root_dir"], started_ns)
    channel.send(reply)


def _run_chunk(
    channel: _Channel,
    modules: _ModuleTimes,
    runs: list[dict[str, Any]],
    shared: dict[str, Any],
    permit_fd: int | None,
) -> bool:
    """Run a chunk's runs in order, each once its permit is taken; False: exit (stale).

    Each run is its own fields over the ``shared`` ones.  The server puts one permit
    per run on the eventfd ``permit_fd`` and may take back the ones not taken yet,
    atomically: a run whose permit is gone never begins, and neither does any after it
    (they are ``skipped``, in one message).
    """
    for index, own in enumerate(runs):
        request = {**shared, **own}
        if not _take_permit(permit_fd):
            channel.send({"op": "skipped", "task_ids": [r["task_id"] for r in runs[index:]]})
            return True
        if modules.changed():
            channel.send({"op": "stale", "task_id": request["task_id"]})
            return False
        _run_and_reply(channel, modules, request)
    return True


def _take_permit(permit_fd: int | None) -> bool:
    """Take one permit (a semaphore eventfd, non-blocking); False when there is none."""
    if permit_fd is None:
        return False
    try:
        os.eventfd_read(permit_fd)
    except BlockingIOError:
        return False
    return True


if __name__ == "__main__":
    # Run the imported module's main: ``jupyter_tasks`` already imported it, and
    # ``set_progress`` must see the same module state as this loop.
    # A task's leftover non-daemon threads must not keep the worker alive: exit hard.
    from jupyter_tasks.worker import _flush_std
    from jupyter_tasks.worker import main as _main

    _code = _main()
    _flush_std()
    os._exit(_code)
