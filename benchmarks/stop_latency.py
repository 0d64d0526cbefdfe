"""How long after its deadline, or after a cancel request, a task really stops.

    python benchmarks/stop_latency.py [--runs 5] [--grace 2.0]

Three kinds of task, each stopped by its timeout and by a cancel: a cooperative one (it
ends on SIGTERM), one that ignores SIGTERM (it ends on the SIGKILL after
``kill_grace_seconds``), and one with children (two ``sleep`` processes, one in a session
of its own, and a forked copy of itself). For each, the time from the deadline
(``started_at + timeout_seconds``) or from the cancel request until every process of the
task's tree is gone, and until the engine reports the end (``failed``/``cancelled``);
the last column counts processes still running when the end was reported (it should be 0).

The orchestrator runs in this process (real SQLite file, real worker processes); a thread
watches the task's processes, taken from psutil once the task has started them all.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from jupyter_tasks.models import TaskRequest
from jupyter_tasks.orchestrator import EngineConfig, Orchestrator

STOPPERS = '''
"""Tasks that run until they are stopped; each writes its pids (the worker's first)."""
import os
import signal
import subprocess
import time


def run(pidfile, kind):
    if kind == "ignores-sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pids = [os.getpid()]
    if kind == "with-children":
        for own_session in (False, True):
            pids.append(subprocess.Popen(["sleep", "1000"], start_new_session=own_session).pid)
        forked = os.fork()
        if forked == 0:
            try:
                time.sleep(1000)
            finally:
                os._exit(0)
        pids.append(forked)
    with open(pidfile + ".tmp", "w") as fh:
        fh.write(" ".join(map(str, pids)))
    os.replace(pidfile + ".tmp", pidfile)
    time.sleep(1000)
'''

KINDS = ("cooperative", "ignores-sigterm", "with-children")
STOPS = ("timeout", "cancel")
TIMEOUT_SECONDS = 1  # the smallest timeout a request can ask for


@dataclass
class Sample:
    gone: float  # seconds from the deadline / the request until the tree is gone
    reported: float  # ... until the engine reported the end
    alive_at_report: int


class TreeWatcher(threading.Thread):
    """Polls the processes until every one is gone (or a zombie); notes the wall time."""

    def __init__(self, procs: list[psutil.Process]) -> None:
        super().__init__(daemon=True)
        self.procs = procs
        self.gone_at = 0.0

    def alive(self) -> list[psutil.Process]:
        out = []
        for proc in self.procs:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    out.append(proc)
            except psutil.NoSuchProcess:
                pass
        return out

    def run(self) -> None:
        while self.alive():
            time.sleep(0.0005)
        self.gone_at = time.time()


async def read_pids(path: Path, limit: float = 60.0) -> list[int]:
    deadline = time.monotonic() + limit
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the task never wrote {path}")
        await asyncio.sleep(0.002)
    return [int(pid) for pid in path.read_text().split()]


async def warm_pool(orch: Orchestrator, limit: float = 120.0) -> None:
    """Wait for the pool to be whole: a stopped task's worker is replaced, and a deadline
    counts from the start, so a cold worker would eat into the next task's time."""
    deadline = time.monotonic() + limit
    while orch.health()["workers"] < orch.config.max_workers:
        if time.monotonic() > deadline:
            raise TimeoutError("the worker pool was not refilled")
        await asyncio.sleep(0.01)


async def measure(orch: Orchestrator, root: Path, kind: str, stop: str) -> Sample:
    await warm_pool(orch)
    pidfile = root / f"pids-{uuid.uuid4().hex}"
    request = TaskRequest(
        task_type="python",
        description=f"{kind}, stopped by {stop}",
        parameters={"callable": "stoppers:run", "args": [str(pidfile), kind]},
        timeout_seconds=TIMEOUT_SECONDS if stop == "timeout" else None,
    )
    task = await orch.submit(request)
    try:
        pids = await read_pids(pidfile)
    except TimeoutError:
        raise RuntimeError(f"the task did not start: {await orch.get(task.task_id)}") from None
    worker = psutil.Process(pids[0])
    procs = {p.pid: p for p in [worker, *worker.children(recursive=True)]}
    procs.update((pid, psutil.Process(pid)) for pid in pids if pid not in procs)
    watcher = TreeWatcher(list(procs.values()))
    watcher.start()
    if stop == "cancel":
        start = time.time()
        final = await orch.cancel(task.task_id)
        reported = time.time()
    else:
        final = await orch.wait(task.task_id, 120)
        reported = time.time()
        assert final.started_at is not None
        start = final.started_at.timestamp() + TIMEOUT_SECONDS
    alive = len(watcher.alive())
    expected = "cancelled" if stop == "cancel" else "failed"
    assert final.status.value == expected, final
    await asyncio.to_thread(watcher.join, 120)
    return Sample(watcher.gone_at - start, reported - start, alive)


async def figures(runs: int, grace: float) -> dict[tuple[str, str], list[Sample]]:
    with tempfile.TemporaryDirectory(prefix="jt-stop-") as tmp:
        root = Path(tmp)
        (root / "stoppers.py").write_text(textwrap.dedent(STOPPERS))
        config = EngineConfig(
            db_path=os.path.join(tmp, "db", "tasks.db"),
            root_dir=tmp,
            max_workers=1,
            kill_grace_seconds=grace,
        )
        orch = Orchestrator(config)
        await orch.start()
        try:
            warm = TaskRequest(
                task_type="python", description="warm-up", parameters={"callable": "os:getpid"}
            )
            await orch.wait((await orch.submit(warm)).task_id, 120)
            out: dict[tuple[str, str], list[Sample]] = {}
            for _ in range(runs):
                for kind in KINDS:
                    for stop in STOPS:
                        sample = await measure(orch, root, kind, stop)
                        out.setdefault((kind, stop), []).append(sample)
        finally:
            await orch.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="stops measured per row")
    parser.add_argument("--grace", type=float, default=2.0, help="kill_grace_seconds")
    args = parser.parse_args()
    samples = asyncio.run(figures(args.runs, args.grace))

    print(f"kill_grace_seconds={args.grace}, {args.runs} runs per row, times in ms")
    print("after: the deadline (timeout) or the cancel request")
    header = f"{'task':<17}{'stopped by':<12}{'tree gone p50':>14}{'max':>9}"
    header += f"{'reported p50':>14}{'max':>9}{'alive at report':>17}"
    print(header)
    print("-" * len(header))
    for (kind, stop), rows in samples.items():
        gone = [s.gone * 1000 for s in rows]
        reported = [s.reported * 1000 for s in rows]
        alive = sum(s.alive_at_report for s in rows)
        print(
            f"{kind:<17}{stop:<12}{statistics.median(gone):>14.1f}{max(gone):>9.1f}"
            f"{statistics.median(reported):>14.1f}{max(reported):>9.1f}{alive:>17}"
        )
    print(f"\n{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
