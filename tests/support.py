"""Helpers shared by the test suites (``tests`` is on pytest's ``pythonpath``)."""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from jupyter_tasks.executors.base import RunSpec
from jupyter_tasks.orchestrator import EngineConfig
from jupyter_tasks.tasktypes import load_default_registry

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


def run_spec(
    root: Path, files: Path, task_type: str, parameters: dict[str, Any], **fields: Any
) -> RunSpec:
    """A ``RunSpec`` for one attempt, its log, result and blob paths under ``files``."""
    task_id = uuid.uuid4().hex
    base: dict[str, Any] = {
        "task_id": task_id,
        "attempt": 1,
        "task_type": task_type,
        "type_path": load_default_registry().get(task_type).type_path(),
        "parameters": parameters,
        "interpreter": sys.executable,
        "root_dir": str(root),
        "log_path": str(files / "logs" / f"{task_id}.log"),
        "result_path": str(files / "results" / f"{task_id}.pickle"),
        "blob_dir": str(files / "blobs"),
        "result_max_bytes": 1 << 30,
    }
    base.update(fields)
    return RunSpec(**base)
