"""SQLite persistence: tasks, results, owners' leases; schema versioned and migrated on open.

One thread owns the connection; every public method is a coroutine that hops
onto that thread, so the event loop never waits on the disk.  Status changes
are compare-and-set (``UPDATE ... WHERE status = ?``): a transition happens
once or not at all, whichever orchestrator tries it.

Durability: WAL with ``synchronous=NORMAL`` (the default) loses nothing when a
process crashes, only the last commits on power loss or an OS crash;
``synchronous=FULL`` survives those too, at about 1/40 of the commit rate.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from .errors import InvalidParameters, InvalidTransition, StoreUnavailable
from .jsonout import dumps_text
from .models import ALLOWED_TRANSITIONS, FINISHED, Task, TaskError, TaskRequest, TaskStatus

T = TypeVar("T")
log = logging.getLogger("jupyter_tasks")

SCHEMA_VERSION = 3

#: Commits between two checkpoints, each run on a connection and thread of its own:
#: SQLite's automatic checkpoint runs inside a commit and stalled it (16-19 ms at p99).
CHECKPOINT_EVERY = 200
#: Should those fall behind, SQLite checkpoints inside a commit past this many pages.
AUTOCHECKPOINT_PAGES = 20_000
#: Bytes the WAL file is cut back to once checkpointed.
WAL_SIZE_LIMIT = 64 << 20

#: ``UPDATE ... RETURNING`` came with SQLite 3.35; older builds read the row back.
_HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)

#: Values bound per statement: SQLite's limit before 3.32 was 999.
MAX_VARIABLES = 999

_COLUMNS = (
    "seq, task_id, task_type, description, parameters, priority, timeout_seconds, max_retries,"
    " tags, status, group_id, attempt, created_at, started_at, finished_at, progress, message,"
    " error"
)

#: The columns a new task's row is written with, in ``insert``'s order.
_INSERT_COLUMNS = (
    "task_id, task_type, description, parameters, priority, timeout_seconds, max_retries,"
    " tags, status, group_id, created_at, owner, blob_id, attempt, started_at"
)

#: The same columns named through ``tasks`` (for joins).
_TASK_COLUMNS = ", ".join(f"tasks.{name.strip()}" for name in _COLUMNS.split(","))

# Each entry migrates from version N-1 to N; append, never edit, so old databases upgrade.
_MIGRATIONS: list[str] = [
    """
    CREATE TABLE tasks (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL UNIQUE,
        task_type TEXT NOT NULL,
        description TEXT NOT NULL,
        parameters TEXT NOT NULL,
        priority INTEGER NOT NULL,
        timeout_seconds INTEGER,
        max_retries INTEGER NOT NULL,
        tags TEXT NOT NULL,
        status TEXT NOT NULL,
        group_id TEXT,
        attempt INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        progress REAL,
        message TEXT,
        error TEXT,
        owner TEXT,
        not_before REAL NOT NULL DEFAULT 0,
        blob_id TEXT
    );
    CREATE INDEX tasks_status ON tasks(status, seq);
    CREATE INDEX tasks_group ON tasks(group_id, seq);
    CREATE INDEX tasks_type ON tasks(task_type, seq);
    CREATE INDEX tasks_owner ON tasks(owner, status);
    CREATE INDEX tasks_finished ON tasks(finished_at) WHERE finished_at IS NOT NULL;
    CREATE INDEX tasks_blob ON tasks(blob_id) WHERE blob_id IS NOT NULL;
    CREATE TABLE task_tags (
        tag TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (tag, seq)
    ) WITHOUT ROWID;
    CREATE TABLE results (
        task_id TEXT PRIMARY KEY,
        preview TEXT NOT NULL,
        size INTEGER NOT NULL,
        data BLOB,
        path TEXT
    );
    CREATE TABLE owners (
        owner_id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started REAL NOT NULL,
        heartbeat REAL NOT NULL
    );
    """,
    # 2: fewer index pages written per commit.  Owners' queries filter the few
    # unfinished tasks of a status (``tasks_status``); single submits carry no group.
    """
    DROP INDEX tasks_owner;
    DROP INDEX tasks_group;
    CREATE INDEX tasks_group ON tasks(group_id, seq) WHERE group_id IS NOT NULL;
    """,
    # 3: results keyed by their task's ``seq``.  Keyed by the random ``task_id``, each
    # result landed on its own page of the key's index, so a commit of N completions
    # wrote N index pages; in ``seq`` order they share a page or two.  (A result whose
    # task is gone cannot be keyed; there is none: a task and its result go together.)
    """
    CREATE TABLE results_by_seq (
        seq INTEGER PRIMARY KEY,
        preview TEXT NOT NULL,
        size INTEGER NOT NULL,
        data BLOB,
        path TEXT
    );
    INSERT INTO results_by_seq
        SELECT tasks.seq, results.preview, results.size, results.data, results.path
        FROM results JOIN tasks ON tasks.task_id = results.task_id;
    DROP TABLE results;
    ALTER TABLE results_by_seq RENAME TO results;
    """,
]


@dataclass(frozen=True, slots=True)
class StoredResult:
    """A result row: JSON preview, size, and the pickle inline or as a file path."""

    preview: dict[str, Any]
    size: int
    inline: bytes | None
    path: str | None

    def columns(self) -> tuple[str, int, bytes | None, str | None]:
        """The ``results`` columns after ``seq``, in order."""
        # (json, not orjson: a NaN in a preview must stay NaN, never become null)
        return json.dumps(self.preview), self.size, self.inline, self.path


@dataclass(frozen=True)
class Owner:
    """An orchestrator's lease on the tasks it runs."""

    owner_id: str
    host: str
    pid: int
    started: float
    heartbeat: float


