"""The kernel's one live view of the server: a single shared event subscription.

Handles, rows and boards register watchers here instead of each opening a
connection or polling.  The stream gives a snapshot (unfinished tasks) then
``seq``-numbered events; after any disconnect the hub resynchronises from a
new snapshot and fetches, once, the watched tasks that finished meanwhile.
When the stream cannot be had, it polls with exponential backoff (1 s doubling,
capped) and keeps trying to reconnect.  Watchers run on the hub's loop thread,
so everything a watcher touches (widgets) is changed from one thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .handles import TaskDict, is_finished, is_newer
from .transport import Backend, ListQuery, LoopThread

Watcher = Callable[[TaskDict], None]

THROTTLE_SECONDS = 0.1
TICK_SECONDS = 1.0
POLL_FIRST_SECONDS = 1.0
POLL_MAX_SECONDS = 16.0
CACHE_SIZE = 2048
UNFINISHED = ("created", "running")


class Hub:
    """One subscription per client: the status cache, watchers, the stream and the fallback."""

    def __init__(self, backend: Backend, loop: LoopThread, cache_size: int = CACHE_SIZE) -> None:
        self.backend = backend
        self.loop = loop
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, TaskDict] = OrderedDict()
        self._cache_size = cache_size
        self._watchers: dict[str, list[Watcher]] = {}
        self._listeners: list[Watcher] = []
        self.mode = "connecting"  #: "stream" while the event stream is up, else "polling"
        self.connected = threading.Event()
        self.last_seq = 0
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self._wake: asyncio.Event | None = None
        self.ticker = Ticker(self)

    def start(self) -> None:
        """Start the subscription on the loop thread (once)."""
        self.loop.loop.call_soon_threadsafe(self._spawn)

    def _spawn(self) -> None:
        if self._runner is None and not self._closing:
            self._runner = asyncio.ensure_future(self._run())

    def close(self) -> None:
        """Stop the subscription and wait until it has ended (its connection closed)."""
        self._closing = True
        with contextlib.suppress(Exception):
            self.loop.run(self._stop(), timeout=10)

    async def _stop(self) -> None:
        runner = self._runner
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    # -- cache and watchers -----------------------------------------------------------------

    def cached(self, task_id: str) -> TaskDict | None:
        """The latest state seen for a task, if it is still in the cache."""
        with self._lock:
            return self._cache.get(task_id)

    def watch(self, task_id: str, watcher: Watcher) -> TaskDict | None:
        """Call ``watcher(task)`` on every change of one task; returns its cached state."""
        with self._lock:
            self._watchers.setdefault(task_id, []).append(watcher)
            return self._cache.get(task_id)

    def unwatch(self, task_id: str, watcher: Watcher) -> None:
        """Stop calling ``watcher`` for this task."""
        with self._lock:
            watchers = self._watchers.get(task_id)
            if watchers and watcher in watchers:
                watchers.remove(watcher)
                if not watchers:
                    del self._watchers[task_id]

    def listen(self, listener: Watcher) -> None:
        """Call ``listener(task)`` on every change of any task (boards)."""
        with self._lock:
            self._listeners.append(listener)

    def unlisten(self, listener: Watcher) -> None:
        """Stop calling ``listener``."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def offer(self, task: TaskDict) -> None:
        """Pass on a state learnt from a REST answer (applied on the loop thread)."""
        self.loop.loop.call_soon_threadsafe(self.apply, task, False)

    def apply(self, task: TaskDict, ordered: bool) -> bool:
        """Cache a task's state and tell its watchers; False when it was not newer."""
        task_id = task["task_id"]
        with self._lock:
            current = self._cache.get(task_id)
            if current is not None and not is_newer(current, task, ordered):
                return False
            self._cache[task_id] = task
            self._cache.move_to_end(task_id)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            targets = list(self._watchers.get(task_id, ())) + list(self._listeners)
        for watcher in targets:
            try:
                watcher(task)
            except Exception as exc:  # one broken watcher must not stop the feed
                print(f"jupyter-tasks: a task watcher failed: {exc!r}", file=sys.stderr)
        return True

    def _forget(self, task_id: str) -> None:
        with self._lock:
            self._cache.pop(task_id, None)

    def _watched_unfinished(self) -> list[str]:
        with self._lock:
            ids = list(self._watchers)
            return [i for i in ids if not is_finished(self._cache.get(i) or {})]

    def call_later(self, delay: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
        """Schedule ``fn`` on the loop thread (throttled widget updates)."""
        return self.loop.loop.call_later(delay, fn)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop thread soon; safe from any thread."""
        self.loop.loop.call_soon_threadsafe(fn)

    # -- the feed ----------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = POLL_FIRST_SECONDS
        while not self._closing:
            started = time.monotonic()
            try:
                await self._stream()
            except asyncio.CancelledError:
                raise
            except Exception:
                pass  # closed, refused, or no stream at all: poll until it comes back
            was_up = self.connected.is_set()
            self.connected.clear()
            if was_up and time.monotonic() - started > POLL_FIRST_SECONDS:
                delay = POLL_FIRST_SECONDS
                continue  # it was working (dropped, server restart): reconnect at once
            self.mode = "polling"
            try:
                changed = await self._poll()
            except Exception:
                changed = False
            delay = POLL_FIRST_SECONDS if changed else min(delay * 2, POLL_MAX_SECONDS)
            await self._sleep(delay)

    async def _sleep(self, delay: float) -> None:
        self._wake = asyncio.Event()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    def wake(self) -> None:
        """Poll (or reconnect) now instead of at the end of the backoff."""

        def _set() -> None:
            if self._wake is not None:
                self._wake.set()

        self.loop.loop.call_soon_threadsafe(_set)

    async def _stream(self) -> None:
        async for event in self.backend.events():
            kind = event.get("event")
            if kind == "snapshot":
                await self._resync(event.get("tasks") or [])
                self.mode = "stream"
                self.connected.set()
            elif kind == "deleted":
                self.last_seq = int(event.get("seq", self.last_seq))
                self._forget(event["task_id"])
            elif kind in ("transition", "progress"):
                self.last_seq = int(event.get("seq", self.last_seq))
                self.apply(_event_task(event, self.cached(event["task_id"])), True)

    async def _resync(self, tasks: list[TaskDict]) -> None:
        """Take the snapshot; fetch watched tasks it lacks (they finished while we were away)."""
        seen = set()
        for task in tasks:
            seen.add(task["task_id"])
            self.apply(task, True)
        missing = [i for i in self._watched_unfinished() if i not in seen]
        await self._fetch(missing)

    async def _fetch(self, task_ids: list[str]) -> bool:
        loop = asyncio.get_running_loop()
        changed = False
        for task_id in task_ids:
            try:
                task = await loop.run_in_executor(None, self.backend.get, task_id)
            except Exception:
                continue
            changed = self.apply(task, False) or changed
        return changed

    async def _poll(self) -> bool:
        """One polling round: the unfinished tasks, then watched ones that left that list."""
        watched = self._watched_unfinished()
        with self._lock:
            listening = bool(self._listeners)
        if not watched and not listening:
            return False
        loop = asyncio.get_running_loop()
        listed, changed = set(), False
        query = ListQuery(statuses=UNFINISHED, limit=1000)
        tasks, _ = await loop.run_in_executor(None, self.backend.list, query)
        if listening:
            recent, _ = await loop.run_in_executor(None, self.backend.list, ListQuery(limit=100))
            tasks = recent + tasks
        for task in tasks:
            listed.add(task["task_id"])
            changed = self.apply(task, False) or changed
        missing = [i for i in watched if i not in listed]
        return await self._fetch(missing) or changed


def _event_task(event: TaskDict, cached: TaskDict | None) -> TaskDict:
    """The task an event describes: its ``task`` field, or the cached one with its news."""
    task = event.get("task")
    if isinstance(task, dict):
        return task
    merged = dict(cached or {"task_id": event["task_id"]})
    for key in ("status", "progress", "message"):
        if key in event:
            merged[key] = event[key]
    return merged


class Ticker:
    """Once a second, refresh the elapsed time of running rows (one timer per kernel)."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._lock = threading.Lock()
        self._rows: weakref.WeakSet[Any] = weakref.WeakSet()
        self._scheduled = False

    def add(self, row: Any) -> None:
        """Call ``row.tick(now)`` every second until it returns False (from any thread)."""
        with self._lock:
            self._rows.add(row)
            start, self._scheduled = not self._scheduled, True
        if start:
            self._hub.call_soon(self._schedule)

    def _schedule(self) -> None:
        self._hub.call_later(TICK_SECONDS, self._tick)

    def _tick(self) -> None:
        now = time.time()
        with self._lock:
            rows = list(self._rows)
        done = [row for row in rows if not row.tick(now)]
        with self._lock:
            for row in done:
                self._rows.discard(row)
            self._scheduled = bool(self._rows)
        if self._scheduled:
            self._schedule()


class Throttle:
    """Leading edge plus latest value: at most one render per interval, never a lost final."""

    def __init__(
        self, hub: Hub, render: Callable[[Any], None], interval: float = THROTTLE_SECONDS
    ) -> None:
        self._hub = hub
        self._render = render
        self._interval = interval
        self._last = 0.0
        self._pending: Any = None
        self._has_pending = False
        self._timer: asyncio.TimerHandle | None = None
        self._lock = threading.Lock()

    def now(self, value: Any) -> None:
        """Render at once (a transition), dropping any pending progress."""
        with self._lock:
            self._pending, self._has_pending = None, False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._last = time.monotonic()
        self._render(value)

    def soon(self, value: Any) -> None:
        """Render now if the interval has passed, else keep it as the latest to render."""
        with self._lock:
            wait = self._last + self._interval - time.monotonic()
            if wait > 0:
                self._pending, self._has_pending = value, True
                if self._timer is None:
                    self._timer = self._hub.call_later(wait, self._flush)
                return
            self._last = time.monotonic()
        self._render(value)

    def _flush(self) -> None:
        with self._lock:
            value, due = self._pending, self._has_pending
            self._pending, self._has_pending, self._timer = None, False, None
            self._last = time.monotonic()
        if due:
            self._render(value)
