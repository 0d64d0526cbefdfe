"""The ``python`` task type: call ``"pkg.module:function"`` with JSON arguments in a worker."""

from __future__ import annotations

import os
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..worker import load_object
from .base import SubmitContext, TaskContext, TaskType, check_dir_inside, resolve_inside


def _is_dotted(text: str) -> bool:
    return all(part.isidentifier() for part in text.split("."))


class PythonParameters(BaseModel):
    """Parameters of a ``python`` task."""

    model_config = ConfigDict(extra="forbid", strict=True)

    callable: str = Field(
        description=(
            'What to call: "pkg.module:function" or "pkg.module:Class.method", imported in the '
            "worker with the server's root directory first on sys.path."
        ),
        examples=["mypackage.jobs:train"],
    )
    args: list[Any] = Field(default_factory=list, description="Positional arguments (JSON values).")
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments (JSON values)."
    )
    cwd: str | None = Field(
        default=None,
        description="Working directory, relative to the server's root directory and inside it.",
    )

    @field_validator("callable")
    @classmethod
    def _callable_shape(cls, value: str) -> str:
        module, sep, qualname = value.partition(":")
        if not (sep and _is_dotted(module) and _is_dotted(qualname)):
            raise ValueError('expected "pkg.module:function" or "pkg.module:Class.method"')
        return value


class PythonTask(TaskType):
    """Import a function by path and call it; the server checks only the path's shape."""

    name = "python"
    description = 'Call a Python function by import path ("pkg.module:function") with JSON args.'
    Parameters = PythonParameters

    def validate(self, parameters: dict[str, Any], ctx: SubmitContext) -> None:
        params = self._parse(parameters)
        if params.cwd is not None:
            check_dir_inside(ctx.root_dir, params.cwd, "parameters.cwd")

    def run(self, parameters: dict[str, Any], ctx: TaskContext) -> Any:
        params = self._parse(parameters)
        if params.cwd is not None:
            os.chdir(resolve_inside(ctx.root_dir, params.cwd, "parameters.cwd"))
        return load_object(params.callable)(*params.args, **params.kwargs)

    def _parse(self, parameters: dict[str, Any]) -> PythonParameters:
        return cast(PythonParameters, self.parse(parameters))
