"""Fixtures for the Dask executor: real clusters (command line and ``LocalCluster``), orchestrators.

A command-line cluster is ``python -m dask scheduler`` plus ``python -m dask worker`` (what
the ``dask`` command runs), each in its own session so that teardown can kill its whole
tree.  Readiness waits are bounded; nothing waits on a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support import HANG, engine_config, task_root, until

from jupyter_tasks.orchestrator import EngineConfig, Orchestrator

# ``distributed`` is an optional extra: it is imported where it is used, and each test
# module skips itself without it.


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class CliCluster:
    """``dask scheduler`` and ``dask worker`` started as separate processes."""

    port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: Path | None = None

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        assert self.logs is not None
        out = open(self.logs / f"{args[0]}-{len(self.procs)}.log", "wb")  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dask", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()
        self.procs.append(proc)
        return proc

    def start_scheduler(self) -> None:
        self._spawn("scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard")

    def start_worker(self) -> None:
        self._spawn(
            "worker", self.address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
            "--host", "127.0.0.1", "--memory-limit", "0",
        )  # fmt: skip

    def wait_ready(self) -> dict[str, int]:
        """Wait (bounded) until a worker is registered; ``{worker address: worker pid}``."""
        from distributed import Client

        with Client(self.address, timeout=HANG) as client:
            client.wait_for_workers(1, timeout=HANG)
            return dict(client.run(os.getpid))

    def stop(self) -> None:
        """Kill every process of the cluster (and whatever the workers started)."""
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()


def start_cli_cluster(logs: Path) -> tuple[CliCluster, dict[str, int]]:
    cluster = CliCluster(logs=logs)
    try:
        cluster.start_scheduler()
        cluster.start_worker()
        return cluster, cluster.wait_ready()
    except BaseException:
        cluster.stop()
        raise


@dataclass
class Cluster:
    """What the tests need to know of a cluster: its address and its workers' pids."""

    address: str
    worker_pids: dict[str, int]


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster, pids = start_cli_cluster(tmp_path_factory.mktemp("dask-logs"))
    try:
        yield Cluster(cluster.address, pids)
    finally:
        cluster.stop()


@pytest.fixture
def own_cli_cluster(tmp_path: Path) -> Iterator[tuple[CliCluster, dict[str, int]]]:
    """A cluster for one test that breaks it (kills its worker or its scheduler)."""
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    cluster, pids = start_cli_cluster(logs)
    try:
        yield cluster, pids
    finally:
        cluster.stop()


@pytest.fixture
def bare_cli_cluster(tmp_path: Path) -> Iterator[CliCluster]:
    """A scheduler with no worker yet; the test starts one with ``start_worker()``."""
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    cluster = CliCluster(logs=logs)
    try:
        cluster.start_scheduler()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[Cluster]:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(1, timeout=HANG)
        yield Cluster(cluster.scheduler_address, dict(client.run(os.getpid)))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return task_root(tmp_path, Path(__file__).with_name("taskmods_src.py"))


@pytest.fixture
def make_config(tmp_path: Path, root: Path) -> Callable[..., EngineConfig]:
    return lambda **overrides: engine_config(tmp_path, root, **overrides)


@pytest.fixture
def make_orch(
    make_config: Callable[..., EngineConfig], jp_asyncio_loop: asyncio.AbstractEventLoop
) -> Iterator[Callable[..., Awaitable[Orchestrator]]]:
    """``await make_orch(address, **config)``: a started orchestrator on a connected executor."""
    made: list[Orchestrator] = []

    from jupyter_tasks.executors.dask import DaskExecutor

    async def make(address: str | None, **kw: Any) -> Orchestrator:
        config = make_config(**kw)
        orch = Orchestrator(config, executor=DaskExecutor.from_config(config, address))
        made.append(orch)
        await orch.start()
        await until(lambda: orch.executor.health().healthy, "the executor to connect")
        return orch

    yield make
    for orch in made:
        jp_asyncio_loop.run_until_complete(orch.stop())
