"""Latency of ``GET /tasks`` pages with 100,000 finished tasks in the store; not part of the
test suite.

    python benchmarks/page_latency.py            # 100,000 tasks, 200 requests per figure
    python benchmarks/page_latency.py --quick    # 20,000 tasks, 50 requests per figure

The tasks are written into a store's real schema in one SQL statement (the test suite's
``seed_finished_tasks``: 8 in 10 completed, 1 in 10 failed, every other one tagged), then a
``jupyter server`` with the extension starts on that database (``rest.Server``).  Each page is
requested one at a time on a keep-alive connection: the first page, a deep cursor page (90%
of the way down), a status filter (first and deep), two statuses, a tag, and 1,000 rows at
once; Jupyter Server's ``/api/status`` in the same run is the reference.  p50 and p99 in ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rest import Server, running

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import seed_finished_tasks


def timings(server: Server, path: str, count: int) -> tuple[list[float], int]:
    """Seconds per request of ``GET path`` and the rows of its page."""
    conn = server.connection()
    rows = 0
    for _ in range(5):  # warm-up
        status, body = server.call("GET", path, None, conn)
        assert status == 200, (status, body)
        rows = len(body["tasks"]) if isinstance(body, dict) and "tasks" in body else 0
    times = []
    for _ in range(count):
        started = time.perf_counter()
        status, _ = server.call("GET", path, None, conn)
        times.append(time.perf_counter() - started)
        assert status == 200, status
    conn.close()
    return times, rows


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 tasks, fewer requests")
    parser.add_argument("--tasks", type=int, default=0, help="tasks in the store")
    args = parser.parse_args()
    total = args.tasks or (20_000 if args.quick else 100_000)
    count = 50 if args.quick else 200
    deep = total // 10  # cursors are seq numbers: 90% of the way down, newest first

    pages = [
        ("first page (limit 100)", "tasks"),
        ("deep cursor page", f"tasks?cursor={deep}"),
        ("status=failed, first page", "tasks?status=failed"),
        ("status=failed, deep page", f"tasks?status=failed&cursor={deep}"),
        ("status=completed&status=failed", "tasks?status=completed&status=failed"),
        ("tag=even, first page", "tasks?tag=even"),
        ("tag=even, deep page", f"tasks?tag=even&cursor={deep}"),
        ("first page, limit 1000", "tasks?limit=1000"),
        ("reference: /api/status", "api/status"),
    ]
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="jt-bench-") as tmp:
        base = Path(tmp)
        started = time.perf_counter()
        seed_finished_tasks(base / "tasks.db", total)
        seeded = time.perf_counter() - started
        with running(base / "server", db_path=str(base / "tasks.db"), max_workers=1) as server:
            for name, path in pages:
                times, n = timings(server, path, count)
                rows.append(
                    (
                        name,
                        f"{statistics.median(times) * 1000:.2f}",
                        f"{p99(times) * 1000:.2f}",
                        str(n) if path != "api/status" else "",
                    )
                )

    header = ("page", "p50 ms", "p99 ms", "rows")
    widths = [max(len(r[i]) for r in [*rows, header]) for i in range(4)]
    print(f"{total:,} finished tasks (seeded in {seeded:.1f} s); {count} requests per figure\n")
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print(f"\n{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