@dataclass(frozen=True)
class QueuedRow:
    """What the dispatcher needs to order a queued task."""

    priority: int
    seq: int
    task_id: str
    not_before: float


#: A write waiting for the store's thread: the function, its future, its ``on_durable``.
_Write = tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any], Callable[[], None] | None]


def _settle_futures(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, timezone.utc)


def _ts_required(value: float) -> datetime:
    return datetime.fromtimestamp(value, timezone.utc)


def _row_to_task(row: sqlite3.Row) -> Task:
    error = json.loads(row["error"]) if row["error"] else None
    # Rows were validated on the way in; constructing without re-validation keeps reads cheap.
    return Task.assemble(
        {
            "task_type": row["task_type"],
            "description": row["description"],
            "parameters": json.loads(row["parameters"]),
            "priority": row["priority"],
            "timeout_seconds": row["timeout_seconds"],
            "max_retries": row["max_retries"],
            "tags": json.loads(row["tags"]),
            "task_id": row["task_id"],
            "status": TaskStatus(row["status"]),
            "group": row["group_id"],
            "attempt": row["attempt"],
            "created_at": _ts_required(row["created_at"]),
            "started_at": _ts(row["started_at"]),
            "finished_at": _ts(row["finished_at"]),
            "progress": row["progress"],
            "message": row["message"],
            "error": TaskError.model_construct(**error) if error else None,
        }
    )


def _check_transition(expected: TaskStatus, new: TaskStatus) -> None:
    if new not in ALLOWED_TRANSITIONS[expected]:
        raise InvalidTransition(f"a task cannot go from {expected.value} to {new.value}")


def _column_values(fields: dict[str, Any]) -> dict[str, Any]:
    """A transition's fields as column values: errors as JSON, times as timestamps."""
    values = dict(fields)
    if values.get("error") is not None:
        values["error"] = json.dumps(values["error"])
    for key in ("started_at", "finished_at"):
        if isinstance(values.get(key), datetime):
            values[key] = values[key].timestamp()
    return values


def _same_keys(fields: Iterable[dict[str, Any]]) -> bool:
    """Whether every transition sets the same columns (so one statement can set them)."""
    keys = None
    for item in fields:
        if keys is None:
            keys = item.keys()
        elif item.keys() != keys:
            return False
    return True


