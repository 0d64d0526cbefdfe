"""Turning what a Dask attempt returned into an ``Outcome``: JSON and bytes, never a pickle.

The frame's header is JSON and the result is the pickle's bytes, which the server only
keeps (inline) or writes to the task's result file; nothing here unpickles anything.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
from typing import Any

from ..models import MEMORY_LIMIT_EXCEEDED, WORKER_CRASHED, TaskError
from ._dasktask import ROOT_DIR_MISSING
from ._replies import error_outcome
from .base import Outcome, RunSpec

#: Error types a worker may report for an attempt it could not run to its end.
WORKER_ERRORS = frozenset({WORKER_CRASHED, MEMORY_LIMIT_EXCEEDED, ROOT_DIR_MISSING})


def failed(error_type: str, message: str) -> Outcome:
    return Outcome(ok=False, error=TaskError(type=error_type, message=message))


async def frame_outcome(spec: RunSpec, header: dict[str, Any], result: bytes) -> Outcome:
    """The outcome a frame's header describes; a large result goes to ``spec.result_path``."""
    status = header.get("status")
    if status == "done":
        return await _done(spec, header.get("reply") or {}, result)
    if status == "killed":
        return failed(WORKER_CRASHED, f"the task was stopped on Dask worker {header.get('worker')}")
    error = header.get("error") or {}
    error_type = str(error.get("type") or WORKER_CRASHED)
    if error_type not in WORKER_ERRORS:
        error_type = WORKER_CRASHED
    return failed(error_type, str(error.get("message") or "the task failed"))


async def _done(spec: RunSpec, reply: dict[str, Any], result: bytes) -> Outcome:
    """The task ran to its end: its own error, or its result (the pickle's bytes)."""
    if not reply.get("ok"):
        return error_outcome(reply)
    preview = reply.get("preview")
    if len(result) <= spec.inline_result_max:
        return Outcome(ok=True, preview=preview, result_size=len(result), result_inline=result)
    await asyncio.to_thread(write_bytes, spec.result_path, result)
    return Outcome(ok=True, preview=preview, result_size=len(result), result_file=spec.result_path)


async def settled(future: Any) -> tuple[str, Any]:
    """``("finished", bytes)``, ``("cancelled", reason)`` or ``("error", text)``.

    Our function never raises, so an error here is Dask's own (``KilledWorker``, a worker
    that cannot import jupyter_tasks); only its text is kept.
    """
    try:
        data = await future
    except concurrent.futures.CancelledError as exc:  # a cancelled Dask future
        return "cancelled", str(getattr(exc, "reason", "unknown"))
    except Exception as exc:
        return "error", f"{type(exc).__name__}: {exc}"
    return "finished", data


def spec_dict(spec: RunSpec) -> dict[str, Any]:
    """The spec as plain data (shallow: ``dataclasses.asdict`` deep-copies the parameters)."""
    return {field.name: getattr(spec, field.name) for field in dataclasses.fields(spec)}


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def write_bytes(path: str, data: bytes) -> None:
    """Write whole or not at all: a reader never sees half a result."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.part"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
