"""Helpers of the reliability suite: process trees, orphans and waits against real servers.

Every server here is a ``jupyter server`` subprocess (``support.ServerProcess``): these
tests kill servers and workers from outside and look at whole process trees with psutil.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from support import HANG, ServerProcess, gone

#: How long a process may outlive what should end it (a killed server, a crashed worker).
#: The requirement is "a few seconds"; this is generous for a busy 2-core machine.
ORPHAN_SECONDS = 15.0


def poll(predicate: Callable[[], Any], what: str, bound: float = HANG) -> Any:
    """Wait (bounded) until ``predicate()`` is truthy and return its value."""
    deadline = time.monotonic() + bound
    delay = 0.005
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out after {bound} s waiting for {what}"
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    return value


def tree(pid: int) -> list[psutil.Process]:
    """``pid`` and all its descendants (empty when it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def describe(procs: Iterable[psutil.Process]) -> list[str]:
    out = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            out.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
    return out


def kill(procs: list[psutil.Process]) -> list[str]:
    """SIGKILL ``procs`` (so that a failing test disturbs no other) and describe them."""
    described = describe(procs)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return described


def alive(pids: Iterable[int]) -> list[int]:
    return [pid for pid in pids if not gone(pid)]


def wait_all_gone(pids: Iterable[int], what: str, bound: float | None = None) -> None:
    """Every process in ``pids`` ends (or is a zombie) within ``bound`` seconds (default
    ``ORPHAN_SECONDS``); survivors are killed and reported."""
    pids = sorted(set(pids))
    bound = ORPHAN_SECONDS if bound is None else bound
    deadline = time.monotonic() + bound
    while left := alive(pids):
        if time.monotonic() > deadline:
            survivors = kill([psutil.Process(pid) for pid in left if psutil.pid_exists(pid)])
            raise AssertionError(f"{what}: still running after {bound} s: {survivors}")
        time.sleep(0.02)


def _config_dir(proc: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        if proc.pid != os.getpid() and proc.status() != psutil.STATUS_ZOMBIE:
            return proc.environ().get("JUPYTER_CONFIG_DIR", "")
    return ""


def _is_server(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return proc.cmdline()[1:3] == ["-m", "jupyter_server"]
    return False


def orphans(config_dir: Path | str) -> list[psutil.Process]:
    """Live processes a server of this Jupyter environment started (they inherit its
    ``JUPYTER_CONFIG_DIR``; a prefix matches several) that no live server owns any more."""
    prefix = str(config_dir)
    found = []
    for proc in psutil.process_iter():
        if not _config_dir(proc).startswith(prefix):
            continue
        with contextlib.suppress(psutil.Error):
            if not any(_is_server(p) for p in [proc, *proc.parents()]):
                found.append(proc)
    return found


def wait_no_orphans(server: ServerProcess, what: str) -> None:
    """Within ``ORPHAN_SECONDS``, every process of the server's environment is gone or
    belongs to a live server."""
    deadline = time.monotonic() + ORPHAN_SECONDS
    while left := orphans(server.config_dir):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: orphans after {ORPHAN_SECONDS} s: {kill(left)}")
        time.sleep(0.05)


def read_pids(path: Path) -> list[int]:
    """The pids a task wrote to ``path`` (atomically), once it has."""
    poll(path.exists, f"{path.name} to be written")
    return [int(pid) for pid in path.read_text().split()]


@pytest.fixture(autouse=True)
def no_leftovers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After each test (and its servers' teardown) no process of its servers is orphaned
    for longer than ``ORPHAN_SECONDS``.

    Whatever is left then is killed, so that later tests are not disturbed, and reported.
    """
    yield
    base = tmp_path_factory.getbasetemp()
    deadline = time.monotonic() + ORPHAN_SECONDS
    while (leftovers := orphans(base)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not leftovers, f"processes outlived their server: {kill(leftovers)}"
