"""Own worker pool (``LocalExecutor``) against pebble's ``ProcessPool``, by measurement.

Two figures per pool: the round trip of one no-op task (sequential, median and p99), and
the throughput of 2,000 no-op tasks with ``workers`` in flight.  The standard library's
``ProcessPoolExecutor`` is measured too, as a floor.  The own pool does more per task
than the others (a log file opened and dup2'ed, parameters validated, the result pickled
and previewed, JSON both ways), which is the price of the requirements in the report.

Run: ``python benchmarks/pool_choice.py [--workers 2] [--tasks 2000] [--trips 300]``
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pebble

from jupyter_tasks.executors.base import RunSpec
from jupyter_tasks.executors.local import LocalExecutor
from jupyter_tasks.tasktypes.python import PythonTask


def noop() -> None:
    """The task: nothing at all."""


def summary(name: str, trips: list[float], seconds: float, tasks: int) -> dict[str, Any]:
    trips_ms = sorted(t * 1000 for t in trips)
    return {
        "pool": name,
        "median_ms": statistics.median(trips_ms),
        "p99_ms": trips_ms[int(len(trips_ms) * 0.99) - 1],
        "tasks_per_s": tasks / seconds,
    }


def measure_sync(
    name: str, submit: Callable[[], concurrent.futures.Future[Any]], tasks: int, trips: int
) -> dict[str, Any]:
    for _ in range(20):  # warm every worker
        submit().result()
    times = []
    for _ in range(trips):
        start = time.perf_counter()
        submit().result()
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    futures = [submit() for _ in range(tasks)]
    for future in futures:
        future.result()
    return summary(name, times, time.perf_counter() - start, tasks)


def measure_pebble(workers: int, tasks: int, trips: int) -> dict[str, Any]:
    with pebble.ProcessPool(max_workers=workers) as pool:
        return measure_sync("pebble.ProcessPool", lambda: pool.schedule(noop), tasks, trips)


def measure_stdlib(workers: int, tasks: int, trips: int) -> dict[str, Any]:
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
        return measure_sync("ProcessPoolExecutor", lambda: pool.submit(noop), tasks, trips)


async def measure_own(
    workers: int, tasks: int, trips: int, scratch: Path, nice: int
) -> dict[str, Any]:
    def spec() -> RunSpec:
        task_id = uuid.uuid4().hex
        return RunSpec(
            task_id=task_id,
            attempt=1,
            task_type="python",
            type_path=PythonTask.type_path(),
            parameters={"callable": "builtins:abs", "args": [0]},
            interpreter=sys.executable,
            root_dir=str(scratch),
            log_path=str(scratch / "logs" / f"{task_id}.log"),
            result_path=str(scratch / "results" / task_id),
            blob_dir=str(scratch),
            result_max_bytes=1 << 30,
        )

    def ignore(fraction: float | None, message: str | None) -> None:
        pass

    executor = LocalExecutor(max_workers=workers, nice=nice)
    await executor.start()
    try:
        for _ in range(20):
            await executor.run(spec(), ignore)
        times = []
        for _ in range(trips):
            start = time.perf_counter()
            await executor.run(spec(), ignore)
            times.append(time.perf_counter() - start)
        slots = asyncio.Semaphore(workers)  # the orchestrator never runs more at once

        async def one() -> None:
            async with slots:
                await executor.run(spec(), ignore)

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(tasks)))
        name = f"own pool, nice {nice}"
        return summary(name, times, time.perf_counter() - start, tasks)
    finally:
        await executor.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--trips", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        # nice 0 compares like with like; nice 5 is the default (workers yield to the server).
        rows = [
            asyncio.run(measure_own(args.workers, args.tasks, args.trips, Path(scratch), nice))
            for nice in (0, 5)
        ]
        rows.append(measure_pebble(args.workers, args.tasks, args.trips))
        rows.append(measure_stdlib(args.workers, args.tasks, args.trips))
    print(f"workers={args.workers} tasks={args.tasks} round trips={args.trips}")
    print(f"{'pool':<28}{'round trip median':>20}{'p99':>10}{'throughput':>16}")
    for row in rows:
        print(
            f"{row['pool']:<28}{row['median_ms']:>17.2f} ms{row['p99_ms']:>7.2f} ms"
            f"{row['tasks_per_s']:>10.0f} /s"
        )


if __name__ == "__main__":
    main()
