"""The ``RunSpec`` of a no-op ``python`` task, for benchmarks that drive an executor directly."""

from __future__ import annotations

import os
import sys
import uuid
from typing import Any

from jupyter_tasks.executors.base import RunSpec
from jupyter_tasks.tasktypes.python import PythonTask

#: ``operator.add(1, 2)``: the no-op every benchmark runs.
NOOP_PARAMETERS: dict[str, Any] = {"callable": "operator:add", "args": [1, 2]}


def noop_spec(tmp: str, task_id: str | None = None) -> RunSpec:
    """One attempt of the no-op, its log and result files under ``tmp``."""
    task_id = task_id or uuid.uuid4().hex
    return RunSpec(
        task_id=task_id,
        attempt=1,
        task_type="python",
        type_path=PythonTask.type_path(),
        parameters=NOOP_PARAMETERS,
        interpreter=sys.executable,
        root_dir=tmp,
        log_path=os.path.join(tmp, "logs", f"{task_id}.log"),
        result_path=os.path.join(tmp, "results", f"{task_id}.pickle"),
        blob_dir=os.path.join(tmp, "blobs"),
        result_max_bytes=1 << 30,
    )
