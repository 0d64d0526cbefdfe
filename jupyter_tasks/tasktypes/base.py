"""What a task type is: parameters validated at submit time, code run in a worker.

One class serves both sides.  The server calls ``validate`` (and reads
``parameters_schema``) and never runs the task; the worker imports the class
by its path and calls ``run``.  Keep module-level imports light: workers import
these modules.
"""

from __future__ import annotations

import copy
import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ValidationError

from ..errors import InvalidParameters


@dataclass(frozen=True)
class SubmitContext:
    """What validation may look at on the server."""

    root_dir: str
    blob_dir: str


class TaskContext(Protocol):
    """What a running task sees in its worker (implemented in ``worker.py``)."""

    task_id: str
    root_dir: str
    blob_dir: str

    def set_progress(self, fraction: float | None, message: str | None = None) -> None:
        """Report progress (0..1) and an optional message."""

    def log_fd(self) -> int:
        """File descriptor of the task's log, for child processes' stdout/stderr."""


class TaskType:
    """Base class of a task type; subclasses set ``name``, ``description``, ``Parameters``."""

    name: ClassVar[str]
    description: ClassVar[str]
    Parameters: ClassVar[type[BaseModel]]
    #: True when ``validate`` reads files (a notebook): the engine then runs it in a thread.
    validate_reads_files: ClassVar[bool] = False

    @classmethod
    def type_path(cls) -> str:
        """Import path the worker uses to find this class."""
        return f"{cls.__module__}:{cls.__qualname__}"

    @classmethod
    def parameters_schema(cls) -> dict[str, Any]:
        """JSON schema of ``parameters``, published by ``GET /tasks/types`` and OpenAPI.

        Built once per model (pydantic takes milliseconds a schema); each caller gets a copy.
        """
        return copy.deepcopy(_json_schema(cls.Parameters))

    @classmethod
    def parse(cls, parameters: dict[str, Any]) -> BaseModel:
        """Parse parameters; a failure raises ``InvalidParameters`` naming the field."""
        try:
            return cls.Parameters.model_validate(parameters)
        except ValidationError as exc:
            raise InvalidParameters.from_validation(exc, within="parameters") from None

    def validate(self, parameters: dict[str, Any], ctx: SubmitContext) -> None:
        """Check parameters at submit time; raise ``InvalidParameters`` when wrong."""
        self.parse(parameters)

    def interpreter(self, parameters: dict[str, Any]) -> str:
        """The Python executable whose workers run this task (the server's by default)."""
        return sys.executable

    def run(self, parameters: dict[str, Any], ctx: TaskContext) -> Any:
        """Run the task inside a worker and return its result."""
        raise NotImplementedError


def resolve_inside(root_dir: str, path: str | None, field: str) -> Path:
    """Resolve ``path`` against ``root_dir``; refuse anything that escapes it."""
    root = Path(root_dir).resolve()
    if path is None or path == "":
        return root
    try:
        candidate = (root / path).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a symlink loop
        reason = "a symlink loop" if "loop" in str(exc).lower() else "not a usable path"
        raise InvalidParameters(f"path {shown_path(path)}: {reason}", field=field) from None
    if candidate != root and root not in candidate.parents:
        raise InvalidParameters(
            f"path {shown_path(path)} is outside the server's root directory", field=field
        )
    return candidate


def shown_path(path: str) -> str:
    """A path as an error message quotes it: its repr, cut short."""
    return repr(path) if len(path) <= 200 else repr(path[:200]) + "..."


def check_dir_inside(root_dir: str, path: str | None, field: str) -> str:
    """``resolve_inside`` plus: it must be an existing directory."""
    resolved = resolve_inside(root_dir, path, field)
    if not os.path.isdir(resolved):  # False, not an error, for a name too long
        raise InvalidParameters(f"directory {shown_path(path or '')} does not exist", field=field)
    return os.fspath(resolved)


@functools.cache
def _json_schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()
