"""Helpers shared by the test suites (``tests`` is on pytest's ``pythonpath``)."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from jupyter_tasks.orchestrator import EngineConfig

HANG = 120.0  # bounds on waits only catch hangs; nothing here measures speed


def gone(pid: int) -> bool:
    """No such process, or a zombie (it runs nothing)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def until(predicate: Callable[[], bool], what: str, bound: float = HANG) -> None:
    """Wait (bounded) until ``predicate()`` holds, checking often."""
    deadline = time.monotonic() + bound
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def task_root(tmp_path: Path, taskmods: Path) -> Path:
    """A server root directory holding ``taskmods.py`` (copied from ``taskmods``)."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(taskmods, root / "taskmods.py")
    return root


def engine_config(tmp_path: Path, root: Path, **overrides: Any) -> EngineConfig:
    """An engine config for tests: a database under ``tmp_path``, short grace and backoff."""
    base: dict[str, Any] = {
        "db_path": str(tmp_path / "db" / "tasks.db"),
        "root_dir": str(root),
        "max_workers": 2,
        "kill_grace_seconds": 1.0,
        "retry_backoff_seconds": 0.05,
    }
    base.update(overrides)
    return EngineConfig(**base)
