"""The one schema: what a client asks for (TaskRequest) and what it gets back (Task).

Every layer speaks these shapes: the store converts rows to ``Task`` at its
boundary, the handlers serialise ``Task.model_dump(mode="json")``, the kernel
client parses the same JSON.  Types are strict on purpose: ``"5"``, ``true``
and ``1.0`` are not integers, and unknown fields are refused so that a typo
never passes silently.
"""

from __future__ import annotations

import enum
import functools
import math
import os
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    field_serializer,
    field_validator,
)

TASK_ID_PATTERN = r"^[0-9a-f]{32}$"
_TASK_ID = re.compile(r"[0-9a-f]{32}")

#: Timeouts beyond this (about 68 years) are surely mistakes, and would overflow SQLite.
MAX_TIMEOUT_SECONDS = 2**31 - 1


class TaskStatus(str, enum.Enum):
    """Where a task is in its life; the three last are final."""

    CREATED = "created"  #: accepted and durable, waiting for a worker (or for a retry)
    RUNNING = "running"  #: a worker is executing it
    COMPLETED = "completed"  #: finished; a result is stored
    FAILED = "failed"  #: finished with ``error`` set
    CANCELLED = "cancelled"  #: stopped on request before it finished

    @property
    def finished(self) -> bool:
        """True for the statuses a task never leaves."""
        return self in FINISHED


FINISHED = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})

#: Transitions the orchestrator may make; anything else is ``InvalidTransition``.
#: ``running -> created`` is a retry (or a recovered task going back to the queue).
ALLOWED_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.CREATED: frozenset({TaskStatus.RUNNING, TaskStatus.CANCELLED, TaskStatus.FAILED}),
    TaskStatus.RUNNING: frozenset(
        {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.CREATED}
    ),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}


def is_task_id(text: str) -> bool:
    """Whether ``text`` has the shape of a task id (and no more: no trailing newline)."""
    return _TASK_ID.fullmatch(text) is not None


def new_task_id() -> str:
    """A UUID4 as 32 lower-case hex characters.

    Built from the random bytes directly: ``uuid.uuid4().hex`` goes through an int and
    takes about three times as long.  The same bits: version 4, the RFC 4122 variant.
    """
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def utcnow() -> datetime:
    """Timezone-aware now in UTC."""
    return datetime.now(timezone.utc)


@functools.lru_cache(maxsize=4096)
def format_time(value: datetime | None) -> str | None:
    """ISO 8601 in UTC, always the same shape: ``2026-01-02T03:04:05.678901Z``.

    Cached: a task's times are formatted again for each of its events, and a batch's
    tasks share one creation time.
    """
    if value is None:
        return None
    if value.tzinfo is not timezone.utc:
        value = value.astimezone(timezone.utc)
    # isoformat is several times faster than strftime, and this runs on every event.
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


Priority = Annotated[StrictInt, Field(ge=1, le=10)]
Description = Annotated[StrictStr, Field(min_length=1, max_length=10_000)]
Tag = Annotated[StrictStr, Field(min_length=1, max_length=200)]


class TaskRequest(BaseModel):
    """What a client submits (``POST /tasks``)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    task_type: StrictStr = Field(description="One of the task types this server allows.")
    description: Description = Field(description="What the task is, for people.")
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Validated by the task type at submit time."
    )
    priority: Priority = Field(
        default=1, description="1..10; 10 runs first, ties run oldest first."
    )
    timeout_seconds: Annotated[StrictInt, Field(gt=0, le=MAX_TIMEOUT_SECONDS)] | None = Field(
        default=None, description="Seconds a run may take; default from the server's config."
    )
    max_retries: Annotated[StrictInt, Field(ge=0, le=10)] = Field(
        default=0, description="Retries of failures other than cancellation."
    )
    tags: list[Tag] = Field(default_factory=list, max_length=100, description="For filtering.")

    @field_validator("parameters")
    @classmethod
    def _plain_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Parameters travel as JSON: strings, numbers (finite: JSON has no NaN or
        infinity), booleans, null, objects and arrays, without cycles. A REST client can
        send nothing else; a Python caller could, and the task would then be stored, sent
        or answered differently from what it asked for, or not at all."""
        _check_plain_json(value)
        return value


