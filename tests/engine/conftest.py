"""Fixtures for driving ``LocalExecutor`` directly: task directories, run specs, executors."""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from jupyter_tasks.executors.base import RunSpec
from jupyter_tasks.executors.local import LocalExecutor
from jupyter_tasks.tasktypes.callable import CallableTask
from jupyter_tasks.tasktypes.python import PythonTask
from jupyter_tasks.tasktypes.shell import ShellTask

HANG = 60.0  # bounds on waits only catch hangs
TYPE_PATHS = {
    "python": PythonTask.type_path(),
    "shell": ShellTask.type_path(),
    "callable": CallableTask.type_path(),
}


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
    shutil.copy(Path(__file__).with_name("taskmods_src.py"), dirs.root / "taskmods.py")
    return dirs


@pytest.fixture
def make_spec(task_dirs: TaskDirs) -> Callable[..., RunSpec]:
    """``make_spec("python", {...}, interpreter=..., result_max_bytes=...)``."""

    def make(task_type: str, parameters: dict[str, Any], **fields: Any) -> RunSpec:
        task_id = uuid.uuid4().hex
        base: dict[str, Any] = {
            "task_id": task_id,
            "attempt": 1,
            "task_type": task_type,
            "type_path": TYPE_PATHS[task_type],
            "parameters": parameters,
            "interpreter": sys.executable,
            "root_dir": str(task_dirs.root),
            "log_path": str(task_dirs.logs / f"{task_id}.log"),
            "result_path": str(task_dirs.results / f"{task_id}.pickle"),
            "blob_dir": str(task_dirs.blobs),
            "result_max_bytes": 1 << 30,
        }
        base.update(fields)
        return RunSpec(**base)

    return make


def pid_gone(pid: int) -> bool:
    """No such process, or a zombie (it runs nothing; reaping it is its parent's business)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


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
        assert all(pid_gone(pid) for pid in pids)


@pytest.fixture
def until() -> Callable[..., Awaitable[None]]:
    """``await until(predicate, what)``: poll a condition, failing only on a hang."""

    async def wait(predicate: Callable[[], bool], what: str = "condition") -> None:
        deadline = time.monotonic() + HANG
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.01)

    return wait
