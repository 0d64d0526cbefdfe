"""Where a task runs: the ``Executor`` interface and its implementations."""

from __future__ import annotations

from .base import Executor, ExecutorHealth, Outcome, ProgressCallback, RunSpec, TaskKilled

__all__ = ["Executor", "ExecutorHealth", "Outcome", "ProgressCallback", "RunSpec", "TaskKilled"]