def _check_plain_json(value: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first value JSON cannot carry as it is.

    Depth first with a stack of iterators, not recursion: parameters may nest a thousand
    deep.  The containers on the current path are kept to refuse a cycle (a container
    shared by two branches is fine).
    """
    path = {id(value)}
    stack: list[tuple[Any, Iterator[Any]]] = [(value, iter(value.values()))]
    while stack:
        container, children = stack[-1]
        for item in children:
            if item is None or isinstance(item, (str, int)):  # (bool is an int)
                continue
            if isinstance(item, float):
                if not math.isfinite(item):
                    raise ValueError(f"{item} is not a JSON number")
                continue
            if not isinstance(item, (dict, list, tuple)):
                raise ValueError(f"a {type(item).__name__} is not a JSON value")
            if id(item) in path:
                raise ValueError("contains itself")
            path.add(id(item))
            stack.append((item, iter(item.values() if isinstance(item, dict) else item)))
            break
        else:
            stack.pop()
            path.discard(id(container))


class TaskError(BaseModel):
    """Why a task failed: our own types (``TaskTimeout``...) or the task's exception type."""

    model_config = ConfigDict(extra="forbid")

    type: str
    message: str
    traceback: str | None = None


class Task(TaskRequest):
    """A task as the server reports it: the request plus its state."""

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)

    task_id: str = Field(pattern=TASK_ID_PATTERN)
    status: TaskStatus
    group: str | None = None
    attempt: int = 0
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: float | None = Field(default=None, ge=0.0, le=1.0)
    message: str | None = None
    error: TaskError | None = None

    @classmethod
    def assemble(cls, values: dict[str, Any]) -> Task:
        """A record from valid values of every field (read from the store, or derived from
        a valid record), taken as they are.

        It is what ``model_construct`` ends with, without that method's pass over the
        fields for defaults and aliases, which costs three times as much: records are
        made several times per task on the hot path.  Every such record has every field
        set, so they share one set of the names (pydantic copies it before changing it):
        one object fewer per record for the garbage collector to track.
        """
        task = cls.__new__(cls)
        object.__setattr__(task, "__dict__", values)
        object.__setattr__(task, "__pydantic_fields_set__", _ALL_FIELDS)
        object.__setattr__(task, "__pydantic_extra__", None)
        object.__setattr__(task, "__pydantic_private__", None)
        return task

    def evolve(self, **update: Any) -> Task:
        """A copy with ``update`` applied, unvalidated like ``model_copy(update=...)``."""
        return Task.assemble({**self.__dict__, **update})

    @field_serializer("created_at", "started_at", "finished_at")
    def _serialize_time(self, value: datetime | None) -> str | None:
        return format_time(value)

    def to_json(self) -> dict[str, Any]:
        """The JSON-ready dict every route and event carries (``model_dump(mode="json")``).

        Built by hand because it runs several times per task on the hot path.
        """
        error = self.error
        return {
            "task_type": self.task_type,
            "description": self.description,
            "parameters": self.parameters,
            "priority": self.priority,
            "timeout_seconds": self.timeout_seconds,
            "max_retries": self.max_retries,
            "tags": list(self.tags),
            "task_id": self.task_id,
            "status": self.status.value,
            "group": self.group,
            "attempt": self.attempt,
            "created_at": format_time(self.created_at),
            "started_at": format_time(self.started_at),
            "finished_at": format_time(self.finished_at),
            "progress": self.progress,
            "message": self.message,
            "error": None
            if error is None
            else {"type": error.type, "message": error.message, "traceback": error.traceback},
        }


#: The fields set on every record ``Task.assemble`` makes (see there).
_ALL_FIELDS = set(Task.model_fields)

# The error types the engine raises itself (DESIGN section 3).
TASK_TIMEOUT = "TaskTimeout"
SERVER_RESTART = "ServerRestart"
WORKER_CRASHED = "WorkerCrashed"
RESULT_TOO_LARGE = "ResultTooLarge"
NON_ZERO_EXIT = "NonZeroExit"
MEMORY_LIMIT_EXCEEDED = "MemoryLimitExceeded"
