"""A task type that is safe to run with any input: it returns (or refuses) a JSON value.

The fuzz test's server allows only this type; the built-in ones run code or
commands named in their parameters, which random inputs must not reach.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jupyter_tasks.tasktypes.base import TaskContext, TaskType


class EchoParameters(BaseModel):
    """Parameters of an ``echo`` task."""

    model_config = ConfigDict(extra="forbid", strict=True)

    value: Any = Field(default=None, description="Returned as the task's result.")
    fail: bool = Field(default=False, description="Raise ValueError instead of returning.")


class EchoTask(TaskType):
    """Return ``value`` (printing its repr), or fail on request."""

    name = "echo"
    description = "Return the given JSON value; fail with ValueError if asked to."
    Parameters = EchoParameters

    def run(self, parameters: dict[str, Any], ctx: TaskContext) -> Any:
        params = EchoParameters.model_validate(parameters)
        print(repr(params.value)[:1000])
        if params.fail:
            raise ValueError("asked to fail")
        return params.value
