"""A full disk and a read-only database: clear answers, no damage, and recovery.

The database of a ``jupyter server`` subprocess lives on a small tmpfs, so the faults are
real: a file takes the disk's last byte; the tmpfs is remounted read-only before a server
starts.  Where mounting is not allowed, the same faults are injected at the store's boundary
instead: a config file of the server wraps ``sqlite3.connect`` so that commits to the task
database fail, after SQLite's own rollback, with SQLite's own errors while a fault file
names one.  ``JUPYTER_TASKS_DISK_FAULTS=inject`` takes that way on purpose.

A database that turns read-only under a running server is injected everywhere: Linux
refuses to remount a file system read-only while files on it are open for writing, and an
immutable flag (``chattr +i``) does not stop writes through descriptors already open.

Either way, the same assertions: ``/tasks/health`` answers 503 with the reason, a submit
answers a JSON 503 (never a 500, never a hang), reads still work, ``PRAGMA
integrity_check`` stays ok, and once the fault is gone health is 200 and tasks run again,
the ones caught in the middle included.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from support import HANG, ServerProcess, python_task

from .conftest import poll

SIZE = "4m"
MODE_ENV = "JUPYTER_TASKS_DISK_FAULTS"
#: Submits that may still fit in pages SQLite holds already (its WAL) before one fails.
SUBMITS_UNTIL_FULL = 300
FINAL = {"completed", "failed", "cancelled"}

INJECT = '''
"""Faults at the task store's boundary: commits fail while {fault} names one."""
import os
import sqlite3

_DB = {db!r}
_FAULT = {fault!r}
_ERRORS = {{"full": "database or disk is full", "readonly": "attempt to write a readonly database"}}
_connect = sqlite3.connect


class _FaultyConnection(sqlite3.Connection):
    def execute(self, sql, *args):
        if sql.lstrip().upper().startswith("COMMIT"):
            try:
                with open(_FAULT) as fh:
                    fault = fh.read().strip()
            except FileNotFoundError:
                fault = ""
            if fault:
                super().execute("ROLLBACK")  # as SQLite does when a commit finds no space
                raise sqlite3.OperationalError(_ERRORS[fault])
        return super().execute(sql, *args)


def _faulty_connect(database, *args, **kwargs):
    if os.fspath(database) == _DB:
        kwargs.setdefault("factory", _FaultyConnection)
    return _connect(database, *args, **kwargs)


