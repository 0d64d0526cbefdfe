"""Process-tree helpers for ``LocalExecutor``: terminate a worker's tree, measure its memory.

Everything here blocks (it reads ``/proc`` and waits), so callers run it in a thread.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import defaultdict
from collections.abc import Iterable

import psutil

#: Bound on waiting for SIGKILLed processes to vanish (only a hung kernel takes longer).
KILL_WAIT_SECONDS = 30.0


def describe_exit(returncode: int) -> str:
    """``worker exited with code 3`` / ``worker killed by signal SIGSEGV``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"worker killed by signal {name}"
    return f"worker exited with code {returncode}"


def _gone(proc: psutil.Process) -> bool:
    """Dead, or a zombie: a zombie runs nothing, and its reaping is someone else's job."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _signal(procs: Iterable[psutil.Process], leader: psutil.Process, sig: int) -> None:
    # The group first: it reaches members we did not see; the leader check guards pid reuse.
    if leader.is_running():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(leader.pid, sig)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.send_signal(sig)


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        alive = [proc for proc in procs if not _gone(proc)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def terminate_tree(leader: psutil.Process, grace: float) -> bool:
    """SIGTERM the group led by ``leader`` and its whole tree; SIGKILL what is left after ``grace``.

    The tree is collected first, since children may have left the group (``setsid``).
    Returns True when every process is gone (or a zombie).
    """
    procs = [leader, *_children(leader)]
    _signal(procs, leader, signal.SIGTERM)
    if not _wait_gone(procs, grace):
        return True
    # Children started during the grace period count too.
    procs = list({proc.pid: proc for proc in procs + _children(leader)}.values())
    _signal(procs, leader, signal.SIGKILL)
    return not _wait_gone(procs, KILL_WAIT_SECONDS)


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True) if proc.is_running() else []
    except psutil.NoSuchProcess:
        return []


def trees_rss(pids: Iterable[int], roots: bool = True) -> dict[int, int]:
    """RSS in bytes summed over each given process and its descendants (one ``/proc`` scan).

    ``roots=False`` leaves the given processes out (a worker's guard: its pages are the
    worker's, shared since the fork, and would count twice).
    """
    children: defaultdict[int, list[int]] = defaultdict(list)
    for proc in psutil.process_iter(["ppid"]):
        ppid = proc.info.get("ppid")
        if ppid is not None:
            children[ppid].append(proc.pid)
    usage: dict[int, int] = {}
    for pid in pids:
        total, stack, seen = 0, [pid], set()
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            if current != pid or roots:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    total += psutil.Process(current).memory_info().rss
            stack.extend(children.get(current, ()))
        usage[pid] = total
    return usage
