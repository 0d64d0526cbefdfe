"""Task functions the tests run; copied into each test's root directory as taskmods.py."""

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


def chatty_wait_for(path: str) -> str:
    """``wait_for`` that says so first."""
    print(f"waiting for {path}", flush=True)
    return wait_for(path)


def record(log: str, name: str) -> str:
    """Append ``name`` to ``log`` (one line per run) and return it."""
    with open(log, "a") as fh:
        fh.write(name + "\n")
    return name


def step(
    log: str, name: str, gate: str = "", crash: bool = False, say: bool = False, hogs: bool = False
) -> str:
    """``record`` with a pid; with ``gate``, wait for it first; with ``crash``, segfault after;
    with ``say``, print the name (to the task's log); with ``hogs``, take memory until killed."""
    if say:
        print(f"this is {name}", flush=True)
    if hogs:
        hog()
    if gate:
        wait_for(gate)
    with open(log, "a") as fh:
        fh.write(f"{name} {os.getpid()}\n")
    if crash:
        ctypes.string_at(0)
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


def record_then_exit(log: str, name: str, code: int) -> None:
    """``record``, then end the worker at once: a run that began and crashed."""
    record(log, name)
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


def chatty_fail_until(counter: str, times: int) -> int:
    """``fail_until`` that prints which run it is first."""
    path = Path(counter)
    print(f"run {int(path.read_text()) + 1 if path.exists() else 1}", flush=True)
    return fail_until(counter, times)


def say_once_then_wait(marker: str, gate: str) -> str:
    """The first run prints a long line and waits for ``gate``; later runs, quiet, return."""
    if os.path.exists(marker):
        return "quiet"
    Path(marker).write_text("said")
    print("x" * 100 + " the end", flush=True)
    return wait_for(gate)


def progress_steps(n: int, gate: str) -> str:
    print("starting", flush=True)
    for i in range(n):
        jupyter_tasks.set_progress((i + 1) / n, f"step {i + 1}/{n}")
        time.sleep(0.05)
    print("finished", flush=True)
    wait_for(gate)
    return "done"


def progress_until(gate: str) -> str:
    """Report growing progress until ``gate`` exists."""
    step = 0
    while not os.path.exists(gate):
        step += 1
        jupyter_tasks.set_progress(min(step / 1000, 1.0), f"step {step}")
        time.sleep(0.02)
    return "done"


def early_progress(gate: str) -> str:
    """Report progress the moment it starts, then wait for ``gate``."""
    jupyter_tasks.set_progress(0.25, "early")
    return wait_for(gate)


def boom() -> None:
    raise ValueError("boom")


def mark(markers: str, key: str, seconds: float = 0.0, children: int = 0) -> str:
    """Append ``key`` to ``markers`` as this run starts, then work ``seconds`` and return it.

    One ``write`` on an ``O_APPEND`` descriptor per run, so concurrent runs never interleave
    and a run killed right after starting has left its line. With ``children``, that many
    ``sleep 1000`` processes run meanwhile; they are ended before the task returns.
    """
    fd = os.open(markers, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{key}\n".encode())
    finally:
        os.close(fd)
    procs = [subprocess.Popen(["sleep", "1000"]) for _ in range(children)]
    try:
        time.sleep(seconds)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    return key


def family(
    pidfile: str, ignore_term: bool = False, then_exit: int | None = None, own_session: bool = True
) -> None:
    """Start ``sleep 1000`` children (with ``own_session``, one more in a session of its own)
    and a forked copy of this process, write every pid (this one first), then sleep, or exit
    with ``then_exit``.
    """
    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pids = [os.getpid()]
    for session in (False, True) if own_session else (False,):
        pids.append(subprocess.Popen(["sleep", "1000"], start_new_session=session).pid)
    forked = os.fork()
    if forked == 0:  # the copy sleeps and never returns into the worker's loop
        try:
            time.sleep(1000)
        finally:
            os._exit(0)
    pids.append(forked)
    Path(pidfile + ".tmp").write_text(" ".join(map(str, pids)))
    os.replace(pidfile + ".tmp", pidfile)
    if then_exit is not None:
        os._exit(then_exit)
    time.sleep(600)


def spin(pidfile: str) -> int:
    """Write this process's pid, then compute for hours in one C call that holds the GIL."""
    Path(pidfile + ".tmp").write_text(str(os.getpid()))
    os.replace(pidfile + ".tmp", pidfile)
    return sum(range(10**13))