def _parts(rows: Sequence[T], width: int, reserved: int = 0) -> Iterator[Sequence[T]]:
    """``rows`` in slices whose statements bind at most ``MAX_VARIABLES`` values: ``width``
    a row, and ``reserved`` more for the statement itself."""
    step = max(1, (MAX_VARIABLES - reserved) // width)
    for start in range(0, len(rows), step):
        yield rows[start : start + step]


def _derive(current: Task, new: TaskStatus, fields: dict[str, Any], bump: bool) -> Task:
    """``current`` after a transition to ``new`` that set ``fields`` (column names)."""
    update: dict[str, Any] = {"status": new}
    for key in ("started_at", "finished_at"):
        if key in fields:
            value = fields[key]
            update[key] = _ts(value) if not isinstance(value, datetime) else value
    for key in ("progress", "message", "attempt"):
        if key in fields:
            update[key] = fields[key]
    if "error" in fields:
        error = fields["error"]
        update["error"] = None if error is None else TaskError.model_construct(**error)
    if bump:
        update["attempt"] = current.attempt + 1
    return current.evolve(**update)


class Store:
    """The SQLite file and the files beside it (logs, large results, blobs)."""

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        synchronous: str = "NORMAL",
        busy_timeout: float = 30.0,
    ) -> None:
        self.db_path = Path(db_path)
        self.files_dir = self.db_path.with_name(self.db_path.stem + "-files")
        self._logs_dir = os.path.join(self.files_dir, "logs", "")
        self._results_dir = os.path.join(self.files_dir, "results", "")
        self._blob_dir = os.fspath(self.files_dir / "blobs")
        self.synchronous = synchronous.upper()
        if self.synchronous not in {"NORMAL", "FULL", "EXTRA", "OFF"}:
            raise ValueError(f"sqlite_synchronous must be NORMAL or FULL, not {synchronous!r}")
        self.busy_timeout = busy_timeout
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._pending: list[_Write] = []
        self._flush_scheduled = False
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="jupyter-tasks-checkpoint")
        self._checkpoint_db: sqlite3.Connection | None = None
        self._since_checkpoint = 0
        self._checkpointing = False

    # -- plumbing ---------------------------------------------------------------------------

    def _submit(self, job: Callable[[], None]) -> None:
        """Hand ``job`` to the store's thread (started on first use; it runs jobs in order)."""
        if self._closing:
            raise StoreUnavailable("the task store is closed")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._serve, name="jupyter-tasks-store", daemon=True
            )
            self._thread.start()
        self._jobs.put(job)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except BaseException:  # a job settles its own future; this is only a last resort
                log.exception("jupyter-tasks: a store job failed")

    async def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the store's thread (reads, and work outside a transaction)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            outcome: list[tuple[asyncio.Future[Any], Any, BaseException | None]]
            try:
                outcome = [(future, fn(), None)]
            except BaseException as exc:
                outcome = [(future, None, exc)]
            loop.call_soon_threadsafe(_settle_futures, outcome)

        self._submit(job)
        return await future

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable("the task store is not open")
        return self._db

    async def _commit(
        self,
        fn: Callable[[sqlite3.Connection], T],
        on_durable: Callable[[], None] | None = None,
    ) -> T:
        """Run ``fn`` in a transaction on the store's thread (see ``_queue``)."""
        return await self._queue(fn, on_durable)

    def _queue(
        self,
        fn: Callable[[sqlite3.Connection], T],
        on_durable: Callable[[], None] | None = None,
    ) -> asyncio.Future[T]:
        """Queue ``fn`` for a transaction on the store's thread now; its future settles after.

        Writes that arrive while one is in flight share the next transaction (one
        commit, one thread hop); each runs in its own savepoint, so one that raises
        rolls back alone.  A commit that fails fails every write in it.  Once ``fn``'s
        write is committed, ``on_durable`` is called on the store's thread, before the
        event loop hears of it.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._closing:
                raise StoreUnavailable("the task store is closed")
            self._pending.append((fn, future, on_durable))
            schedule = not self._flush_scheduled
            self._flush_scheduled = True
        if schedule:
            self._submit(lambda: self._flush(loop))
        return future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            self._flush_scheduled = False
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            self._write(lambda db: self._run_batch(db, batch, outcomes))
        except BaseException as exc:
            outcomes = [(future, None, exc) for _, future, _ in batch]
        else:
            for (_, _, on_durable), (_, _, error) in zip(batch, outcomes, strict=True):
                if on_durable is not None and error is None:
                    try:
                        on_durable()
                    except Exception:
                        log.exception("jupyter-tasks: a commit's follow-up failed")
            self._since_checkpoint += 1
            if self._since_checkpoint >= CHECKPOINT_EVERY and not self._checkpointing:
                self._since_checkpoint, self._checkpointing = 0, True
                self._checkpointer.submit(self._checkpoint)
        loop.call_soon_threadsafe(_settle_futures, outcomes)

    @staticmethod
    def _run_batch(
        db: sqlite3.Connection,
        batch: list[_Write],
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]],
    ) -> None:
        if len(batch) == 1:
            # Alone, the transaction isolates it (``_write`` rolls back what raises and
            # ``_flush`` hands the error over): spare the two savepoint statements.
            fn, future, _ = batch[0]
            outcomes.append((future, fn(db), None))
            return
        for fn, future, _ in batch:
            db.execute("SAVEPOINT op")
            try:
                out = fn(db)
            except sqlite3.OperationalError as exc:
                db.execute("ROLLBACK TO op")
                err = StoreUnavailable(f"the task database cannot be written: {exc}")
                outcomes.append((future, None, err))
            except Exception as exc:
                db.execute("ROLLBACK TO op")
                outcomes.append((future, None, exc))
            else:
                outcomes.append((future, out, None))
            db.execute("RELEASE op")

    def _checkpoint(self) -> None:
        """Checkpoint thread: copy the WAL into the database without blocking writers."""
        try:
            if self._checkpoint_db is None:
                self._checkpoint_db = sqlite3.connect(
                    self.db_path,
                    timeout=self.busy_timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
            self._checkpoint_db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            pass  # a full or read-only disk: the commits' own checkpoint is the fallback
        finally:
            self._checkpointing = False

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one IMMEDIATE transaction; disk errors become ``StoreUnavailable``."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return out
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"the task database cannot be written: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise StoreUnavailable(f"the task database failed: {exc}") from exc

    def log_path(self, task_id: str) -> str:
        return f"{self._logs_dir}{task_id}.log"  # string joins: these run for every task

    def result_path(self, task_id: str) -> str:
        return f"{self._results_dir}{task_id}.pickle"

    @property
    def blob_dir(self) -> str:
        return self._blob_dir

    # -- open / close -----------------------------------------------------------------------

    async def open(self) -> None:
        """Create or upgrade the database; safe to call with other processes using it."""
        self._closing = False  # (again, after a close)
        await self._call(self._open)

    def _open(self) -> None:
        for sub in ("logs", "results", "blobs"):
            (self.files_dir / sub).mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            self.db_path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        db.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
        db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")  # a burst's WAL shrinks after
        self._db = db
        self._migrate()

    def _migrate(self) -> None:
        def migrate(db: sqlite3.Connection) -> None:
            db.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"{self.db_path} has schema version {version}, newer than this"
                    f" jupyter-tasks understands ({SCHEMA_VERSION}); upgrade jupyter-tasks"
                )
            for script in _MIGRATIONS[version:]:
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

        self._write(migrate)

    async def close(self) -> None:
        def close() -> None:
            self._checkpointer.shutdown(wait=True)
            if self._checkpoint_db is not None:
                self._checkpoint_db.close()
                self._checkpoint_db = None
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._call(close)
        with self._lock:
            self._closing = True  # from now on every call fails at once
        if self._thread is not None:
            self._jobs.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        while not self._jobs.empty():  # queued after the last one ran: they fail, not hang
            job = self._jobs.get_nowait()
            if job is not None:
                job()

    # -- owners (leases) --------------------------------------------------------------------

    async def register_owner(self, owner: Owner) -> None:
        await self._commit(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO owners VALUES (?, ?, ?, ?, ?)",
                (owner.owner_id, owner.host, owner.pid, owner.started, owner.heartbeat),
            )
        )

    async def heartbeat(self, owner_id: str, now: float) -> None:
        await self._commit(
            lambda db: db.execute(
                "UPDATE owners SET heartbeat = ? WHERE owner_id = ?", (now, owner_id)
            )
        )

    async def owners(self) -> list[Owner]:
        def read() -> list[Owner]:
            rows = self.db.execute("SELECT * FROM owners").fetchall()
            return [Owner(**dict(r)) for r in rows]

        return await self._call(read)

    async def adopt(self, owner_id: str, dead: Sequence[str], now: float) -> list[Task]:
        """Take over the tasks of dead owners in one transaction; return what changed.

        Their ``running`` tasks fail with ``ServerRestart`` (or go back to ``created``
        when retries are left); their ``created`` tasks become ours.  Tasks whose owner
        left no lease at all (a clean stop removes it) are adopted the same way.
        """

        def adopt(db: sqlite3.Connection) -> list[Task]:
            changed: list[str] = []
            orphans = db.execute(
                "SELECT DISTINCT owner FROM tasks WHERE status IN ('created', 'running')"
                " AND owner IS NOT NULL AND owner NOT IN (SELECT owner_id FROM owners)"
            ).fetchall()
            for old in [*dead, *(r[0] for r in orphans if r[0] not in dead)]:
                rows = db.execute(
                    "SELECT task_id, attempt, max_retries FROM tasks"
                    " WHERE owner = ? AND status = ?",
                    (old, TaskStatus.RUNNING.value),
                ).fetchall()
                for row in rows:
                    changed.append(row["task_id"])
                    self._recover_running(db, row, now)
                db.execute(
                    "UPDATE tasks SET owner = ? WHERE owner = ? AND status = ?",
                    (owner_id, old, TaskStatus.CREATED.value),
                )
                db.execute("DELETE FROM owners WHERE owner_id = ?", (old,))
            return self._fetch_many(db, changed)

        return await self._commit(adopt)

    @staticmethod
    def _recover_running(db: sqlite3.Connection, row: sqlite3.Row, now: float) -> None:
        error = json.dumps(
            {
                "type": "ServerRestart",
                "message": "the server stopped while the task was running",
                "traceback": None,
            }
        )
        if row["attempt"] <= row["max_retries"]:
            db.execute(
                "UPDATE tasks SET status = 'created', error = ?, message = ?, progress = NULL,"
                " not_before = ? WHERE task_id = ? AND status = 'running'",
                (error, "queued again after a server restart", now, row["task_id"]),
            )
        else:
            db.execute(
                "UPDATE tasks SET status = 'failed', error = ?, finished_at = ?"
                " WHERE task_id = ? AND status = 'running'",
                (error, now, row["task_id"]),
            )

    # -- tasks ------------------------------------------------------------------------------

    def insert(
        self,
        requests: Sequence[tuple[str, TaskRequest]],
        owner_id: str,
        group: str | None,
        now: float,
        start: bool = False,
        on_durable: Callable[[], None] | None = None,
    ) -> asyncio.Future[list[Task]]:
        """Insert ``(task_id, request)`` pairs in one transaction, queued at once: the
        future settles with their records once they are durable.

        With ``start`` the tasks also go ``created -> running`` (attempt 1) in that same
        transaction and the running records follow the created ones in the list: a task
        submitted to an idle engine needs one commit to start, not two.  ``on_durable``
        is called on the store's thread once they are committed (see ``_queue``).  The
        write goes on if whoever awaits the future is cancelled (shield it to keep the
        records).
        """

        def insert(db: sqlite3.Connection) -> list[Task]:
            # Started at once, a task is written running: one row write, not two.
            status, attempt, started = ("running", 1, now) if start else ("created", 0, None)
            rows = []
            for task_id, req in requests:
                blob = req.parameters.get("blob_id")
                rows.append(
                    (
                        task_id,
                        req.task_type,
                        req.description,
                        dumps_text(req.parameters),
                        req.priority,
                        req.timeout_seconds,
                        req.max_retries,
                        dumps_text(req.tags),
                        status,
                        group,
                        now,
                        owner_id,
                        blob if isinstance(blob, str) else None,
                        attempt,
                        started,
                    )
                )
            tagged = {task_id: req.tags for task_id, req in requests if req.tags}
            seqs = self._insert_rows(db, rows, bool(tagged))
            for task_id, tags in tagged.items():
                db.executemany(
                    "INSERT OR IGNORE INTO task_tags(tag, seq) VALUES (?, ?)",
                    [(tag, seqs[task_id]) for tag in tags],
                )
            created_at = _ts_required(now)
            created = [
                Task.assemble(
                    {
                        **req.__dict__,
                        "task_id": tid,
                        "status": TaskStatus.CREATED,
                        "group": group,
                        "attempt": 0,
                        "created_at": created_at,
                        "started_at": None,
                        "finished_at": None,
                        "progress": None,
                        "message": None,
                        "error": None,
                    }
                )
                for tid, req in requests
            ]
            if not start:
                return created
            fields = {"started_at": created_at}
            return created + [_derive(t, TaskStatus.RUNNING, fields, True) for t in created]

        return self._queue(insert, on_durable)

    @staticmethod
    def _insert_rows(
        db: sqlite3.Connection, rows: list[tuple[Any, ...]], want_seqs: bool
    ) -> dict[str, int]:
        """INSERT task rows, many per statement (see ``_apply_many``); with ``want_seqs``,
        the ``seq`` each got, by task id."""
        if not rows:
            return {}
        width = len(rows[0])
        mark = f"({', '.join('?' * width)})"
        sql = f"INSERT INTO tasks ({_INSERT_COLUMNS}) VALUES "
        seqs: dict[str, int] = {}
        if want_seqs and not _HAS_RETURNING:
            for row in rows:
                seqs[row[0]] = db.execute(sql + mark, row).lastrowid or 0
            return seqs
        for part in _parts(rows, width):
            statement = sql + ", ".join([mark] * len(part))
            values = [value for row in part for value in row]
            if want_seqs:
                seqs.update(db.execute(f"{statement} RETURNING task_id, seq", values).fetchall())
            else:
                db.execute(statement, values)
        return seqs

    @staticmethod
    def _fetch_many(db: sqlite3.Connection, task_ids: Sequence[str]) -> list[Task]:
        out: list[Task] = []
        for start in range(0, len(task_ids), 500):
            chunk = task_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM tasks WHERE task_id IN ({marks})", chunk
            ).fetchall()
            by_id = {r["task_id"]: r for r in rows}
            out.extend(_row_to_task(by_id[t]) for t in chunk if t in by_id)
        return out

    async def get(self, task_id: str) -> Task | None:
        def get() -> Task | None:
            row = self.db.execute(
                f"SELECT {_COLUMNS} FROM tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
            return _row_to_task(row) if row else None

        return await self._call(get)

    async def transition(
        self,
        task_id: str,
        expected: TaskStatus,
        new: TaskStatus,
        fields: dict[str, Any] | None = None,
        result: StoredResult | None = None,
        bump_attempt: bool = False,
        log_cap: int | None = None,
        current: Task | None = None,
    ) -> Task | None:
        """Compare-and-set ``expected -> new`` plus ``fields``; None when the status differed.

        ``bump_attempt`` counts a new run attempt in the same statement; ``log_cap``
        trims the task's log to its tail once the transition is made.  A transition
        the lifecycle does not allow raises ``InvalidTransition`` before touching the disk.
        ``current`` is the record as the caller knows it to be (this process owns the
        task): the new record is derived from it instead of read back.
        """
        _check_transition(expected, new)

        def transition(db: sqlite3.Connection) -> Task | None:
            return self._apply(
                db, task_id, expected, new, fields or {}, result, bump_attempt, log_cap, current
            )

        return await self._commit(transition)

    async def transition_many(
        self,
        changes: Sequence[tuple[Task, dict[str, Any], StoredResult | None]],
        expected: TaskStatus,
        new: TaskStatus,
        bump_attempt: bool = False,
        log_cap: int | None = None,
        quiet: Collection[str] = (),
    ) -> list[Task | None]:
        """``transition`` of several tasks this process owns, each ``(current, fields,
        result)``, in one transaction; None in place of each whose status differed.

        ``log_cap`` trims the logs of all but the ``quiet`` tasks (whose attempts wrote
        nothing to their logs).
        """
        _check_transition(expected, new)

        def transition(db: sqlite3.Connection) -> list[Task | None]:
            if (
                _HAS_RETURNING
                and len(changes) > 1
                and len({task.task_id for task, _, _ in changes}) == len(changes)
                and _same_keys(f for _, f, _ in changes)
            ):
                return self._apply_many(db, changes, expected, new, bump_attempt, log_cap, quiet)
            return [
                self._apply(
                    db,
                    task.task_id,
                    expected,
                    new,
                    fields,
                    result,
                    bump_attempt,
                    None if task.task_id in quiet else log_cap,
                    task,
                )
                for task, fields, result in changes
            ]

        return await self._commit(transition)

    def _apply_many(
        self,
        db: sqlite3.Connection,
        changes: Sequence[tuple[Task, dict[str, Any], StoredResult | None]],
        expected: TaskStatus,
        new: TaskStatus,
        bump_attempt: bool,
        log_cap: int | None,
        quiet: Collection[str],
    ) -> list[Task | None]:
        """Store thread: ``transition_many`` in a statement per table, not one per task.

        Each statement lets go of the GIL and takes it back, which, while the event loop
        is busy, costs far more than the row: a chunk's worth of rows go in one.
        """
        keys = list(changes[0][1])
        sets = "".join(f", {k} = v.column{i}" for i, k in enumerate(keys, start=2))
        if bump_attempt:
            sets += ", attempt = attempt + 1"
        mark = f"({', '.join('?' * (1 + len(keys)))})"
        seqs: dict[str, int] = {}
        for part in _parts(changes, 1 + len(keys), reserved=2):  # (+ the two statuses)
            params: list[Any] = [new.value]
            for task, fields, _ in part:
                values = _column_values(fields)
                params += [task.task_id, *(values[k] for k in keys)]
            params.append(expected.value)
            # (``+status``: the lookup goes by task_id, never a scan of a status's rows.)
            rows = db.execute(
                f"UPDATE tasks SET status = ?{sets} FROM (VALUES {', '.join([mark] * len(part))})"
                " AS v WHERE tasks.task_id = v.column1 AND +tasks.status = ?"
                " RETURNING tasks.task_id, tasks.seq",
                params,
            ).fetchall()
            seqs.update((row[0], row[1]) for row in rows)
        results = [
            (seqs[task.task_id], *r.columns())
            for task, _, r in changes
            if r is not None and task.task_id in seqs
        ]
        for stored in _parts(results, 5):
            db.execute(
                "INSERT OR REPLACE INTO results VALUES"
                + ", ".join(["(?, ?, ?, ?, ?)"] * len(stored)),
                [value for row in stored for value in row],
            )
        out: list[Task | None] = []
        for task, fields, _ in changes:
            if task.task_id not in seqs:
                out.append(None)
                continue
            if log_cap is not None and task.task_id not in quiet:
                self._trim_log(task.task_id, log_cap)
            out.append(_derive(task, new, fields, bump_attempt))
        return out

    def _apply(
        self,
        db: sqlite3.Connection,
        task_id: str,
        expected: TaskStatus,
        new: TaskStatus,
        fields: dict[str, Any],
        result: StoredResult | None,
        bump_attempt: bool,
        log_cap: int | None,
        current: Task | None,
    ) -> Task | None:
        """Store thread: one compare-and-set transition (see ``transition``)."""
        values = _column_values(fields)
        sets = "".join(f", {k} = ?" for k in values)
        if bump_attempt:
            sets += ", attempt = attempt + 1"
        sql = f"UPDATE tasks SET status = ?{sets} WHERE task_id = ? AND status = ?"
        params = (new.value, *values.values(), task_id, expected.value)
        row = None
        if current is not None or not _HAS_RETURNING:
            if db.execute(sql, params).rowcount != 1:
                return None
        else:  # one statement instead of two
            row = db.execute(f"{sql} RETURNING {_COLUMNS}", params).fetchone()
            if row is None:
                return None
        if result is not None:
            db.execute(
                "INSERT OR REPLACE INTO results"
                " SELECT seq, ?, ?, ?, ? FROM tasks WHERE task_id = ?",
                (*result.columns(), task_id),
            )
        if log_cap is not None:
            self._trim_log(task_id, log_cap)
        if current is not None:
            return _derive(current, new, fields, bump_attempt)
        if row is None:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
        return _row_to_task(row)

    def _trim_log(self, task_id: str, cap: int) -> None:
        """Keep the tail of a finished task's log within ``cap`` bytes."""
        path = self.log_path(task_id)
        try:
            size = os.path.getsize(path)
            if size <= cap:
                return
            with open(path, "r+b") as fh:
                fh.seek(size - cap)
                tail = fh.read(cap)
                fh.seek(0)
                fh.write(tail)
                fh.truncate(len(tail))
        except FileNotFoundError:
            return

    async def save_progress(self, updates: Iterable[tuple[str, float | None, str | None]]) -> None:
        """Persist the latest progress of running tasks (batched by the caller)."""
        batch = list(updates)

        def save(db: sqlite3.Connection) -> None:
            db.executemany(
                "UPDATE tasks SET progress = ?, message = ?"
                " WHERE task_id = ? AND status = 'running'",
                [(p, m, t) for t, p, m in batch],
            )

        if batch:
            await self._commit(save)

    async def queued(self, owner_id: str) -> list[QueuedRow]:
        """Our ``created`` tasks, for (re)building the in-memory queue."""

        def read() -> list[QueuedRow]:
            rows = self.db.execute(
                "SELECT priority, seq, task_id, not_before FROM tasks"
                " WHERE owner = ? AND status = 'created'",
                (owner_id,),
            ).fetchall()
            return [QueuedRow(**dict(r)) for r in rows]

        return await self._call(read)

    async def page(
        self,
        statuses: Sequence[TaskStatus] | None = None,
        task_type: str | None = None,
        group: str | None = None,
        tag: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[Task], str | None]:
        """A page newest first; the cursor is the last ``seq`` seen.

        A tag page is driven by ``task_tags``' (tag, seq) key, so it reads one page's
        worth of rows however many tasks carry the tag.
        """
        where, args = self._filters(statuses, task_type, group)
        seq = "task_tags.seq" if tag is not None else "seq"
        if tag is not None:
            where.insert(0, "task_tags.tag = ?")
            args.insert(0, tag)
        if cursor is not None:
            if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
                raise InvalidParameters("not a cursor this server gave out", field="cursor")
            where.append(f"{seq} < ?")
            args.append(int(cursor))
        if tag is not None:
            sql = f"SELECT {_TASK_COLUMNS} FROM task_tags JOIN tasks ON tasks.seq = task_tags.seq"
        else:
            sql = f"SELECT {_COLUMNS} FROM tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {seq} DESC LIMIT ?"
        args.append(limit + 1)

        def read() -> tuple[list[Task], str | None]:
            rows = self.db.execute(sql, args).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            nxt = str(rows[-1]["seq"]) if more and rows else None
            return [_row_to_task(r) for r in rows], nxt

        return await self._call(read)

    @staticmethod
    def _filters(
        statuses: Sequence[TaskStatus] | None,
        task_type: str | None,
        group: str | None,
    ) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args.extend(s.value for s in statuses)
        if task_type is not None:
            where.append("task_type = ?")
            args.append(task_type)
        if group is not None:
            where.append("group_id = ?")
            args.append(group)
        return where, args

    async def unfinished(self, task_ids: Sequence[str] | None, group: str | None) -> list[Task]:
        """Tasks not finished yet (for an event stream's snapshot), newest first."""
        where = ["status IN ('created', 'running')"]
        args: list[Any] = []
        if task_ids:
            where.append(f"task_id IN ({','.join('?' * len(task_ids))})")
            args.extend(task_ids)
        if group is not None:
            where.append("group_id = ?")
            args.append(group)
        sql = f"SELECT {_COLUMNS} FROM tasks WHERE {' AND '.join(where)} ORDER BY seq DESC"

        def read() -> list[Task]:
            return [_row_to_task(r) for r in self.db.execute(sql, args).fetchall()]

        return await self._call(read)

    async def get_result(self, task_id: str) -> StoredResult | None:
        def read() -> StoredResult | None:
            row = self.db.execute(
                "SELECT preview, size, data, path FROM results"
                " WHERE seq = (SELECT seq FROM tasks WHERE task_id = ?)",
                (task_id,),
            ).fetchone()
            if row is None:
                return None
            return StoredResult(json.loads(row["preview"]), row["size"], row["data"], row["path"])

        return await self._call(read)

    async def delete(self, task_id: str) -> list[str] | None:
        """Forget a finished task; return the files to remove, or None when it was not finished."""
        finished = tuple(s.value for s in FINISHED)

        def delete(db: sqlite3.Connection) -> list[str] | None:
            row = db.execute(
                "SELECT seq, blob_id FROM tasks WHERE task_id = ? AND status IN (?, ?, ?)",
                (task_id, *finished),
            ).fetchone()
            if row is None:
                return None
            return self._forget(db, [(task_id, row["seq"], row["blob_id"])])

        return await self._commit(delete)

    def _forget(
        self, db: sqlite3.Connection, rows: Sequence[tuple[str, int, str | None]]
    ) -> list[str]:
        files: list[str] = []
        for task_id, seq, blob_id in rows:
            res = db.execute("SELECT path FROM results WHERE seq = ?", (seq,)).fetchone()
            if res is not None and res["path"]:
                files.append(res["path"])
            db.execute("DELETE FROM results WHERE seq = ?", (seq,))
            db.execute("DELETE FROM task_tags WHERE seq = ?", (seq,))
            db.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))
            files.append(self.log_path(task_id))
            if blob_id:
                other = db.execute("SELECT 1 FROM tasks WHERE blob_id = ? LIMIT 1", (blob_id,))
                if other.fetchone() is None:
                    files.append(os.path.join(self.blob_dir, blob_id))
        return files

    async def purge(self, finished_before: float, limit: int = 1000) -> tuple[list[str], list[str]]:
        """Forget finished tasks older than the retention; return (task ids, files to remove)."""

        def purge(db: sqlite3.Connection) -> tuple[list[str], list[str]]:
            rows = db.execute(
                "SELECT task_id, seq, blob_id FROM tasks WHERE finished_at IS NOT NULL"
                " AND finished_at < ? LIMIT ?",
                (finished_before, limit),
            ).fetchall()
            keys = [(r["task_id"], r["seq"], r["blob_id"]) for r in rows]
            return [k[0] for k in keys], self._forget(db, keys)

        return await self._commit(purge)

    async def run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the store's thread (read-only checks, tests, tools)."""
        return await self._call(lambda: fn(self.db))
