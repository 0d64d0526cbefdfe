"""The cluster's threads as slots, handed to waiting attempts highest priority first."""

from __future__ import annotations

import asyncio
import heapq


class Slots:
    """The cluster's threads, handed to waiting attempts by priority (higher first), then order.

    Dask honours a task's priority only among the tasks that wait in the same queue: one the
    scheduler has already sent to a worker runs before a higher-priority one submitted later.
    With scheduler-side queuing a worker gets ``ceil(worker-saturation * nthreads)`` tasks (2
    for one thread at the default 1.1), and tasks that are not "root-ish" go to a worker at
    once.  So Dask gets no more attempts than it has threads; the others wait here.
    """

    def __init__(self) -> None:
        self.capacity = 0  #: threads of the cluster's running workers
        self.used = 0  #: attempts handed to Dask (granted claims not released yet)
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []

    @property
    def waiting(self) -> int:
        """Claims not granted yet."""
        return len(self._waiting)

    def claim(self, priority: int, order: int) -> asyncio.Future[None]:
        """A future that resolves once a slot is this claim's; ``order`` must be unique."""
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (-priority, order, granted))
        self._grant()
        return granted

    def withdraw(self, granted: asyncio.Future[None]) -> None:
        """Give a claim up: its slot when it was granted, its place in line when not."""
        if granted.done() and not granted.cancelled():
            self.release()
            return
        granted.cancel()
        entries = [entry for entry in self._waiting if entry[2] is not granted]
        if len(entries) != len(self._waiting):
            heapq.heapify(entries)
            self._waiting = entries

    def release(self) -> None:
        """A granted slot is free again."""
        self.used = max(0, self.used - 1)
        self._grant()

    def set_capacity(self, capacity: int) -> None:
        """The cluster grew or shrank (or is gone: 0); slots in use stay theirs."""
        self.capacity = max(0, capacity)
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self.used < self.capacity:
            _, _, granted = heapq.heappop(self._waiting)
            if not granted.done():
                granted.set_result(None)
                self.used += 1
