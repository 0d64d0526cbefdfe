"""What a task does: the registry of task types, from the ``jupyter_tasks.task_types`` entry points.

Workers import task type modules too (through ``base``), so this module loads nothing at
import time; entry points are read when a registry is made, on the server.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any

from ..errors import UnknownTaskType
from .base import SubmitContext, TaskContext, TaskType, check_dir_inside, resolve_inside

__all__ = [
    "ENTRY_POINT_GROUP",
    "SubmitContext",
    "TaskContext",
    "TaskType",
    "TaskTypeRegistry",
    "check_dir_inside",
    "load_default_registry",
    "resolve_inside",
]

ENTRY_POINT_GROUP = "jupyter_tasks.task_types"

log = logging.getLogger(__name__)


class TaskTypeRegistry:
    """The task types this server offers: registered by entry point, filtered by ``allowed``.

    A third-party entry point that fails to load is logged and skipped: one broken
    package must not take the server down.
    """

    def __init__(self, allowed: list[str] | None = None, *, load_entry_points: bool = True) -> None:
        self._allowed = None if allowed is None else set(allowed)
        self._types: dict[str, TaskType] = {}
        if load_entry_points:
            self._load_entry_points()
        if self._allowed is not None:
            missing = sorted(self._allowed - set(self._types))
            if missing:
                log.warning("allowed_task_types names unregistered types: %s", ", ".join(missing))

    def _load_entry_points(self) -> None:
        for entry_point in entry_points(group=ENTRY_POINT_GROUP):
            if self._allowed is not None and entry_point.name not in self._allowed:
                continue
            try:
                cls = entry_point.load()
                self.register(cls, name=entry_point.name)
            except Exception:
                log.exception("skipping task type %r (%s)", entry_point.name, entry_point.value)

    def register(self, cls: type[TaskType], name: str | None = None) -> None:
        """Add a task type class (entry points do this; tests and embedders may too)."""
        if not (isinstance(cls, type) and issubclass(cls, TaskType)):
            raise TypeError(f"{cls!r} is not a TaskType subclass")
        key = name or cls.name
        if self._allowed is not None and key not in self._allowed:
            return
        if key in self._types:
            log.warning("task type %r registered twice; keeping the first", key)
            return
        self._types[key] = cls()

    def names(self) -> list[str]:
        """Sorted names of the types this server allows."""
        return sorted(self._types)

    def get(self, name: str) -> TaskType:
        """The task type called ``name``; ``UnknownTaskType`` lists the allowed ones."""
        try:
            return self._types[name]
        except KeyError:
            raise UnknownTaskType(name, self.names()) from None

    def reads_files(self, name: str) -> bool:
        """Whether validating a task of this type reads files (unknown names: no)."""
        task_type = self._types.get(name)
        return task_type is not None and task_type.validate_reads_files

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def describe(self) -> list[dict[str, Any]]:
        """``[{"name", "description", "parameters_schema"}]`` as ``GET /tasks/types`` answers."""
        return [
            {
                "name": name,
                "description": task_type.description,
                "parameters_schema": task_type.parameters_schema(),
            }
            for name, task_type in sorted(self._types.items())
        ]


def load_default_registry(allowed: list[str] | None = None) -> TaskTypeRegistry:
    """The registry of every installed task type (or only those in ``allowed``)."""
    return TaskTypeRegistry(allowed)
