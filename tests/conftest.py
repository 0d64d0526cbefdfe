"""Fixtures shared by every suite; helpers shared across suites live in ``support.py``."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import HANG, HELPERS, Api, ServerProcess

pytest_plugins = ["jupyter_server.pytest_plugin"]


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


# -- the in-process server (pytest-jupyter) with the extension ---------------------------


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


@pytest.fixture
def api(jp_fetch: Callable[..., Any], tasks_app: Any) -> Api:
    return Api(jp_fetch)
