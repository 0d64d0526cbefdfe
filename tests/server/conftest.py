"""Fixtures for the server extension: an in-process server (pytest-jupyter) and real ones.

In-process tests use ``jp_fetch``/``jp_ws_fetch`` on the server's own loop.
Tests whose client blocks (uploads measured with psutil, schemathesis, a
restart) run the server as a subprocess instead: ``ServerProcess``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from tornado.httpclient import HTTPClientError, HTTPResponse

#: Bounds that only catch hangs; nothing here asserts speed.
HANG = 120.0

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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "tasks_config(**traits): TasksApp settings for the in-process server"
    )


@pytest.fixture
def tasks_config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """TasksApp traits: small and quick by default; ``@pytest.mark.tasks_config`` adds more."""
    config: dict[str, Any] = {
        "db_path": str(tmp_path / "tasks" / "tasks.db"),
        "max_workers": 2,
        "worker_memory_limit": 0,
        "kill_grace_seconds": 0.5,
    }
    marker = request.node.get_closest_marker("tasks_config")
    if marker is not None:
        config.update(marker.kwargs)
    return config


@pytest.fixture
def jp_server_config(tasks_config: dict[str, Any]) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_tasks": True}},
        "TasksApp": tasks_config,
    }


@pytest.fixture
def helpers_module(jp_root_dir: Path) -> Path:
    """``jt_helpers.py`` in the server's root directory."""
    path = jp_root_dir / "jt_helpers.py"
    path.write_text(textwrap.dedent(HELPERS))
    return path


@pytest.fixture
def tasks_app(
    jp_serverapp: Any, jp_asyncio_loop: asyncio.AbstractEventLoop, helpers_module: Path
) -> Any:
    """The running extension (pytest-jupyter does not run the extensions' start hooks)."""
    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_tasks"]
    jp_asyncio_loop.run_until_complete(
        asyncio.wait_for(app._start_jupyter_server_extension(jp_serverapp), HANG)
    )
    return app


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


@pytest.fixture
def api(jp_fetch: Callable[..., Any], tasks_app: Any) -> Api:
    return Api(jp_fetch)


def python_task(func: str, *args: Any, **request: Any) -> dict[str, Any]:
    """A ``python`` TaskRequest calling ``func`` with ``args``."""
    request.setdefault("description", f"call {func}")
    return {"task_type": "python", "parameters": {"callable": func, "args": list(args)}, **request}


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


# -- servers in their own process ----------------------------------------------------------


class ServerProcess:
    """``python -m jupyter_server`` with the extension, in a private Jupyter environment."""

    def __init__(self, base: Path, tasks: dict[str, Any], env: dict[str, str] | None = None):
        self.base = base
        self.token = secrets.token_hex(16)
        self.root = base / "root"
        self.runtime = base / "runtime"
        self.config_dir = base / "config"
        for path in (self.root, self.runtime, self.config_dir, base / "data"):
            path.mkdir(parents=True, exist_ok=True)
        (self.root / "jt_helpers.py").write_text(textwrap.dedent(HELPERS))
        self.tasks = {"db_path": str(base / "tasks.db"), "worker_memory_limit": 0, **tasks}
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log_path = base / "server.log"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def start(self) -> ServerProcess:
        config = {
            "ServerApp": {
                "jpserver_extensions": {"jupyter_tasks": True},
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
                    if response.status_code == 200:
                        return
            time.sleep(0.05)
        raise TimeoutError(f"server not ready after {HANG} s:\n{self.log()}")

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

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Factory of subprocess servers; every one is stopped at teardown."""
    started: list[ServerProcess] = []

    def make(tasks: dict[str, Any] | None = None, name: str = "server", **kw: Any) -> ServerProcess:
        server = ServerProcess(tmp_path / name, tasks or {}, **kw)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


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
