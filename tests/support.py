"""Helpers shared by the test suites (``tests`` is on pytest's ``pythonpath``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import requests
from tornado.httpclient import HTTPClientError, HTTPResponse

from jupyter_tasks.executors.base import RunSpec
from jupyter_tasks.models import TaskRequest
from jupyter_tasks.orchestrator import EngineConfig, Subscription
from jupyter_tasks.tasktypes import load_default_registry

HANG = 120.0  # bounds on waits only catch hangs; nothing here measures speed
#: Task functions (``taskmods_src.py``), copied into root directories as ``taskmods.py``.
TASKMODS = Path(__file__).with_name("taskmods_src.py")


def gone(pid: int) -> bool:
    """No such process, or a zombie (it runs nothing)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def until(predicate: Callable[[], bool], what: str, bound: float = HANG) -> None:
    """Wait (bounded) until ``predicate()`` holds, checking often."""
    deadline = time.monotonic() + bound
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def first_event(sub: Subscription, task_id: str, kind: str) -> dict[str, Any]:
    """The first ``kind`` event ("progress", "transition") of ``task_id`` on ``sub``."""

    async def first() -> dict[str, Any]:
        async for event in sub:
            if event["task_id"] == task_id and event["event"] == kind:
                return event
        raise AssertionError("the subscription ended")

    return await asyncio.wait_for(first(), HANG)


