"""Domain errors: small named exceptions raised by the engine, mapped to HTTP in one place.

The engine imports no web framework; ``handlers.py`` turns these into 400/404/409/503.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class TasksError(Exception):
    """Base of every error the engine raises on purpose."""


class TaskNotFound(TasksError, KeyError):
    """No task with that id (never existed, or deleted)."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task with id {task_id!r}")
        self.task_id = task_id

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidTransition(TasksError):
    """The task's status does not allow this (cancel a finished task, delete a running one)."""


class QueueFull(TasksError):
    """``max_queue_size`` tasks are waiting already; try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnknownTaskType(TasksError):
    """The task type is not registered, or the server does not allow it."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"unknown task_type {name!r}; allowed types: {', '.join(sorted(known)) or '(none)'}"
        )
        self.name = name
        self.known = sorted(known)


class InvalidParameters(TasksError, ValueError):
    """A task's parameters (or a batch item) failed validation; ``field`` names what is wrong."""

    def __init__(self, message: str, field: str | None = None, index: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.index = index

    @classmethod
    def from_validation(
        cls,
        exc: ValidationError,
        within: str | None = None,
        index: int | None = None,
        context: str = "",
    ) -> InvalidParameters:
        """pydantic's first error, naming its field (inside ``within``), after ``context``."""
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        field = ".".join(part for part in (within, where) if part) or None
        return cls(context + error["msg"], field=field, index=index)

    def __str__(self) -> str:
        where = []
        if self.index is not None:
            where.append(f"tasks[{self.index}]")
        if self.field:
            where.append(self.field)
        prefix = ".".join(where)
        return f"{prefix}: {self.args[0]}" if prefix else str(self.args[0])


class NoResult(InvalidTransition):
    """The task has no result (not finished, failed or cancelled)."""


class StoreUnavailable(TasksError):
    """The database cannot be written (disk full, read-only path); the task was not accepted."""
