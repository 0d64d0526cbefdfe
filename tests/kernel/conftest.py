"""A real Jupyter server (subprocess) with the extension, and kernels it starts.

The server runs with its own data, runtime and config directories and a clean
environment (no ``JUPYTER_TASKS_*``/``JPY_*`` of whoever runs the tests), so the
kernels it starts see exactly what the extension sets.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

import jupyter_tasks.client as jt_client
from jupyter_tasks.client import Client

HANG = 120.0  # bounds on waits only catch hangs; nothing here measures speed

_LEAKY = ("JUPYTER_TASKS_", "JPY_", "JUPYTERHUB_", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that points at a tasks server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY)}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TasksServer:
    """A running ``jupyter server`` subprocess and what a test needs to reach it."""

    url: str
    token: str
    proc: subprocess.Popen[bytes]
    root: Path
    runtime_dir: Path
    log: Path
    kernels: list[str] = field(default_factory=list)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path.lstrip("/"), data=data, method=method)
        req.add_header("Authorization", f"token {self.token}")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=HANG) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def rss(self) -> int:
        """Resident memory of the server process itself (not its workers)."""
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def start_kernel(self) -> str:
        kernel_id = str(self.request("POST", "api/kernels", {"name": "python3"})["id"])
        self.kernels.append(kernel_id)
        return kernel_id

    def connection_file(self, kernel_id: str) -> Path:
        path = self.runtime_dir / f"kernel-{kernel_id}.json"
        deadline = time.monotonic() + HANG
        while not path.exists():
            assert time.monotonic() < deadline, f"no connection file for kernel {kernel_id}"
            time.sleep(0.05)
        return path

    def shutdown_kernel(self, kernel_id: str) -> None:
        with contextlib.suppress(urllib.error.HTTPError):
            self.request("DELETE", f"api/kernels/{kernel_id}")
        if kernel_id in self.kernels:
            self.kernels.remove(kernel_id)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_server(base: Path, *args: str) -> TasksServer:
    """Start a server in ``base`` and wait (bounded) until ``/tasks/health`` answers."""
    root, runtime, data, config = (base / d for d in ("root", "runtime", "data", "config"))
    for d in (root, runtime, data, config):
        d.mkdir(parents=True, exist_ok=True)
    port, token = free_port(), secrets.token_hex(16)
    env = clean_env(
        JUPYTER_RUNTIME_DIR=str(runtime), JUPYTER_DATA_DIR=str(data), JUPYTER_CONFIG_DIR=str(config)
    )
    cmd = [
        sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
        "--ServerApp.jpserver_extensions=jupyter_tasks=True", *args,
    ]  # fmt: skip
    log = base / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    server = TasksServer(f"http://127.0.0.1:{port}/", token, proc, root, runtime, log)
    deadline = time.monotonic() + HANG
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}):\n{server.log_tail()}")
        try:
            if server.request("GET", "tasks/health").get("healthy"):
                return server
        except (OSError, urllib.error.URLError, ValueError):
            pass
        if time.monotonic() > deadline:
            stop_server(server)
            raise RuntimeError(f"the server did not become healthy:\n{server.log_tail()}")
        time.sleep(0.1)


def stop_server(server: TasksServer) -> None:
    """Stop the server by its pid (it stops its kernels and workers itself)."""
    for kernel_id in list(server.kernels):
        server.shutdown_kernel(kernel_id)
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=HANG)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=HANG)


@pytest.fixture(scope="session")
def tasks_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TasksServer]:
    server = start_server(tmp_path_factory.mktemp("server"))
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def client(tasks_server: TasksServer) -> Iterator[Client]:
    """The module-level API pointed at the test server; closed after the test."""
    connected = jt_client.connect(tasks_server.url, tasks_server.token)
    try:
        yield connected
    finally:
        with jt_client._default_lock:
            current, jt_client._default = jt_client._default, None
        connected.close()
        if current is not None and current is not connected:
            current.close()
