"""100,000 finished tasks in the store: pages come from indexes, the server's memory stays flat.

The tasks are written straight into a store's real schema (``seed_finished_tasks``,
one SQL statement), then read the way the server reads them: ``Store.page``, the
query behind ``GET /tasks``, and ``GET /tasks`` itself on a ``jupyter server``
subprocess started on that database.

Whether a page is served from an index is checked twice, on the statements the
store actually issues: ``EXPLAIN QUERY PLAN`` shows no full scan of ``tasks``,
and SQLite's own instruction counter (``set_progress_handler``) shows the work
of a page does not grow with the table (a scan or sort of every match costs
thousands of times more than reading one page of rows).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from support import PeakRSS, ServerProcess, seed_finished_tasks

from jupyter_tasks.models import TaskStatus
from jupyter_tasks.store import Store

COUNT = 100_000
MiB = 1 << 20
LIMIT = 100
#: Deep cursor: 90% of the way through, newest first.
DEEP = str(COUNT // 10)
#: SQLite VM instructions per row of a page: reading a page costs about 25 to 80 here; a scan
#: or a sort of every match (50,000 rows and more at this size) costs thousands of times more.
STEPS_PER_ROW = 200
GROUP = f"{(COUNT // 2) // 1000:032x}"

COMPLETED, FAILED = TaskStatus.COMPLETED, TaskStatus.FAILED
PAGES: dict[str, Any] = {
    "first page": {},
    "deep page": {"cursor": DEEP},
    "status": {"statuses": [COMPLETED]},
    "status, deep": {"statuses": [COMPLETED], "cursor": DEEP},
    "two statuses": {"statuses": [COMPLETED, FAILED]},
    "two statuses, deep": {"statuses": [COMPLETED, FAILED], "cursor": DEEP},
    "task type": {"task_type": "shell"},
    "task type, deep": {"task_type": "shell", "cursor": DEEP},
    "status and task type": {"statuses": [FAILED], "task_type": "shell"},
    "status and task type, deep": {"statuses": [FAILED], "task_type": "shell", "cursor": DEEP},
    "group": {"group": GROUP},
    "tag": {"tag": "even"},
    "tag, deep": {"tag": "even", "cursor": DEEP},
}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("scale") / "tasks.db"
    seed_finished_tasks(db, COUNT)
    return db


def full_scans(plan: list[str], sql: str) -> list[str]:
    """Plan lines that read the whole ``tasks`` table.

    A bare ``SCAN tasks`` walks the table in rowid (= ``seq``) order; it is a page, not a
    scan, only when nothing is filtered and nothing is sorted, so the LIMIT stops it.
    """
    unfiltered = " WHERE " not in sql and not any("TEMP B-TREE" in line for line in plan)
    return [line for line in plan if line == "SCAN tasks" and not unfiltered]


@pytest.mark.parametrize("query", PAGES.values(), ids=PAGES.keys())
async def test_a_page_is_read_from_an_index(seeded: Path, query: dict[str, Any]) -> None:
    store = Store(seeded)
    await store.open()
    statements: list[str] = []
    steps = [0]

    def count_steps() -> int:
        steps[0] += 1
        return 0  # go on

    def trace(db: sqlite3.Connection) -> None:
        db.set_trace_callback(statements.append)  # the SQL as run, with its values
        db.set_progress_handler(count_steps, 1)  # every VM instruction

    def untrace(db: sqlite3.Connection) -> None:
        db.set_trace_callback(None)
        db.set_progress_handler(None, 0)

    try:
        await store.run_sync(trace)
        tasks, cursor = await store.page(limit=LIMIT, **query)
        await store.run_sync(untrace)
        selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        assert selects, statements
        for sql in selects:
            rows = await store.run_sync(
                lambda db, sql=sql: db.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
            )
            plan = [row[3] for row in rows]
            assert not full_scans(plan, sql), (plan, sql)
    finally:
        await store.close()
    assert len(tasks) == LIMIT and cursor is not None  # every query here has more than a page
    print(f"\n{query}: {steps[0]:,} VM instructions for {LIMIT} rows")
    assert steps[0] <= STEPS_PER_ROW * LIMIT, f"{steps[0]:,} VM instructions"


def test_paging_through_all_tasks_leaves_server_memory_flat(
    seeded: Path, server_process: Callable[..., ServerProcess]
) -> None:
    server = server_process({"db_path": str(seeded), "max_workers": 1})

    def page(cursor: str, **params: Any) -> dict[str, Any]:
        response = server.request(
            "GET", "tasks", params={"limit": 1000, "cursor": cursor, **params}
        )
        assert response.status_code == 200, response.text[:300]
        body: dict[str, Any] = response.json()
        return body

    for _ in range(3):  # first-use imports and caches
        page("")
        page("", status="completed")
    process = psutil.Process(server.pid)
    before = process.memory_info().rss
    seen: set[str] = set()
    with PeakRSS(server.pid) as rss:
        cursor: str | None = ""
        while cursor is not None:
            body = page(cursor)
            seen.update(t["task_id"] for t in body["tasks"])
            cursor = body["next"]
        # And once more, filtered by status, to the end.
        failed = 0
        cursor = ""
        while cursor is not None:
            body = page(cursor, status="failed")
            failed += len(body["tasks"])
            cursor = body["next"]
    after = process.memory_info().rss
    assert len(seen) == COUNT
    assert failed == COUNT // 10
    growth, peak = (after - before) / MiB, (rss.peak - before) / MiB
    print(
        f"\nserver RSS {before / MiB:.1f} MiB before paging through {COUNT:,} tasks (and the"
        f" failed ones again), {after / MiB:.1f} MiB after (+{growth:.1f}), peak +{peak:.1f} MiB"
    )
    # Holding the records in memory would take hundreds of MiB; one page of 1,000 a few.
    assert peak < 40, f"server RSS peaked {peak:.1f} MiB above where paging started"
    assert growth < 20, f"server RSS grew {growth:.1f} MiB while paging"


def test_the_store_opens_100k_tasks_without_reading_them(seeded: Path) -> None:
    """Opening the store (schema check, crash recovery) touches no finished task."""

    async def open_and_count() -> int:
        store = Store(seeded)
        steps = [0]

        def count_steps() -> int:
            steps[0] += 1
            return 0

        await store.open()
        try:
            await store.run_sync(lambda db: db.set_progress_handler(count_steps, 1))
            await store.adopt("o" * 32, [], 0.0)
            await store.queued("o" * 32)
            await store.unfinished(None, None)
        finally:
            await store.close()
        return steps[0]

    steps = asyncio.run(open_and_count())
    print(f"\nrecovery and snapshot queries: {steps:,} VM instructions at {COUNT:,} tasks")
    assert steps <= STEPS_PER_ROW * LIMIT
