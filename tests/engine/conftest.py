"""Fixtures for driving ``LocalExecutor`` directly: task directories, run specs, executors."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import TASKMODS, gone, run_spec
from support import until as wait_until

from jupyter_tasks.executors.base import RunSpec
from jupyter_tasks.executors.local import LocalExecutor

HANG = 60.0  # bounds on waits only catch hangs


@dataclass(frozen=True)
class TaskDirs:
    root: Path
    logs: Path
    results: Path
    blobs: Path


@pytest.fixture
def task_dirs(tmp_path: Path) -> TaskDirs:
    """A root directory holding ``taskmods.py``, plus log, result and blob directories."""
    dirs = TaskDirs(*(tmp_path / name for name in ("root", "logs", "results", "blobs")))
    for path in (dirs.root, dirs.logs, dirs.results, dirs.blobs):
        path.mkdir()
    shutil.copy(TASKMODS, dirs.root / "taskmods.py")
    return dirs


@pytest.fixture
def make_spec(task_dirs: TaskDirs) -> Callable[..., RunSpec]:
    """``make_spec("python", {...}, interpreter=..., result_max_bytes=...)``."""
    files = task_dirs.root.parent
    return lambda task_type, parameters, **fields: run_spec(
        task_dirs.root, files, task_type, parameters, **fields
    )


@pytest.fixture
def make_executor(
    jp_asyncio_loop: asyncio.AbstractEventLoop,
) -> Iterator[Callable[..., LocalExecutor]]:
    """Executors (not started) that are stopped afterwards; no worker may outlive ``stop()``."""
    created: list[LocalExecutor] = []

    def make(**kwargs: Any) -> LocalExecutor:
        kwargs.setdefault("max_workers", 1)
        kwargs.setdefault("kill_grace_seconds", 1.0)
        executor = LocalExecutor(**kwargs)
        created.append(executor)
        return executor

    yield make
    for executor in created:
        pids = executor.worker_pids()
        jp_asyncio_loop.run_until_complete(executor.stop())
        assert executor.worker_pids() == []
        assert all(gone(pid) for pid in pids)


@pytest.fixture
def until() -> Callable[..., Awaitable[None]]:
    """``await until(predicate, what)``: poll a condition, failing only on a hang."""
    return lambda predicate, what="condition": wait_until(predicate, what, HANG)
