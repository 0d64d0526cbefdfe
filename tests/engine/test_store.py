"""The SQLite store on a real file: schema, compare-and-set transitions, paging, cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from jupyter_tasks.errors import InvalidParameters, InvalidTransition, StoreUnavailable
from jupyter_tasks.models import ALLOWED_TRANSITIONS, Task, TaskRequest, TaskStatus, new_task_id
from jupyter_tasks.store import _MIGRATIONS, SCHEMA_VERSION, Store, StoredResult

OWNER = "o" * 32


def request(**kw: object) -> TaskRequest:
    base: dict[str, object] = {"task_type": "python", "description": "t"}
    base.update(kw)
    return TaskRequest.model_validate(base)


async def open_store(path: Path, **kw: str) -> Store:
    store = Store(path / "tasks.db", **kw)
    await store.open()
    return store


async def insert(store: Store, n: int = 1, **kw: object) -> list[str]:
    ids = [new_task_id() for _ in range(n)]
    await store.insert([(i, request(**kw)) for i in ids], OWNER, None, time.time())
    return ids


async def test_schema_is_versioned_and_survives_reopen(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    (task_id,) = await insert(store)
    await store.close()

    store = await open_store(tmp_path)
    task = await store.get(task_id)
    assert task is not None and task.status == TaskStatus.CREATED
    version = await store.run_sync(
        lambda db: db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    )
    assert int(version) == SCHEMA_VERSION
    mode = await store.run_sync(lambda db: db.execute("PRAGMA journal_mode").fetchone()[0])
    assert mode == "wal"
    await store.close()


async def test_a_version_1_database_upgrades_and_keeps_its_tasks(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "tasks.db", isolation_level=None)
    db.executescript(_MIGRATIONS[0])
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.execute(
        "INSERT INTO tasks (task_id, task_type, description, parameters, priority, max_retries,"
        " tags, status, group_id, created_at, owner) VALUES"
        " (?, 'python', 'old', '{}', 1, 0, '[]', 'created', 'g', 1.0, 'o')",
        ("a" * 32,),
    )
    db.execute(
        "INSERT INTO results VALUES (?, ?, 3, x'616263', NULL)",
        ("a" * 32, '{"type": "int", "repr": "7", "value": 7}'),
    )
    db.close()
    store = await open_store(tmp_path)
    task = await store.get("a" * 32)
    assert task is not None and (task.description, task.group) == ("old", "g")
    stored = await store.get_result("a" * 32)
    assert stored is not None and (stored.preview["value"], stored.inline) == (7, b"abc")
    assert [t.task_id for t in (await store.page(group="g"))[0]] == ["a" * 32]
    indexes = await store.run_sync(
        lambda db: {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    )
    assert "tasks_owner" not in indexes and "tasks_group" in indexes
    await store.close()


async def test_calls_during_and_after_close_fail_instead_of_hanging(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    (task_id,) = await insert(store)
    closing = asyncio.ensure_future(store.close())
    during = []
    while not closing.done():  # a call at every turn of the loop while it closes
        during.append(asyncio.ensure_future(store.get(task_id)))
        await asyncio.wait({closing}, timeout=0.001)
    for call in during:  # each ends: read before the close, or refused; none hangs
        with contextlib.suppress(StoreUnavailable):
            await asyncio.wait_for(call, 60)
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(store.get(task_id), 60)
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(insert(store), 60)


async def test_a_newer_schema_is_refused_not_damaged(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store.close()
    db = sqlite3.connect(tmp_path / "tasks.db")
    db.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreUnavailable, match="newer"):
        await open_store(tmp_path)


async def test_synchronous_full_is_applied(tmp_path: Path) -> None:
    store = await open_store(tmp_path, synchronous="FULL")
    level = await store.run_sync(lambda db: db.execute("PRAGMA synchronous").fetchone()[0])
    assert level == 2  # FULL
    await store.close()
    with pytest.raises(ValueError, match="sqlite_synchronous"):
        Store(tmp_path / "x.db", synchronous="SOMETIMES")


@pytest.mark.parametrize("expected", list(TaskStatus))
@pytest.mark.parametrize("new", list(TaskStatus))
async def test_every_transition_is_allowed_or_refused(
    tmp_path: Path, expected: TaskStatus, new: TaskStatus
) -> None:
    store = await open_store(tmp_path)
    (task_id,) = await insert(store)
    # Walk the task to ``expected`` through allowed steps.
    path = {
        TaskStatus.CREATED: [],
        TaskStatus.RUNNING: [TaskStatus.RUNNING],
        TaskStatus.COMPLETED: [TaskStatus.RUNNING, TaskStatus.COMPLETED],
        TaskStatus.FAILED: [TaskStatus.RUNNING, TaskStatus.FAILED],
        TaskStatus.CANCELLED: [TaskStatus.CANCELLED],
    }[expected]
    current = TaskStatus.CREATED
    for step in path:
        assert await store.transition(task_id, current, step) is not None
        current = step
    if new in ALLOWED_TRANSITIONS[expected]:
        task = await store.transition(task_id, expected, new)
        assert task is not None and task.status == new
        # Compare-and-set: the same transition a second time does not happen.
        if new != expected:
            assert await store.transition(task_id, expected, new) is None
    else:
        with pytest.raises(InvalidTransition):
            await store.transition(task_id, expected, new)
        task = await store.get(task_id)
        assert task is not None and task.status == expected
    await store.close()


async def test_paging_newest_first_with_filters(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    ids = await insert(store, 25, tags=["sweep"])
    other = await insert(store, 5, task_type="shell")
    page, cursor = await store.page(limit=10)
    assert [t.task_id for t in page] == list(reversed(other)) + list(reversed(ids))[:5]
    seen = [t.task_id for t in page]
    while cursor is not None:
        page, cursor = await store.page(limit=10, cursor=cursor)
        seen += [t.task_id for t in page]
    assert sorted(seen) == sorted(ids + other) and len(seen) == 30

    tagged, _ = await store.page(tag="sweep", limit=100)
    assert {t.task_id for t in tagged} == set(ids)
    shells, _ = await store.page(task_type="shell", limit=100)
    assert {t.task_id for t in shells} == set(other)
    await store.transition(ids[0], TaskStatus.CREATED, TaskStatus.CANCELLED)
    cancelled, nxt = await store.page(statuses=[TaskStatus.CANCELLED], limit=100)
    assert [t.task_id for t in cancelled] == [ids[0]] and nxt is None
    with pytest.raises(InvalidParameters, match="cursor"):
        await store.page(cursor="abc")
    await store.close()


async def test_listing_uses_indexes(tmp_path: Path) -> None:
    store = await open_store(tmp_path)

    def plan(sql: str, arg: str) -> str:
        rows = store.db.execute("EXPLAIN QUERY PLAN " + sql, (arg,)).fetchall()
        return " | ".join(r[-1] for r in rows)

    by_status = await store.run_sync(
        lambda db: plan("SELECT * FROM tasks WHERE status = ? ORDER BY seq DESC LIMIT 100", "x")
    )
    assert "tasks_status" in by_status and "TEMP B-TREE" not in by_status
    by_group = await store.run_sync(
        lambda db: plan("SELECT * FROM tasks WHERE group_id = ? ORDER BY seq DESC LIMIT 100", "g")
    )
    assert "tasks_group" in by_group and "TEMP B-TREE" not in by_group
    await store.close()


async def test_results_delete_and_purge_remove_files(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    a, b, c = await insert(store, 3)
    for task_id in (a, b, c):
        await store.transition(task_id, TaskStatus.CREATED, TaskStatus.RUNNING)
    result_file = Path(store.result_path(a))
    result_file.write_bytes(b"pickle")
    Path(store.log_path(a)).write_text("log")
    done = await store.transition(
        a,
        TaskStatus.RUNNING,
        TaskStatus.COMPLETED,
        {"finished_at": time.time() - 100},
        result=StoredResult({"type": "int", "repr": "1", "value": 1}, 6, None, str(result_file)),
    )
    assert done is not None and done.finished_at is not None
    stored = await store.get_result(a)
    assert stored is not None and stored.preview["value"] == 1 and stored.path == str(result_file)

    assert await store.delete(b) is None  # still running: refused
    await store.transition(b, TaskStatus.RUNNING, TaskStatus.FAILED, {"finished_at": time.time()})
    files = await store.delete(b)
    assert files is not None and await store.get(b) is None

    ids, files = await store.purge(time.time() - 10)
    assert ids == [a]
    assert str(result_file) in files and store.log_path(a) in files
    assert await store.get(a) is None and await store.get_result(a) is None
    assert await store.get(c) is not None
    await store.close()


async def test_adopting_a_dead_owner_settles_its_tasks(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    dead = "d" * 32
    ids = [new_task_id() for _ in range(3)]
    await store.insert([(ids[0], request()), (ids[1], request(max_retries=1))], dead, None, 0)
    await store.insert([(ids[2], request())], dead, None, 0)
    await store.transition(ids[0], TaskStatus.CREATED, TaskStatus.RUNNING, bump_attempt=True)
    await store.transition(ids[1], TaskStatus.CREATED, TaskStatus.RUNNING, bump_attempt=True)

    changed = await store.adopt(OWNER, [dead], time.time())
    by_id = {t.task_id: t for t in changed}
    assert by_id[ids[0]].status == TaskStatus.FAILED
    assert by_id[ids[0]].error is not None and by_id[ids[0]].error.type == "ServerRestart"
    assert by_id[ids[1]].status == TaskStatus.CREATED  # it had a retry left
    queued = {r.task_id for r in await store.queued(OWNER)}
    assert queued == {ids[1], ids[2]}
    await store.close()


async def test_task_json_matches_the_models_own_serialisation(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    (task_id,) = await insert(store, tags=["a"], parameters={"x": [1, {"y": None}]})
    await store.transition(task_id, TaskStatus.CREATED, TaskStatus.RUNNING, {"started_at": 1.5})
    error = {"type": "ValueError", "message": "m", "traceback": "tb"}
    task = await store.transition(
        task_id, TaskStatus.RUNNING, TaskStatus.FAILED, {"finished_at": 2.25, "error": error}
    )
    assert task is not None
    assert task.to_json() == task.model_dump(mode="json")
    assert task.to_json()["started_at"] == "1970-01-01T00:00:01.500000Z"
    await store.close()


def test_task_ids_are_uuid4s_in_32_hex_characters() -> None:
    ids = {new_task_id() for _ in range(1000)}
    assert len(ids) == 1000
    for task_id in ids:
        parsed = uuid.UUID(task_id)
        assert (parsed.hex, parsed.version, parsed.variant) == (task_id, 4, uuid.RFC_4122)


async def test_inserted_tasks_read_back_the_same(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    pairs = [(new_task_id(), request(tags=["x"], priority=3, max_retries=2)) for _ in range(3)]
    made = await store.insert(pairs, OWNER, "g" * 32, 1234.5)
    for task in made:
        again = await store.get(task.task_id)
        assert again is not None and again.to_json() == task.to_json()
        # Records are assembled unvalidated: each still has every field, and is the one
        # validation would make.
        for record in (task, again):
            assert set(record.__dict__) == set(Task.model_fields)
            assert record == Task.model_validate(record.model_dump())
    running = await store.transition(
        made[0].task_id,
        TaskStatus.CREATED,
        TaskStatus.RUNNING,
        {"started_at": 1240.0},
        bump_attempt=True,
        current=made[0],
    )
    assert running is not None and set(running.__dict__) == set(Task.model_fields)
    assert running == Task.model_validate(
        {**made[0].model_dump(), "status": "running", "attempt": 1, "started_at": 1240.0}
    )
    assert made[0].status == TaskStatus.CREATED  # the record it was derived from is unchanged
    # Records share their set of field names: a copy with more (pydantic's own way, which
    # copies the set first) leaves the others' as they were.
    changed = made[1].model_copy(update={"message": "changed", "not_a_field": 1})
    assert changed.model_fields_set == {*Task.model_fields, "not_a_field"}
    assert made[1].message is None and made[2].model_fields_set == set(Task.model_fields)
    await store.close()


async def test_a_batch_transition_changes_only_the_tasks_still_as_expected(
    tmp_path: Path,
) -> None:
    store = await open_store(tmp_path)
    made = await store.insert(
        [(new_task_id(), request(tags=["t"])) for _ in range(4)], OWNER, None, time.time()
    )
    first = made[0].task_id
    await store.transition(first, TaskStatus.CREATED, TaskStatus.RUNNING, bump_attempt=True)
    fields = {"started_at": 5.0, "finished_at": None, "owner": OWNER}
    started = await store.transition_many(
        [(task, fields, None) for task in made],
        TaskStatus.CREATED,
        TaskStatus.RUNNING,
        bump_attempt=True,
    )
    assert started[0] is None  # it had gone on already: compare-and-set
    untouched = await store.get(first)
    assert untouched is not None and (untouched.started_at, untouched.attempt) == (None, 1)
    running = [t for t in started if t is not None]
    assert len(running) == 3
    last = running[-1].task_id
    await store.transition(last, TaskStatus.RUNNING, TaskStatus.FAILED, {"finished_at": 6.0})

    def result(value: int) -> StoredResult:
        return StoredResult({"type": "int", "repr": str(value), "value": value}, 1, b"x", None)

    ended = await store.transition_many(
        [(t, {"finished_at": 7.0 + i, "progress": 1.0}, result(i)) for i, t in enumerate(running)],
        TaskStatus.RUNNING,
        TaskStatus.COMPLETED,
    )
    assert [t is None for t in ended] == [False, False, True]
    for i, task in enumerate(ended[:2]):
        assert task is not None and task.attempt == 1
        again = await store.get(task.task_id)  # what it reports is what was written
        assert again is not None and again.to_json() == task.to_json()
        stored = await store.get_result(task.task_id)
        assert stored is not None and stored.preview["value"] == i
    assert await store.get_result(last) is None  # failed meanwhile: no result kept
    await store.close()


async def test_a_large_batch_is_inserted_whole_with_its_tags(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    pairs = [(new_task_id(), request(tags=[f"n{i % 3}", "all"])) for i in range(250)]
    made = await store.insert(pairs, OWNER, None, time.time())
    assert [t.task_id for t in made] == [task_id for task_id, _ in pairs]
    tagged, cursor = await store.page(tag="all", limit=500)
    assert cursor is None and {t.task_id for t in tagged} == {t for t, _ in pairs}
    ones, _ = await store.page(tag="n1", limit=500)
    assert {t.task_id for t in ones} == {t for i, (t, _) in enumerate(pairs) if i % 3 == 1}
    await store.close()


@pytest.mark.parametrize("returning", [True, False], ids=["returning", "row-by-row"])
async def test_a_large_batch_goes_through_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, returning: bool
) -> None:
    """More rows than one statement may bind: every one is started, ended with its result
    and its log trimmed, and put back; also where SQLite has no ``RETURNING`` (< 3.35)."""
    import jupyter_tasks.store as store_module

    monkeypatch.setattr(store_module, "_HAS_RETURNING", returning and store_module._HAS_RETURNING)
    store = await open_store(tmp_path)
    if hasattr(sqlite3.Connection, "setlimit"):  # (3.11+) the limit of builds before 3.32
        await store.run_sync(lambda db: db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999))
    made = await store.insert(
        [(new_task_id(), request(tags=["big"])) for _ in range(400)], OWNER, None, time.time()
    )
    assert len((await store.page(tag="big", limit=500))[0]) == 400
    fields = {"started_at": 5.0, "finished_at": None, "owner": OWNER}
    running = await store.transition_many(
        [(t, fields, None) for t in made], TaskStatus.CREATED, TaskStatus.RUNNING, True
    )
    assert all(t is not None and t.attempt == 1 for t in running)
    chatty = made[123].task_id
    Path(store.log_path(chatty)).write_bytes(b"x" * 100 + b"the tail")
    ended = await store.transition_many(
        [
            (t, {"finished_at": 6.0, "progress": 1.0}, StoredResult({"n": i}, 1, b"p", None))
            for i, t in enumerate(running)
            if t is not None
        ],
        TaskStatus.RUNNING,
        TaskStatus.COMPLETED,
        log_cap=8,
    )
    assert all(t is not None and t.status == TaskStatus.COMPLETED for t in ended)
    for i in (0, 332, 333, 399):  # either side of where the statements were split
        stored = await store.get_result(made[i].task_id)
        assert stored is not None and stored.preview == {"n": i}
    assert Path(store.log_path(chatty)).read_bytes() == b"the tail"

    # A stopping engine puts chunk tasks that never ran back: attempt set, not bumped.
    others = await store.insert(
        [(new_task_id(), request()) for _ in range(3)], OWNER, None, time.time()
    )
    back = await store.transition_many(
        [(t, fields, None) for t in others], TaskStatus.CREATED, TaskStatus.RUNNING, True
    )
    again = await store.transition_many(
        [(t, {"started_at": None, "attempt": 0}, None) for t in back if t is not None],
        TaskStatus.RUNNING,
        TaskStatus.CREATED,
    )
    for task in again:
        assert task is not None
        read = await store.get(task.task_id)
        assert read is not None and (read.status, read.attempt, read.started_at) == (
            TaskStatus.CREATED,
            0,
            None,
        )
    await store.close()
