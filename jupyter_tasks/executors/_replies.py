"""What a worker's reply means, the same for every executor: JSON in, plain data out.

Both the local and the Dask executor hear the same two things from a task's process:
progress reports and a final error.  They are checked here once, so a worker (or a
task that forged messages) can never hand the server anything but plain values.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ..models import TaskError
from .base import Outcome, ProgressCallback

log = logging.getLogger("jupyter_tasks")


def error_outcome(reply: dict[str, Any]) -> Outcome:
    """The ``Outcome`` of a reply with ``ok: false``: the task's own error, as text."""
    error = reply.get("error") or {}
    return Outcome(
        ok=False,
        error=TaskError(
            type=str(error.get("type") or "Error"),
            message=str(error.get("message") or ""),
            traceback=error.get("traceback"),
        ),
    )


def deliver_progress(on_progress: ProgressCallback, task_id: str, fraction: Any, text: Any) -> None:
    """Pass a progress report on, clamped to 0..1; malformed ones are dropped."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, type(None))):
        return
    if fraction is not None:
        fraction = None if math.isnan(fraction) else min(1.0, max(0.0, float(fraction)))
    try:
        on_progress(fraction, text if isinstance(text, str) else None)
    except Exception:
        log.exception("progress callback failed for task %s", task_id)
