"""The extension app: configuration traits, their mapping onto the engine, the kernel URL."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import psutil
import pytest
from traitlets import TraitError

from jupyter_tasks.extension import EngineStartError, TasksApp

TRAITS = [
    "max_workers",
    "max_queue_size",
    "db_path",
    "sqlite_synchronous",
    "default_timeout_seconds",
    "result_max_bytes",
    "log_max_bytes",
    "max_body_bytes",
    "max_batch_body_bytes",
    "max_blob_bytes",
    "retention_seconds",
    "worker_memory_limit",
    "max_tasks_per_worker",
    "kill_grace_seconds",
    "allowed_task_types",
    "executor",
    "dask_address",
    "gc_freeze_at_start",
]


def test_every_trait_is_configurable_and_documented() -> None:
    traits = TasksApp.class_traits(config=True)
    for name in TRAITS:
        assert traits[name].help, name
    assert "TasksApp.max_workers" in TasksApp.class_get_help()


def test_defaults() -> None:
    app = TasksApp()
    assert app.max_workers == (os.cpu_count() or 1)
    assert app.max_queue_size == 10_000
    assert app.db_path == os.path.join(app.data_dir, "jupyter_tasks", "tasks.db")
    assert app.sqlite_synchronous == "NORMAL"
    assert app.default_timeout_seconds is None
    assert app.result_max_bytes == 1 << 30 and app.log_max_bytes == 10 << 20
    assert app.max_body_bytes == 1 << 20
    assert app.max_batch_body_bytes > app.max_body_bytes
    assert app.max_blob_bytes > app.max_batch_body_bytes
    assert app.retention_seconds == 7 * 24 * 3600
    assert app.worker_memory_limit == int(psutil.virtual_memory().total * 0.8)
    assert app.max_tasks_per_worker == 0 and app.kill_grace_seconds == 2
    assert app.allowed_task_types is None and app.executor == "local"
    assert app.gc_freeze_at_start is True


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_workers", 0),
        ("max_queue_size", -1),
        ("max_body_bytes", 10),
        ("retention_seconds", 0),
        ("worker_memory_limit", -1),
        ("default_timeout_seconds", 0),
        ("kill_grace_seconds", -1.0),
        ("sqlite_synchronous", "OFF"),
        ("executor", "not a path"),
    ],
)
def test_invalid_values_are_refused(name: str, value: Any) -> None:
    with pytest.raises(TraitError):
        TasksApp(**{name: value})


def test_valid_values() -> None:
    app = TasksApp(sqlite_synchronous="full", default_timeout_seconds=5, worker_memory_limit=0)
    assert app.sqlite_synchronous == "FULL" and app.default_timeout_seconds == 5
    assert TasksApp(executor="mypkg.executors:Custom").executor == "mypkg.executors:Custom"


def test_executors_by_name(tmp_path: Path) -> None:
    from jupyter_tasks.executors.local import LocalExecutor
    from jupyter_tasks.orchestrator import EngineConfig

    config = EngineConfig(db_path=str(tmp_path / "t.db"), root_dir=str(tmp_path))
    assert isinstance(TasksApp()._make_executor(config), LocalExecutor)
    with pytest.raises(EngineStartError, match="no_such_module"):
        TasksApp(executor="no_such_module:Executor")._make_executor(config)
    with pytest.raises(EngineStartError, match="not an Executor"):
        TasksApp(executor="collections:OrderedDict")._make_executor(config)
    try:
        import distributed  # noqa: F401
    except ImportError:
        with pytest.raises(EngineStartError, match="distributed"):
            TasksApp(executor="dask")._make_executor(config)
    else:
        dask = TasksApp(executor="dask", dask_address="tcp://127.0.0.1:1")._make_executor(config)
        assert type(dask).__name__ == "DaskExecutor"  # built, not started: no connection yet


@pytest.mark.tasks_config(max_workers=3, sqlite_synchronous="FULL", allowed_task_types=["shell"])
def test_traits_map_onto_the_engine(tasks_app: Any, jp_root_dir: Path, tmp_path: Path) -> None:
    config = tasks_app.engine_config()
    assert config.root_dir == str(jp_root_dir)
    assert config.db_path == str(tmp_path / "tasks" / "tasks.db")
    assert config.max_workers == 3 and config.sqlite_synchronous == "FULL"
    assert config.allowed_task_types == ["shell"]
    assert tasks_app.engine_running


@pytest.mark.parametrize(
    ("ip", "certfile", "base_url", "url"),
    [
        ("localhost", "", "/", "http://127.0.0.1:8888/"),
        ("", "", "/lab-prefix/", "http://127.0.0.1:8888/lab-prefix/"),
        ("0.0.0.0", "cert.pem", "/", "https://127.0.0.1:8888/"),
        ("::", "", "/", "http://[::1]:8888/"),
        ("10.1.2.3", "", "/user/ann/", "http://10.1.2.3:8888/user/ann/"),
        ("fe80::1", "", "/", "http://[fe80::1]:8888/"),
    ],
)
def test_kernel_url(ip: str, certfile: str, base_url: str, url: str) -> None:
    app = TasksApp()
    app.serverapp = cast(Any, SimpleNamespace)(
        sock="", ip=ip, port=8888, certfile=certfile, base_url=base_url
    )
    assert app.kernel_url() == url


@pytest.fixture
def blocked_db(tmp_path: Path) -> str:
    (tmp_path / "a-file").write_text("not a directory")
    return str(tmp_path / "a-file" / "tasks.db")


@pytest.fixture
def jp_server_config(tasks_config: dict[str, Any], request: pytest.FixtureRequest) -> Any:
    if "blocked_db" in request.fixturenames:
        tasks_config = {**tasks_config, "db_path": request.getfixturevalue("blocked_db")}
    return {"ServerApp": {"jpserver_extensions": {"jupyter_tasks": True}}, "TasksApp": tasks_config}


async def test_an_engine_that_cannot_start_answers_503(
    jp_serverapp: Any, jp_fetch: Any, blocked_db: str
) -> None:
    from tornado.httpclient import HTTPClientError

    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_tasks"]
    with pytest.raises(EngineStartError):
        await app._start_jupyter_server_extension(jp_serverapp)
    for parts in [("tasks", "health"), ("tasks",), ("tasks", "types")]:
        with pytest.raises(HTTPClientError) as failed:
            await jp_fetch(*parts)
        assert failed.value.code == 503, parts
        assert failed.value.response is not None
        body = json.loads(failed.value.response.body)
        assert body.get("healthy") is False or "failed to start" in body["message"], body


async def test_what_the_started_server_holds_is_frozen_until_the_extension_stops(
    tasks_app: Any,
) -> None:
    assert gc.get_freeze_count() > 0
    await tasks_app.stop_extension()
    assert gc.get_freeze_count() == 0


@pytest.mark.tasks_config(gc_freeze_at_start=False)
def test_the_collector_is_left_alone_when_asked(tasks_app: Any) -> None:
    assert tasks_app.engine_running
    assert gc.get_freeze_count() == 0  # also: no earlier server of this process left it frozen


def test_status_names_match_the_model() -> None:
    from jupyter_tasks.handlerbase import TASK_STATUSES
    from jupyter_tasks.models import TaskStatus

    assert tuple(s.value for s in TaskStatus) == TASK_STATUSES


def test_loading_the_extension_leaves_the_engine_unimported() -> None:
    """Server start pays for the routes only; pydantic and the engine load on first use."""
    import subprocess
    import sys

    code = (
        "import sys, jupyter_server.serverapp\n"
        "before = {m for m in ('pydantic', 'jupyter_tasks.orchestrator') if m in sys.modules}\n"
        "import jupyter_tasks, jupyter_tasks.extension, jupyter_tasks.handlers\n"
        "after = {m for m in ('pydantic', 'jupyter_tasks.orchestrator') if m in sys.modules}\n"
        "print(sorted(after - before))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
