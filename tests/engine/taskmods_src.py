"""Task functions the engine tests run; copied into each test's root directory as taskmods.py."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jupyter_tasks


def add(a: int, b: int) -> int:
    return a + b


def wait_for(path: str, timeout: float = 120.0) -> str:
    """Block until ``path`` exists (a test's gate), then return its content."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)
    return Path(path).read_text()


def record(log: str, name: str) -> str:
    """Append ``name`` to ``log`` (one line per run) and return it."""
    with open(log, "a") as fh:
        fh.write(name + "\n")
    return name


def sleeper_with_child(pidfile: str, ignore_term: bool = False, setsid: bool = False) -> None:
    """Start a child, write both pids, then sleep until killed."""
    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=setsid
    )
    Path(pidfile + ".tmp").write_text(f"{os.getpid()} {child.pid}")
    os.replace(pidfile + ".tmp", pidfile)
    time.sleep(600)


def exit_hard(code: int) -> None:
    os._exit(code)


def segfault() -> None:
    ctypes.string_at(0)


def hog(chunk_mb: int = 50, total_mb: int = 4000) -> None:
    chunks = []
    for _ in range(total_mb // chunk_mb):
        chunks.append(bytearray(os.urandom(1)) * (chunk_mb << 20))
        time.sleep(0.02)


def big_result(n: int) -> bytes:
    return b"x" * n


def fail_until(counter: str, times: int) -> int:
    """Raise ValueError the first ``times`` runs, then return the run number."""
    path = Path(counter)
    runs = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(runs))
    if runs <= times:
        raise ValueError(f"run {runs} fails")
    return runs


def progress_steps(n: int, gate: str) -> str:
    print("starting", flush=True)
    for i in range(n):
        jupyter_tasks.set_progress((i + 1) / n, f"step {i + 1}/{n}")
        time.sleep(0.05)
    print("finished", flush=True)
    wait_for(gate)
    return "done"


def boom() -> None:
    raise ValueError("boom")