def task_root(tmp_path: Path, taskmods: Path) -> Path:
    """A server root directory holding ``taskmods.py`` (copied from ``taskmods``)."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(taskmods, root / "taskmods.py")
    return root


def engine_config(tmp_path: Path, root: Path, **overrides: Any) -> EngineConfig:
    """An engine config for tests: a database under ``tmp_path``, short grace and backoff."""
    base: dict[str, Any] = {
        "db_path": str(tmp_path / "db" / "tasks.db"),
        "root_dir": str(root),
        "max_workers": 2,
        "kill_grace_seconds": 1.0,
        "retry_backoff_seconds": 0.05,
    }
    base.update(overrides)
    return EngineConfig(**base)


def taskmods_request(func: str, *args: Any, **kw: Any) -> TaskRequest:
    """A ``python`` TaskRequest calling ``taskmods.<func>`` (request options taken from ``kw``)."""
    options = {k: kw.pop(k) for k in ("priority", "timeout_seconds", "max_retries") if k in kw}
    return TaskRequest(
        task_type="python",
        description=func,
        parameters={"callable": f"taskmods:{func}", "args": list(args), "kwargs": kw},
        **options,
    )


def run_spec(
    root: Path, files: Path, task_type: str, parameters: dict[str, Any], **fields: Any
) -> RunSpec:
    """A ``RunSpec`` for one attempt, its log, result and blob paths under ``files``."""
    task_id = uuid.uuid4().hex
    base: dict[str, Any] = {
        "task_id": task_id,
        "attempt": 1,
        "task_type": task_type,
        "type_path": load_default_registry().get(task_type).type_path(),
        "parameters": parameters,
        "interpreter": sys.executable,
        "root_dir": str(root),
        "log_path": str(files / "logs" / f"{task_id}.log"),
        "result_path": str(files / "results" / f"{task_id}.pickle"),
        "blob_dir": str(files / "blobs"),
        "result_max_bytes": 1 << 30,
    }
    base.update(fields)
    return RunSpec(**base)


# -- servers in their own process ----------------------------------------------------------

HELPERS = '''
"""Task functions for the tests (the root directory is on the workers' sys.path)."""
import os
import time


def wait_for_file(path, limit=120.0):
    """Block until ``path`` exists: the test decides when this task ends."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)
    return path


def noop():
    return None


def boom(message):
    raise ValueError(message)
'''


def python_task(func: str, *args: Any, **request: Any) -> dict[str, Any]:
    """A ``python`` TaskRequest calling ``func`` with ``args``."""
    request.setdefault("description", f"call {func}")
    return {"task_type": "python", "parameters": {"callable": func, "args": list(args)}, **request}


class ServerProcess:
    """``python -m jupyter_server`` with the extension, in a private Jupyter environment."""

    def __init__(
        self,
        base: Path,
        tasks: dict[str, Any],
        env: dict[str, str] | None = None,
        only_tasks: bool = False,
    ):
        """``only_tasks`` switches off the other installed server extensions (JupyterLab and
        friends start helper processes of their own)."""
        self.base = base
        self.token = secrets.token_hex(16)
        self.root = base / "root"
        self.runtime = base / "runtime"
        self.config_dir = base / "config"
        for path in (self.root, self.runtime, self.config_dir, base / "data"):
            path.mkdir(parents=True, exist_ok=True)
        (self.root / "jt_helpers.py").write_text(textwrap.dedent(HELPERS))
        shutil.copy(TASKMODS, self.root / "taskmods.py")
        self.tasks = {"db_path": str(base / "tasks.db"), "worker_memory_limit": 0, **tasks}
        self.extra_env = env or {}
        self.other_extensions = _other_extensions() if only_tasks else {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log_path = base / "server.log"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def start(self) -> ServerProcess:
        """Start (or start again, on the same database and root directory) and wait until ready."""
        self.url = ""
        config = {
            "ServerApp": {
                "jpserver_extensions": {"jupyter_tasks": True, **self.other_extensions},
                "open_browser": False,
                "allow_root": True,
                "port": 0,
                "port_retries": 0,
                "root_dir": str(self.root),
                "token": self.token,
            },
            "IdentityProvider": {"token": self.token},
            "TasksApp": self.tasks,
        }
        (self.config_dir / "jupyter_server_config.json").write_text(json.dumps(config))
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(self.config_dir),
            "JUPYTER_DATA_DIR": str(self.base / "data"),
            "JUPYTER_RUNTIME_DIR": str(self.runtime),
            "JUPYTER_PLATFORM_DIRS": "1",
            **self.extra_env,
        }
        for stale in self.runtime.glob("jpserver-*.json"):
            stale.unlink()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server"],
            cwd=self.root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        """Bounded: the server writes its runtime file, then /tasks/health answers 200."""
        assert self.proc is not None
        deadline = time.monotonic() + HANG
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log()}")
            info = next(self.runtime.glob(f"jpserver-{self.proc.pid}.json"), None)
            if info is not None and not self.url:
                with contextlib.suppress(ValueError):
                    data = json.loads(info.read_text())
                    self.url = f"http://127.0.0.1:{data['port']}{data['base_url']}"
            if self.url:
                with contextlib.suppress(requests.RequestException):
                    response = requests.get(
                        self.url + "tasks/health", headers=self.headers, timeout=5
                    )
                    if self.is_ready(response):
                        return
            time.sleep(0.05)
        raise TimeoutError(f"server not ready after {HANG} s:\n{self.log()}")

    def is_ready(self, health: requests.Response) -> bool:
        """Whether this answer of ``/tasks/health`` means the server is ready."""
        return health.status_code == 200

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        kw.setdefault("timeout", HANG)
        return requests.request(method, self.url + path, headers=headers, **kw)

    def stop(self) -> None:
        """SIGTERM (a clean stop), SIGKILL to the whole session if it hangs."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(HANG)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(HANG)

    def kill(self) -> None:
        """SIGKILL the server process alone, as a crash would; its workers are left to notice."""
        proc, self.proc = self.proc, None
        assert proc is not None
        proc.kill()
        proc.wait(HANG)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def _other_extensions() -> dict[str, bool]:
    """Every other server extension enabled here, switched off."""
    from jupyter_core.paths import jupyter_config_path
    from jupyter_server.extension.config import ExtensionConfigManager

    enabled = ExtensionConfigManager(read_config_path=jupyter_config_path())
    return dict.fromkeys(set(enabled.get_jpserver_extensions()) - {"jupyter_tasks"}, False)


def wait_done_ws(server: ServerProcess, task_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Finished tasks, learned from the event stream of a subprocess server."""
    import websocket

    query = "&".join(f"task_id={t}" for t in task_ids)
    ws_url = server.url.replace("http://", "ws://") + f"tasks/events?{query}"
    ws = websocket.create_connection(
        ws_url, header=[f"Authorization: token {server.token}"], timeout=HANG
    )
    try:
        snapshot = json.loads(ws.recv())
        assert snapshot["event"] == "snapshot"
        pending = {t["task_id"] for t in snapshot["tasks"]} & set(task_ids)
        done: dict[str, dict[str, Any]] = {}
        for task_id in set(task_ids) - pending:  # not in the snapshot: finished already
            done[task_id] = server.request("GET", f"tasks/{task_id}").json()
        while pending:
            event = json.loads(ws.recv())
            if event["status"] in ("completed", "failed", "cancelled"):
                done[event["task_id"]] = event["task"]
                pending.discard(event["task_id"])
        return done
    finally:
        ws.close()


class PeakRSS:
    """Samples a process's resident memory on a thread until stopped."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(0.005)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(HANG)


# -- the in-process server's client ---------------------------------------------------


class Api:
    """``jp_fetch`` that returns errors instead of raising, with JSON helpers."""

    def __init__(self, fetch: Callable[..., Any]) -> None:
        self._fetch = fetch

    async def __call__(
        self,
        method: str,
        *parts: str,
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> HTTPResponse:
        if body is not None:
            raw = json.dumps(body).encode()
        if raw is None and method in ("POST", "PUT", "PATCH"):
            raw = b""
        try:
            response: HTTPResponse = await self._fetch(
                "tasks",
                *parts,
                method=method,
                body=raw,
                headers=headers,
                params=params,
                allow_nonstandard_methods=True,
            )
        except HTTPClientError as exc:
            assert exc.response is not None, exc
            response = exc.response
        return response

    async def json(self, method: str, *parts: str, expect: int = 200, **kw: Any) -> Any:
        response = await self(method, *parts, **kw)
        assert response.code == expect, (response.code, response.body[:500])
        return json.loads(response.body)

    async def submit(self, **request: Any) -> dict[str, Any]:
        request.setdefault("description", "a test task")
        task: dict[str, Any] = await self.json("POST", body=request, expect=201)
        return task


async def wait_finished(app: Any, task_id: str) -> dict[str, Any]:
    """The task once finished, learned from the engine's event stream."""
    task = await app.orchestrator.wait(task_id, timeout=HANG)
    result: dict[str, Any] = task.to_json()
    return result


def error_of(response: HTTPResponse) -> str:
    """The ``message`` of a JSON error answer (asserting it is one)."""
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    message: str = json.loads(response.body)["message"]
    return message


def seed_finished_tasks(db_path: Path, count: int, now: float | None = None) -> None:
    """``count`` finished tasks in a new store at ``db_path``, written in one SQL statement.

    The schema is the store's own (``Store.open``).  Task ``i`` (seq ``i + 1``) is
    ``completed`` (8 in 10), ``failed`` or ``cancelled``; of type ``shell`` when ``i`` is
    even, else ``python``, and then tagged ``even``; in group ``f"{i // 1000:032x}"``;
    finished within the last hour, so retention keeps them.
    """
    import sqlite3

    from jupyter_tasks.store import Store

    async def create() -> None:
        store = Store(db_path)
        await store.open()
        await store.close()

    asyncio.run(create())
    start = (time.time() if now is None else now) - 3600
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        db.execute("BEGIN")
        db.execute(
            """
            WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ? - 1)
            INSERT INTO tasks (task_id, task_type, description, parameters, priority,
                max_retries, tags, status, group_id, attempt, created_at, started_at,
                finished_at, progress, message, owner)
            SELECT lower(hex(randomblob(16))), iif(i % 2 = 0, 'shell', 'python'),
                'seeded task ' || i,
                iif(i % 2 = 0, '{"command": ["true"]}', '{"callable": "builtins:int"}'),
                1 + i % 10, 0,
                iif(i % 2 = 0, '["even"]', '[]'),
                CASE WHEN i % 10 < 8 THEN 'completed' WHEN i % 10 = 8 THEN 'failed'
                    ELSE 'cancelled' END,
                printf('%032x', i / 1000), 1, ? + i * 1e-3, ? + i * 1e-3, ? + i * 1e-3 + 5e-4,
                1.0, 'seeded', 'ffffffffffffffffffffffffffffffff'
            FROM n
            """,
            (count, start, start, start),
        )
        db.execute(
            "INSERT INTO task_tags (tag, seq) SELECT 'even', seq FROM tasks WHERE tags = ?",
            ('["even"]',),
        )
        db.execute("COMMIT")
    finally:
        db.close()
