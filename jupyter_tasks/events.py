"""Publish/subscribe of task events with bounded, per-subscriber buffers.

Transitions are delivered in full and in order; progress is coalesced per
task (latest wins), so a chatty task costs a slow subscriber one slot, not
thousands.  A subscriber that still falls ``max_pending`` events behind is
dropped rather than buffered without bound.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable
from typing import Any

Event = dict[str, Any]


class Subscription:
    """A live event feed: ``async for event in sub``; ``close()`` to stop.

    Iteration ends when the subscription is closed or dropped (``dropped`` is then
    True: the consumer fell more than ``max_pending`` events behind).
    """

    def __init__(
        self,
        hub: EventHub,
        task_ids: Iterable[str] | None,
        group: str | None,
        max_pending: int,
        statuses: Iterable[str] | None = None,
    ) -> None:
        self._hub = hub
        self._task_ids = frozenset(task_ids) if task_ids else None
        self._group = group
        self._statuses = frozenset(statuses) if statuses else None
        self._max_pending = max_pending
        self._transitions: deque[Event] = deque()
        self._progress: OrderedDict[str, Event] = OrderedDict()
        self._ready = asyncio.Event()
        self.dropped = False
        self.closed = False

    @property
    def statuses(self) -> frozenset[str] | None:
        """The statuses this subscriber takes; None: every one."""
        return self._statuses

    def matches(self, event: Event) -> bool:
        task = event.get("task") or {}
        return self.wants(event["status"], event["task_id"], task.get("group"))

    def wants(self, status: str | None, task_id: str, group: str | None) -> bool:
        """Whether an event of this status, task and group is one for this subscriber."""
        if self._statuses is not None and status not in self._statuses:
            return False
        if self._task_ids is not None and task_id not in self._task_ids:
            return False
        return self._group is None or group == self._group

    def offer(self, event: Event) -> None:
        """Queue an event for this subscriber (called by the hub on the loop)."""
        if self.closed:
            return
        task_id = event["task_id"]
        if event["event"] == "progress":
            self._progress.pop(task_id, None)
            self._progress[task_id] = event
        else:
            # A transition carries the latest progress itself; an older progress is stale.
            self._progress.pop(task_id, None)
            self._transitions.append(event)
        if len(self._transitions) + len(self._progress) > self._max_pending:
            self.dropped = True
            self.close()
        self._ready.set()

    def take(self) -> Event | None:
        """The next queued event without waiting; None when none is queued."""
        return None if self.dropped else self._pop()

    def _pop(self) -> Event | None:
        head = self._transitions[0] if self._transitions else None
        first = next(iter(self._progress.values()), None)
        if head is None and first is None:
            return None
        if first is None or (head is not None and head["seq"] < first["seq"]):
            return self._transitions.popleft()
        assert first is not None
        return self._progress.pop(first["task_id"])

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        # A plain iterator, not an async generator: one a consumer leaves early would be
        # closed by the loop's finaliser hook, a thread-safe wake-up and a task per wait.
        while True:
            if self.dropped:
                raise StopAsyncIteration
            event = self._pop()
            if event is not None:
                return event
            if self.closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()

    def close(self) -> None:
        """Stop receiving; pending events are still yielded unless dropped."""
        self.closed = True
        self._hub.discard(self)
        self._ready.set()


class EventHub:
    """Numbers events (``seq``) and hands them to matching subscribers."""

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        #: How many subscribers take each status, and how many take every status: most
        #: events of a burst are of a status no one waits for, and are refused at once.
        self._by_status: Counter[str] = Counter()
        self._unfiltered = 0
        self.seq = 0

    def subscribe(
        self,
        task_ids: Iterable[str] | None = None,
        group: str | None = None,
        max_pending: int = 10_000,
        statuses: Iterable[str] | None = None,
    ) -> Subscription:
        """Events of ``task_ids`` (or all), of ``group``, whose ``status`` is in ``statuses``
        (a task's status, or "deleted"); None matches any."""
        sub = Subscription(self, task_ids, group, max_pending, statuses)
        self._subs.add(sub)
        self._count(sub, 1)
        return sub

    def wants(self, status: str | None, task_id: str, group: str | None) -> bool:
        """Whether any subscriber wants such an event: if none does, the publisher can
        spare building it (a task's JSON form costs more than the rest of publishing)."""
        if not self._unfiltered and self._by_status[status or ""] <= 0:
            return False
        return any(sub.wants(status, task_id, group) for sub in self._subs)

    def discard(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.discard(sub)
            self._count(sub, -1)

    def _count(self, sub: Subscription, step: int) -> None:
        if sub.statuses is None:
            self._unfiltered += step
        else:
            self._by_status.update(dict.fromkeys(sub.statuses, step))

    def publish(self, kind: str, task: dict[str, Any]) -> Event:
        """Publish ``kind`` ("transition", "progress", "deleted") for a task (its JSON form)."""
        self.seq += 1
        event: Event = {
            "event": kind,
            "seq": self.seq,
            "task_id": task["task_id"],
            "status": task.get("status"),
            "progress": task.get("progress"),
            "message": task.get("message"),
            "task": task,
        }
        for sub in list(self._subs):
            if sub.matches(event):
                sub.offer(event)
        return event

    def close(self) -> None:
        for sub in list(self._subs):
            sub.close()
