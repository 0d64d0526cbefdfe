"""A chunk of runs handed to one worker in one request, each begun once it takes a permit.

The server writes one permit per run on the worker's semaphore eventfd, then the
request; the worker takes a permit before each run and skips the rest when there is
none.  Taking the permits back is atomic, so afterwards the server knows exactly how
many runs began (``begun``): a kill or a cancel stops only the run it is meant for,
and the runs after it are given back, never begun, to be run one by one.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..models import WORKER_CRASHED, TaskError
from ._replies import deliver_progress
from .base import Outcome

if TYPE_CHECKING:
    from ._workerproc import Job, WorkerProcess

#: ``on_end(task_id, outcome)``: None when the run was killed.
EndCallback = Callable[[str, Outcome | None], None]


class ChunkRun:
    """The server's side of one chunk request; see the module docstring."""

    def __init__(
        self,
        worker: WorkerProcess,
        jobs: list[Job],
        on_begin: Callable[[str], None],
        on_end: EndCallback,
        outcome_of: Callable[[Job, dict[str, Any]], Outcome | None],
    ) -> None:
        self.worker = worker
        self.jobs = jobs
        self.index = {job.spec.task_id: n for n, job in enumerate(jobs)}
        self.current = 0  #: the run going on now, or the next one
        self.begun: int | None = None  #: runs that took a permit, once the rest were taken back
        self.stale = False  #: the worker found changed code before ``current`` and ended
        self.retire_after = False  #: the worker is not to be used again (its memory grew)
        self.finished: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._on_begin = on_begin
        self._on_end = on_end
        self._outcome_of = outcome_of
        self._skipped_seen = False
        self._dropped: set[str] = set()  #: never begun, stopped by a kill: ended at once

    @property
    def current_job(self) -> Job | None:
        limit = len(self.jobs) if self.begun is None else self.begun
        return self.jobs[self.current] if self.current < limit else None

    def start(self) -> None:
        """Put the permits on the eventfd (before the request is sent); the first run begins."""
        assert self.worker.permit_fd is not None
        os.eventfd_write(self.worker.permit_fd, len(self.jobs))
        self._sync()
        self._on_begin(self.jobs[0].spec.task_id)

    def _sync(self) -> None:
        """The worker's ``job`` is the run going on now (memory checks and live logs read it)."""
        self.worker.job = self.current_job

    def take_back(self) -> None:
        """Take back every permit not taken yet: the runs they were for never begin."""
        if self.begun is not None:
            return
        fd = self.worker.permit_fd
        if fd is None:  # (closed once the worker ended, which took them back first)
            return
        left = 0
        while True:
            try:
                os.eventfd_read(fd)
            except BlockingIOError:
                break
            left += 1
        self.begun = len(self.jobs) - left
        self._sync()
        self._maybe_finish()

    def state_of(self, job: Job) -> str:
        """``ended``, ``running`` (or just ended), or ``not begun`` (and never will be).

        Takes the permits back first: nothing after ``job`` begins from then on.
        """
        n = self.index[job.spec.task_id]
        if n < self.current or job.spec.task_id in self._dropped or self.finished.done():
            return "ended"  # (or handed back already, to be run one by one)
        self.take_back()
        assert self.begun is not None
        if n >= self.begun:
            return "not begun"
        return "running" if n == self.begun - 1 else "ended"

    def must_end_worker(self, job: Job) -> bool:
        """Whether killing ``job`` means ending the worker: only while it may be running.

        A run that will never begin ends at once, killed (``on_end`` with None); the
        ones after it are handed back when the chunk ends.
        """
        state = self.state_of(job)
        if state == "not begun":
            self._dropped.add(job.spec.task_id)
            if not job.reply.done():
                job.reply.set_result({"op": "skipped"})
            self._on_end(job.spec.task_id, None)
        return state == "running"

    def dispatch(self, message: dict[str, Any]) -> None:
        """A message from the worker while the chunk is on it."""
        op = message.get("op")
        job = self.current_job
        if op == "skipped":
            # Only the worker's own word: exactly the runs whose permits were taken back.
            if self.begun is not None and message.get("task_ids") == [
                j.spec.task_id for j in self.jobs[self.begun :]
            ]:
                self._skipped_seen = True
                self._maybe_finish()
        elif job is None or message.get("task_id") != job.spec.task_id:
            return
        elif op == "progress":
            progress, text = message.get("progress"), message.get("message")
            deliver_progress(job.on_progress, job.spec.task_id, progress, text)
        elif op == "done":
            try:
                outcome = self._outcome_of(job, message)
            except Exception as exc:  # malformed: this run fails; the worker goes on
                self.retire_after = True
                error = TaskError(type=WORKER_CRASHED, message=f"the worker's reply: {exc!r}")
                outcome = Outcome(ok=False, error=error)
            self._end(job, outcome)
        elif op == "stale":  # it took the permit but did not begin: neither did the rest
            self.stale = True
            self.begun = self.current
            self._sync()
            self._maybe_finish()

    def worker_exited(self, reply: dict[str, Any]) -> None:
        """The worker ended: a run that took its permit and did not end was cut short."""
        self.take_back()
        job = self.current_job
        # At most one: a run ends before the next takes a permit, and every reply the
        # worker wrote before it ended has been read.
        while job is not None:
            self._end(job, self._outcome_of(job, reply))
            job = self.current_job
        self._skipped_seen = True
        self._maybe_finish()

    def _end(self, job: Job, outcome: Outcome | None) -> None:
        if not job.reply.done():
            job.reply.set_result({"op": "ended"})
        self.current += 1
        self._sync()
        self._on_end(job.spec.task_id, outcome)
        following = self.current_job
        if following is not None:
            self._on_begin(following.spec.task_id)
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self.finished.done() or self.current_job is not None:
            return
        begun = len(self.jobs) if self.begun is None else self.begun
        if self.current < begun:
            return
        if begun < len(self.jobs) and not (self._skipped_seen or self.stale):
            return  # the worker may still read the request: wait for its word
        left = [job.spec.task_id for job in self.jobs[begun:]]
        self.finished.set_result([task_id for task_id in left if task_id not in self._dropped])