sqlite3.connect = _faulty_connect
'''


def _run(*argv: str) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class Disk:
    """The directory of a server's database and the faults a test puts on it."""

    def __init__(self, base: Path) -> None:
        self.dir = base / "disk"
        self.dir.mkdir(parents=True)
        self.db = self.dir / "tasks.db"
        self.fault = base / "fault"
        self.filler = self.dir / "filler"
        forced = os.environ.get(MODE_ENV) == "inject"
        self.real = not forced and _run(
            "mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(self.dir)
        )

    def configure(self, server: ServerProcess, inject: bool) -> None:
        """Before the server starts: the injection, where faults are not real (or not
        possible: ``inject``)."""
        injected = inject or not self.real
        print(f"\ndisk faults: {'injected at the store' if injected else 'real (tmpfs)'}")
        if injected:
            code = INJECT.format(db=str(self.db), fault=str(self.fault))
            (server.config_dir / "jupyter_server_config.py").write_text(code)

    def fill(self) -> None:
        if not self.real:
            self.fault.write_text("full")
            return
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            block = b"\0" * 4096
            with contextlib.suppress(OSError):  # ENOSPC: the disk is full
                while True:
                    os.write(fd, block)
            with contextlib.suppress(OSError):
                while True:  # the last bytes of the last page
                    os.write(fd, b"\0")
        finally:
            os.close(fd)
        assert os.statvfs(self.dir).f_bavail == 0

    def free(self) -> None:
        self.fault.unlink(missing_ok=True)
        self.filler.unlink(missing_ok=True)

    def lock(self) -> None:
        """The database turns read-only under a running server (injected: see above)."""
        self.fault.write_text("readonly")

    def unlock(self) -> None:
        self.fault.unlink(missing_ok=True)

    def remount(self, mode: str) -> None:
        """``ro`` or ``rw``, with no server running (files open for writing forbid ``ro``)."""
        if not self.real:
            if mode == "ro":
                self.fault.write_text("readonly")
            else:
                self.fault.unlink(missing_ok=True)
            return
        assert _run("mount", "-o", f"remount,{mode}", str(self.dir)), mode

    def close(self) -> None:
        self.unlock()
        if self.real:
            _run("mount", "-o", "remount,rw", str(self.dir))
            self.free()
            if not _run("umount", str(self.dir)):
                _run("umount", "-l", str(self.dir))


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    disk = Disk(tmp_path)
    try:
        yield disk
    finally:
        disk.close()


class SlowStartServer(ServerProcess):
    """Ready once ``/tasks/health`` answers at all: its engine may not start."""

    def is_ready(self, health: requests.Response) -> bool:
        return True


@pytest.fixture
def make_server(disk: Disk, tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def make(wait_healthy: bool = True, inject: bool = False) -> ServerProcess:
        kind = ServerProcess if wait_healthy else SlowStartServer
        server = kind(tmp_path / "server", {"db_path": str(disk.db), "max_workers": 1})
        disk.configure(server, inject)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


def health(server: ServerProcess) -> tuple[int, dict[str, Any]]:
    response = server.request("GET", "tasks/health")
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    body: dict[str, Any] = response.json()
    return response.status_code, body


def unhealthy(server: ServerProcess) -> dict[str, Any] | None:
    code, body = health(server)
    assert code in (200, 503), (code, body)
    return body if code == 503 else None


def submit_until_refused(server: ServerProcess) -> requests.Response:
    """Submit (each answer a 201 or a JSON 503) until one is refused: pages SQLite holds
    already (its WAL, written through open files) may take a few."""
    request = python_task("jt_helpers:noop", description="d" * 5000)
    for _ in range(SUBMITS_UNTIL_FULL):
        response = server.request("POST", "tasks", json=request)
        assert response.status_code in (201, 503), (response.status_code, response.text[:300])
        if response.status_code == 503:
            assert response.headers["Content-Type"].startswith("application/json")
            assert response.headers.get("Retry-After"), response.headers
            return response
    raise AssertionError(f"{SUBMITS_UNTIL_FULL} submits accepted despite the fault")


def finished(server: ServerProcess, *task_ids: str) -> dict[str, str]:
    """The final status of each task, polled (bounded: a task stuck running fails the test)."""

    def statuses() -> dict[str, str] | None:
        found = {t: server.request("GET", f"tasks/{t}").json()["status"] for t in task_ids}
        return found if set(found.values()) <= FINAL else None

    result: dict[str, str] = poll(statuses, f"tasks {', '.join(task_ids)} to finish")
    return result


def integrity(db: Path) -> str:
    """``PRAGMA integrity_check`` on a connection of our own (the server keeps its own)."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=HANG)
    try:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        connection.close()


def no_server_errors(server: ServerProcess, since: int) -> None:
    """No 500 (or other 5xx but 503) in the server's log after byte ``since``."""
    with server.log_path.open("rb") as fh:
        fh.seek(since)
        log = fh.read().decode(errors="replace")
    assert not re.search(r"\b50[0-24-9] (GET|POST|DELETE) ", log), log[-3000:]


def test_a_full_disk_is_503_then_recovers(
    disk: Disk, make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = make_server()
    since = server.log_path.stat().st_size
    first = server.request("POST", "tasks", json=python_task("jt_helpers:noop"))
    assert first.status_code == 201, first.text
    gate = tmp_path / "gate"  # outside the full disk
    caught = server.request(
        "POST", "tasks", json=python_task("jt_helpers:wait_for_file", str(gate))
    ).json()
    poll(
        lambda: server.request("GET", f"tasks/{caught['task_id']}").json()["status"] == "running",
        "the task that the fault will catch running",
    )

    disk.fill()
    refused = submit_until_refused(server)
    message = refused.json()["message"]
    assert "full" in message, message
    detail = poll(lambda: unhealthy(server), "health to report the full disk")["detail"]
    assert "full" in detail or "no space" in detail, detail
    print(f"submit: 503 {message!r}\nhealth: 503 {detail!r}")
    gate.touch()  # the task ends while its end cannot be recorded
    listed = server.request("GET", "tasks", params={"limit": 5})
    assert listed.status_code == 200, listed.text[:300]  # reads still work
    assert integrity(disk.db) == "ok"

    disk.free()
    poll(lambda: health(server)[0] == 200, "health 200 once there is space again")
    after = server.request("POST", "tasks", json=python_task("operator:add", 2, 3))
    assert after.status_code == 201, after.text
    done = finished(server, after.json()["task_id"], caught["task_id"], first.json()["task_id"])
    assert set(done.values()) == {"completed"}, done
    assert integrity(disk.db) == "ok"
    no_server_errors(server, since)


def test_a_database_turning_read_only_is_503_then_recovers(
    disk: Disk, make_server: Callable[..., ServerProcess]
) -> None:
    server = make_server(inject=True)
    since = server.log_path.stat().st_size
    disk.lock()
    refused = submit_until_refused(server)
    assert "cannot be written" in refused.json()["message"], refused.json()
    batch = server.request("POST", "tasks/batch", json={"tasks": [python_task("jt_helpers:noop")]})
    assert batch.status_code == 503, batch.text[:300]
    detail = poll(lambda: unhealthy(server), "health to report the read-only database")["detail"]
    assert re.search("read-?only", detail), detail
    print(f"submit: 503 {refused.json()['message']!r}\nhealth: 503 {detail!r}")
    assert server.request("GET", "tasks").status_code == 200
    assert integrity(disk.db) == "ok"

    disk.unlock()
    poll(lambda: health(server)[0] == 200, "health 200 once the database is writable")
    after = server.request("POST", "tasks", json=python_task("operator:add", 2, 3))
    assert after.status_code == 201, after.text
    task_id = after.json()["task_id"]
    assert finished(server, task_id) == {task_id: "completed"}
    assert integrity(disk.db) == "ok"
    no_server_errors(server, since)


def test_a_read_only_path_at_start_is_503_then_recovers(
    disk: Disk, make_server: Callable[..., ServerProcess]
) -> None:
    first = make_server()
    done = first.request("POST", "tasks", json=python_task("operator:add", 1, 1)).json()
    assert finished(first, done["task_id"]) == {done["task_id"]: "completed"}
    first.stop()

    disk.remount("ro")
    server = make_server(wait_healthy=False)
    code, body = health(server)
    assert code == 503 and body["healthy"] is False, body

    def start_failure() -> str | None:
        body = unhealthy(server)
        assert body is not None, "healthy on a read-only path"
        detail: str = body["detail"]
        return detail if "failed to start" in detail else None

    detail = poll(start_failure, "the reason the engine cannot start")
    assert re.search(r"read-?only", detail, re.IGNORECASE), detail
    refused = server.request("POST", "tasks", json=python_task("jt_helpers:noop"))
    assert refused.status_code == 503, refused.text[:300]
    assert refused.headers["Content-Type"].startswith("application/json")
    assert "failed to start" in refused.json()["message"]
    print(f"submit: 503 {refused.json()['message']!r}\nhealth: 503 {detail!r}")

    disk.remount("rw")
    poll(lambda: health(server)[0] == 200, "health 200 once the path is writable")
    kept = server.request("GET", f"tasks/{done['task_id']}/result")
    assert kept.json()["value"] == 2, kept.text
    after = server.request("POST", "tasks", json=python_task("operator:add", 2, 3))
    assert after.status_code == 201, after.text
    task_id = after.json()["task_id"]
    assert finished(server, task_id) == {task_id: "completed"}
    assert integrity(disk.db) == "ok"
    no_server_errors(server, 0)
