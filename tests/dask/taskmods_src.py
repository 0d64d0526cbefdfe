"""Task functions the Dask tests run; copied into each test's root directory as taskmods.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import jupyter_tasks


class Thing:
    """A result whose class the server cannot import (it lives only under the root)."""

    def __init__(self, size: int) -> None:
        self.payload = b"x" * size


def ancestors() -> list[int]:
    """The pids above this process, nearest first: the Dask worker is one of them."""
    import psutil

    return [parent.pid for parent in psutil.Process().parents()]


def where() -> dict[str, object]:
    """Where this task runs: its pid, its parent, its ancestors and the worker's address."""
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "ancestors": ancestors(),
        "worker": os.environ.get("JUPYTER_TASKS_DASK_WORKER"),
    }


def wait_for(path: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)


def write_atomically(path: str, text: str) -> None:
    Path(path + ".tmp").write_text(text)
    os.replace(path + ".tmp", path)


def progress_then_wait(gate: str) -> str:
    print("halfway there", flush=True)
    jupyter_tasks.set_progress(0.5, "half")
    wait_for(gate)
    return "done"


def sleeper_with_child(pidfile: str) -> None:
    """Start a child, write both pids (then the ancestors'), then sleep until killed."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    above = " ".join(str(pid) for pid in ancestors())
    write_atomically(pidfile, f"{os.getpid()} {child.pid} {above}")
    time.sleep(600)


def record(log: str, name: str, gate: str | None = None) -> str:
    if gate is not None:
        wait_for(gate)
    with open(log, "a") as fh:
        fh.write(name + "\n")
    return name


def thing(size: int) -> Thing:
    return Thing(size)


def hog(chunk_mb: int = 20, total_mb: int = 2000) -> None:
    chunks = []
    for _ in range(total_mb // chunk_mb):
        chunks.append(bytearray(os.urandom(1)) * (chunk_mb << 20))
        time.sleep(0.02)
