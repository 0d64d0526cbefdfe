"""The ``callable`` task type: a cloudpickled ``(function, args, kwargs)`` from a kernel.

The payload is unpickled only inside a worker of the submitting kernel's interpreter;
the server checks its shape (base64, blob id, interpreter path) and nothing more.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import sys
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import InvalidParameters
from .base import SubmitContext, TaskContext, TaskType

BLOB_ID = re.compile(r"^[0-9a-f]{32}$")


class CallableParameters(BaseModel):
    """Parameters of a ``callable`` task: exactly one of ``pickle_b64`` and ``blob_id``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    pickle_b64: str | None = Field(
        default=None, description="Base64 of cloudpickle.dumps((function, args, kwargs))."
    )
    blob_id: str | None = Field(
        default=None,
        description="Id of an uploaded blob (POST /tasks/blobs) holding the same pickle.",
        pattern=BLOB_ID.pattern,
    )
    python: str | None = Field(
        default=None,
        description=(
            "sys.executable of the submitting kernel: the task runs in a worker of this "
            "interpreter, which must have jupyter_tasks installed. Default: the server's."
        ),
    )

    @model_validator(mode="after")
    def _one_payload(self) -> CallableParameters:
        if (self.pickle_b64 is None) == (self.blob_id is None):
            raise ValueError("give exactly one of pickle_b64 and blob_id")
        return self


class CallableTask(TaskType):
    """Run a function pickled in a kernel, in a worker of that kernel's interpreter."""

    name = "callable"
    description = "Run a cloudpickled (function, args, kwargs) from a kernel."
    Parameters = CallableParameters

    def validate(self, parameters: dict[str, Any], ctx: SubmitContext) -> None:
        params = cast(CallableParameters, self.parse(parameters))
        if params.pickle_b64 is not None:
            try:
                base64.b64decode(params.pickle_b64, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidParameters("not valid base64", field="parameters.pickle_b64") from None
        if params.blob_id is not None and not os.path.isfile(
            os.path.join(ctx.blob_dir, params.blob_id)
        ):
            raise InvalidParameters(f"no blob {params.blob_id!r}", field="parameters.blob_id")
        if params.python is not None and not (
            os.path.isabs(params.python)
            and os.path.isfile(params.python)
            and os.access(params.python, os.X_OK)
        ):
            raise InvalidParameters(
                f"{params.python!r} is not an executable file (an absolute path is needed)",
                field="parameters.python",
            )

    def interpreter(self, parameters: dict[str, Any]) -> str:
        python = parameters.get("python")
        return python if isinstance(python, str) and python else sys.executable

    def run(self, parameters: dict[str, Any], ctx: TaskContext) -> Any:
        import cloudpickle

        params = cast(CallableParameters, self.parse(parameters))
        if params.pickle_b64 is not None:
            payload = base64.b64decode(params.pickle_b64)
        else:
            assert params.blob_id is not None
            with open(os.path.join(ctx.blob_dir, params.blob_id), "rb") as fh:
                payload = fh.read()
        call = cloudpickle.loads(payload)
        if not (isinstance(call, tuple) and len(call) == 3 and callable(call[0])):
            raise TypeError("the payload must be a pickled (function, args, kwargs) tuple")
        function, args, kwargs = call
        return function(*args, **kwargs)
