"""Per-task overhead of ``DaskExecutor`` next to plain ``client.submit`` on the same cluster.

    python benchmarks/dask_overhead.py [--address tcp://...] [--round-trips 200]
                                       [--tasks 1000] [--threads 2]

Without ``--address`` a ``LocalCluster`` (one worker process, ``--threads`` threads) is
started for the run.  Every row runs the same no-op (``operator.add(1, 2)``):

* ``client.submit``: Dask alone, the task runs in the worker's thread;
* ``DaskExecutor.run``: the executor, the task runs in a warm child process of the worker
  (spawned once, then reused), with its log, result frame and events;
* ``orchestrator``: the whole engine (SQLite file, events), submit -> completed.

Round trip = one task at a time; rate = ``--tasks`` submitted at once and awaited (the
executor hands Dask as many at a time as the cluster has threads; the rest wait for a free
thread in priority order, each shown to the scheduler as a stand-in task).
The first task on a fresh worker also pays for starting the child process (shown apart).
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from distributed import Client, LocalCluster
from specs import NOOP_PARAMETERS, noop_spec

from jupyter_tasks.executors.base import RunSpec
from jupyter_tasks.executors.dask import DaskExecutor
from jupyter_tasks.models import TaskRequest, TaskStatus
from jupyter_tasks.orchestrator import EngineConfig, Orchestrator

NOOP = NOOP_PARAMETERS


def make_spec(tmp: str) -> RunSpec:
    return noop_spec(tmp)


async def figures(
    one: Callable[[], Awaitable[Any]], round_trips: int, tasks: int
) -> tuple[list[float], float]:
    """Round-trip times of ``one()`` awaited in turn, and the rate of ``tasks`` at once."""
    trips = []
    for _ in range(round_trips):
        t0 = time.perf_counter()
        await one()
        trips.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(tasks)))
    return trips, tasks / (time.perf_counter() - t0)


def noprogress(fraction: float | None, message: str | None) -> None:
    """Progress is not measured here."""


Row = tuple[str, list[float], float]


async def submit_row(address: str, args: argparse.Namespace) -> Row:
    async with Client(address, asynchronous=True) as client:  # type: ignore[no-untyped-call]
        await client.submit(operator.add, 1, 2, pure=False)  # warm

        async def plain() -> Any:
            return await client.submit(operator.add, 1, 2, pure=False)

        return ("client.submit", *await figures(plain, args.round_trips, args.tasks))


async def executor_row(address: str, args: argparse.Namespace, tmp: str) -> Row:
    executor = DaskExecutor(address, threads=args.threads)
    await executor.start()
    while not executor.health().healthy:
        await asyncio.sleep(0.05)
    try:
        t0 = time.perf_counter()
        warm = [executor.run(make_spec(tmp), noprogress) for _ in range(args.threads)]
        await asyncio.gather(*warm)
        print(f"first {args.threads} tasks (their child processes start): "
              f"{time.perf_counter() - t0:.2f} s")  # fmt: skip

        async def run() -> Any:
            outcome = await executor.run(make_spec(tmp), noprogress)
            assert outcome.ok, outcome.error

        return ("DaskExecutor.run", *await figures(run, args.round_trips, args.tasks))
    finally:
        await executor.stop()


async def engine_row(address: str, args: argparse.Namespace, tmp: str) -> Row:
    config = EngineConfig(db_path=os.path.join(tmp, "db", "tasks.db"), root_dir=tmp)
    config.max_workers = args.threads
    orch = Orchestrator(config, executor=DaskExecutor.from_config(config, address))
    await orch.start()
    try:
        while not orch.health()["healthy"]:
            await asyncio.sleep(0.05)

        async def engine() -> Any:
            task = await orch.submit(TaskRequest(task_type="python", description="no-op",
                                                 parameters=NOOP))  # fmt: skip
            done = await orch.wait(task.task_id, 120)
            assert done.status == TaskStatus.COMPLETED, done.error

        await engine()
        return ("orchestrator", *await figures(engine, args.round_trips, args.tasks))
    finally:
        await orch.stop()


async def measure(address: str, args: argparse.Namespace) -> list[Row]:
    rows = [await submit_row(address, args)]
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("logs", "results", "blobs"):
            os.mkdir(os.path.join(tmp, name))
        rows.append(await executor_row(address, args, tmp))
        rows.append(await engine_row(address, args, tmp))
    return rows


def report(rows: list[Row]) -> None:
    base_median = statistics.median(rows[0][1])
    base_rate = rows[0][2]
    print(
        f"{'path':18} {'median ms':>10} {'p90 ms':>8} {'x submit':>9} "
        f"{'tasks/s':>9} {'x submit':>9} {'overhead ms':>12}"
    )
    for name, trips, rate in rows:
        median = statistics.median(trips)
        p90 = statistics.quantiles(trips, n=10)[-1]
        print(
            f"{name:18} {median * 1e3:10.2f} {p90 * 1e3:8.2f} {median / base_median:9.2f} "
            f"{rate:9.0f} {rate / base_rate:9.2f} {(median - base_median) * 1e3:12.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--address", help="an existing scheduler (default: a LocalCluster)")
    parser.add_argument("--round-trips", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.address:
        report(asyncio.run(measure(args.address, args)))
        return
    with LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=1, threads_per_worker=args.threads, processes=True, dashboard_address=":0"
    ) as cluster:
        report(asyncio.run(measure(cluster.scheduler_address, args)))


if __name__ == "__main__":
    main()
