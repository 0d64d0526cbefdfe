"""Engine figures next to ProcessPoolExecutor, measured in the same run.

    python benchmarks/engine.py [--tasks 10000] [--round-trips 300] [--workers N]

Prints the no-op round trip (submit one, wait for it, repeat) and the rate of
N no-op tasks submitted at once and awaited, for the orchestrator (real SQLite
file, real worker processes) and for ``concurrent.futures.ProcessPoolExecutor``.
Targets: round trip within 3x of the pool's; rate at least 50% of the pool's.

A third rate is the engine's worker pool alone (``LocalExecutor``, no store, no
events, one run at a time per worker as the engine's slots run them): where the
engine's rate falls between it and the pool's shows what each part costs.
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, wait

from specs import noop_spec

from jupyter_tasks.executors.local import LocalExecutor
from jupyter_tasks.models import TaskRequest, TaskStatus
from jupyter_tasks.orchestrator import EngineConfig, Orchestrator

NOOP = TaskRequest(
    task_type="python",
    description="no-op",
    parameters={"callable": "operator:add", "args": [1, 2]},
)


def pool_figures(workers: int, round_trips: int, tasks: int) -> tuple[list[float], float]:
    with ProcessPoolExecutor(workers) as pool:
        for f in [pool.submit(operator.add, 1, 2) for _ in range(workers * 4)]:
            f.result()  # warm
        trips = []
        for _ in range(round_trips):
            t0 = time.perf_counter()
            pool.submit(operator.add, 1, 2).result()
            trips.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        wait([pool.submit(operator.add, 1, 2) for _ in range(tasks)])
        rate = tasks / (time.perf_counter() - t0)
    return trips, rate


async def engine_figures(workers: int, round_trips: int, tasks: int) -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory() as tmp:
        config = EngineConfig(
            db_path=os.path.join(tmp, "tasks.db"),
            root_dir=tmp,
            max_workers=workers,
            max_queue_size=tasks + 10,
        )
        orch = Orchestrator(config)
        await orch.start()
        try:
            for _ in range(workers * 4):
                await orch.wait((await orch.submit(NOOP)).task_id, 60)  # warm
            trips = []
            for _ in range(round_trips):
                t0 = time.perf_counter()
                await orch.wait((await orch.submit(NOOP)).task_id, 60)
                trips.append(time.perf_counter() - t0)
            rate = await _burst(orch, tasks)
        finally:
            await orch.stop()
    return trips, rate


async def _burst(orch: Orchestrator, tasks: int) -> float:
    """Submit ``tasks`` at once (batches of 1,000) and wait until every one completed."""
    sub = orch.subscribe(max_pending=4 * tasks)  # never dropped: every completion is counted
    t0 = time.perf_counter()
    ids: set[str] = set()
    for start in range(0, tasks, 1000):
        batch = await orch.submit_batch([NOOP] * min(1000, tasks - start))
        ids.update(t.task_id for t in batch)
    done = 0
    async for event in sub:
        if event["task_id"] in ids and event["status"] == TaskStatus.COMPLETED.value:
            done += 1
            if done == tasks:
                break
    sub.close()
    if done != tasks:
        raise RuntimeError(f"the event stream ended after {done} of {tasks} completions")
    return tasks / (time.perf_counter() - t0)


async def pool_alone_rate(workers: int, tasks: int) -> float:
    """``tasks`` no-op runs on the engine's worker pool alone, ``workers`` at a time."""
    with tempfile.TemporaryDirectory() as tmp:

        async def lane(first: int, count: int) -> None:
            for n in range(first, first + count):
                await executor.run(noop_spec(tmp, f"{n:032x}"), lambda p, m: None)

        executor = LocalExecutor(max_workers=workers)
        await executor.start()
        try:
            await asyncio.gather(*(lane(n * 10, 4) for n in range(workers)))  # warm
            share = tasks // workers
            t0 = time.perf_counter()
            await asyncio.gather(*(lane(tasks + n * share, share) for n in range(workers)))
            return share * workers / (time.perf_counter() - t0)
        finally:
            await executor.stop()


def ms(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if q < 100 else max(values) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--round-trips", type=int, default=300)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    pool_trips, pool_rate = pool_figures(args.workers, args.round_trips, args.tasks)
    eng_trips, eng_rate = asyncio.run(engine_figures(args.workers, args.round_trips, args.tasks))
    alone_rate = asyncio.run(pool_alone_rate(args.workers, args.tasks))

    p50_pool, p50_eng = statistics.median(pool_trips) * 1e3, statistics.median(eng_trips) * 1e3
    print(f"workers={args.workers} round_trips={args.round_trips} tasks={args.tasks}")
    print(f"{'figure':<34}{'jupyter-tasks':>16}{'ProcessPool':>14}{'ratio':>10}  target")
    print(
        f"{'no-op round trip p50 (ms)':<34}{p50_eng:>16.2f}{p50_pool:>14.2f}"
        f"{p50_eng / p50_pool:>9.1f}x  <= 3x"
    )
    print(
        f"{'no-op round trip p99 (ms)':<34}{ms(eng_trips, 99):>16.2f}{ms(pool_trips, 99):>14.2f}"
        f"{ms(eng_trips, 99) / ms(pool_trips, 99):>9.1f}x"
    )
    print(
        f"{f'{args.tasks} no-op tasks (tasks/s)':<34}{eng_rate:>16.0f}{pool_rate:>14.0f}"
        f"{eng_rate / pool_rate:>9.0%}  >= 50%"
    )
    print(
        f"{'  its worker pool alone (tasks/s)':<34}{alone_rate:>16.0f}{pool_rate:>14.0f}"
        f"{alone_rate / pool_rate:>9.0%}"
    )


if __name__ == "__main__":
    main()
