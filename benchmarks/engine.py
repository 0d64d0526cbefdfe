"""Engine figures next to ProcessPoolExecutor, measured in the same run.

    python benchmarks/engine.py [--tasks 10000] [--round-trips 300] [--rounds 3] [--workers N]

Prints the no-op round trip (submit one, wait for it, repeat) and the rate of
N no-op tasks submitted at once and awaited, for the orchestrator (real SQLite
file, real worker processes) and for ``concurrent.futures.ProcessPoolExecutor``.
Targets: round trip within 3x of the pool's; rate at least 50% of the pool's.

The two are measured by turns, so both see the same stretches of a noisy
machine: the round trips alternate in blocks of 25, the bursts round by round
(the median round is printed).  A third rate is the engine's worker pool alone
(``LocalExecutor``, no store, no events, one run at a time per worker as the
engine's slots run them), in the same rounds: where the engine's rate falls
between it and the pool's shows what each part costs.
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
from jupyter_tasks.models import FINISHED, TaskRequest, TaskStatus
from jupyter_tasks.orchestrator import EngineConfig, Orchestrator

#: Round trips alternate in blocks this long: each side back to back with itself, as in
#: use, while both sample the same stretches of the machine's load.
TRIP_BLOCK = 25

NOOP = TaskRequest(
    task_type="python",
    description="no-op",
    parameters={"callable": "operator:add", "args": [1, 2]},
)


def pool_trip(pool: ProcessPoolExecutor) -> float:
    t0 = time.perf_counter()
    pool.submit(operator.add, 1, 2).result()
    return time.perf_counter() - t0


def pool_rate(pool: ProcessPoolExecutor, tasks: int) -> float:
    t0 = time.perf_counter()
    wait([pool.submit(operator.add, 1, 2) for _ in range(tasks)])
    return tasks / (time.perf_counter() - t0)


async def engine_trip(orch: Orchestrator) -> float:
    t0 = time.perf_counter()
    await orch.wait((await orch.submit(NOOP)).task_id, 60)
    return time.perf_counter() - t0


async def figures(
    workers: int, round_trips: int, tasks: int, rounds: int
) -> dict[str, list[float]]:
    """Round trips and burst rates of the pool, the engine and its worker pool, by turns."""
    out: dict[str, list[float]] = {
        name: [] for name in ("pool", "engine", "pool_rate", "engine_rate", "alone_rate")
    }
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(workers) as pool:
        config = EngineConfig(
            db_path=os.path.join(tmp, "tasks.db"),
            root_dir=tmp,
            max_workers=workers,
            max_queue_size=tasks + 10,
        )
        orch = Orchestrator(config)
        alone = LocalExecutor(max_workers=workers)
        await orch.start()
        await alone.start()
        try:
            for _ in range(workers * 4):  # warm all three
                pool_trip(pool)
                await engine_trip(orch)
            await alone_rate(alone, tmp, workers * 4, workers)
            for block in range(0, round_trips, TRIP_BLOCK):
                for _ in range(min(TRIP_BLOCK, round_trips - block)):
                    out["pool"].append(pool_trip(pool))
                for _ in range(min(TRIP_BLOCK, round_trips - block)):
                    out["engine"].append(await engine_trip(orch))
            for n in range(rounds):
                out["pool_rate"].append(pool_rate(pool, tasks))
                out["engine_rate"].append(await _burst(orch, tasks))
                out["alone_rate"].append(await alone_rate(alone, tmp, tasks, workers, n))
        finally:
            await orch.stop()
            await alone.stop()
    return out


async def _burst(orch: Orchestrator, tasks: int) -> float:
    """Submit ``tasks`` at once (batches of 1,000) and wait until every one completed."""
    # Only the ends, as a client that waits for its tasks subscribes; never dropped.
    sub = orch.subscribe(max_pending=4 * tasks, statuses=[s.value for s in FINISHED])
    t0 = time.perf_counter()
    ids: set[str] = set()
    for start in range(0, tasks, 1000):
        batch = await orch.submit_batch([NOOP] * min(1000, tasks - start))
        ids.update(t.task_id for t in batch)
    done = 0
    async for event in sub:
        if event["task_id"] not in ids:
            continue
        if event["status"] != TaskStatus.COMPLETED.value:
            raise RuntimeError(f"a no-op task ended {event['status']}: {event['task']['error']}")
        done += 1
        if done == tasks:
            break
    sub.close()
    if done != tasks:
        raise RuntimeError(f"the event stream ended after {done} of {tasks} completions")
    return tasks / (time.perf_counter() - t0)


async def alone_rate(
    executor: LocalExecutor, tmp: str, tasks: int, workers: int, round_no: int = -1
) -> float:
    """``tasks`` no-op runs on the engine's worker pool alone, ``workers`` at a time."""

    async def lane(first: int, count: int) -> None:
        for n in range(first, first + count):
            await executor.run(noop_spec(tmp, f"{round_no + 1:08x}{n:024x}"), lambda p, m: None)

    share = tasks // workers
    t0 = time.perf_counter()
    await asyncio.gather(*(lane(n * share, share) for n in range(workers)))
    return share * workers / (time.perf_counter() - t0)


def ms(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if q < 100 else max(values) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--round-trips", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3, help="bursts of each, by turns")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    got = asyncio.run(figures(args.workers, args.round_trips, args.tasks, args.rounds))
    pool, eng = got["pool"], got["engine"]
    rate = {
        name: statistics.median(got[name]) for name in ("pool_rate", "engine_rate", "alone_rate")
    }
    print(
        f"workers={args.workers} round_trips={args.round_trips} tasks={args.tasks}"
        f" rounds={args.rounds}"
    )
    print(f"{'figure':<34}{'jupyter-tasks':>16}{'ProcessPool':>14}{'ratio':>10}  target")
    for label, q, target in (("p50", 50, "  <= 3x"), ("p99", 99, "")):
        mine, theirs = ms(eng, q), ms(pool, q)
        print(
            f"{f'no-op round trip {label} (ms)':<34}{mine:>16.2f}{theirs:>14.2f}"
            f"{mine / theirs:>9.1f}x{target}"
        )
    print(
        f"{f'{args.tasks} no-op tasks (tasks/s)':<34}{rate['engine_rate']:>16.0f}"
        f"{rate['pool_rate']:>14.0f}{rate['engine_rate'] / rate['pool_rate']:>9.0%}  >= 50%"
    )
    print(
        f"{'  its worker pool alone (tasks/s)':<34}{rate['alone_rate']:>16.0f}"
        f"{rate['pool_rate']:>14.0f}{rate['alone_rate'] / rate['pool_rate']:>9.0%}"
    )
    rounds = ", ".join(
        f"{e:.0f}/{p:.0f}" for e, p in zip(got["engine_rate"], got["pool_rate"], strict=True)
    )
    print(f"rounds (engine/pool tasks/s): {rounds}")


if __name__ == "__main__":
    main()
