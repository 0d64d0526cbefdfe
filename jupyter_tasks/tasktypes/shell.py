"""The ``shell`` task type: run a program (no shell) with its output in the task's log."""

from __future__ import annotations

import os
import shlex
import subprocess
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .base import SubmitContext, TaskContext, TaskType, check_dir_inside, resolve_inside


class NonZeroExit(Exception):
    """The command exited with a code other than 0 (or was killed by a signal)."""

    def __init__(self, command: list[str], returncode: int) -> None:
        how = f"exited with code {returncode}"
        if returncode < 0:
            how = f"was killed by signal {_signal_name(-returncode)}"
        super().__init__(f"command {shlex.join(command)!r} {how}")
        self.command = command
        self.returncode = returncode


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def split_command(command: str | list[str]) -> list[str]:
    """``"prog arg"`` split like a POSIX shell would, or the list as given."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if not argv or not argv[0]:
        raise ValueError("the command is empty")
    return argv


class ShellParameters(BaseModel):
    """Parameters of a ``shell`` task."""

    model_config = ConfigDict(extra="forbid", strict=True)

    command: str | list[str] = Field(
        description=(
            'The program and its arguments: "prog arg ..." (split like a POSIX shell, but no '
            'shell runs it: no pipes, globs or variables) or ["prog", "arg", ...].'
        ),
        examples=["python train.py --epochs 5", ["ls", "-l"]],
    )
    cwd: str | None = Field(
        default=None,
        description="Working directory, relative to the server's root directory and inside it.",
    )
    env: dict[str, str] | None = Field(
        default=None, description="Environment variables merged over the worker's environment."
    )

    # "plain": one error at ``parameters.command`` rather than one per member of the union.
    @field_validator("command", mode="plain", json_schema_input_type=str | list[str])
    @classmethod
    def _command_splits(cls, value: Any) -> str | list[str]:
        if not (
            isinstance(value, str)
            or (isinstance(value, list) and all(isinstance(arg, str) for arg in value))
        ):
            raise ValueError("the command must be a string or a list of strings")
        argv = split_command(value)
        if any("\0" in arg for arg in argv):
            raise ValueError("the command must not contain NUL characters")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, text in (value or {}).items():
            if not name or "=" in name or "\0" in name or "\0" in text:
                raise ValueError(f"invalid environment variable {name!r}")
        return value


class ShellTask(TaskType):
    """Run a command; stdin is empty, stdout and stderr go to the task's log."""

    name = "shell"
    description = "Run a program with arguments (no shell); output goes to the task's log."
    Parameters = ShellParameters

    def validate(self, parameters: dict[str, Any], ctx: SubmitContext) -> None:
        params = cast(ShellParameters, self.parse(parameters))
        if params.cwd is not None:
            check_dir_inside(ctx.root_dir, params.cwd, "parameters.cwd")

    def run(self, parameters: dict[str, Any], ctx: TaskContext) -> Any:
        params = cast(ShellParameters, self.parse(parameters))
        argv = split_command(params.command)
        cwd = resolve_inside(ctx.root_dir, params.cwd, "parameters.cwd")
        env = {**os.environ, **params.env} if params.env else None
        log_fd = ctx.log_fd()
        # Same process group as the worker, so killing the task's group reaches the command.
        returncode = subprocess.call(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd
        )
        if returncode != 0:
            raise NonZeroExit(argv, returncode)
        return {"returncode": 0}
