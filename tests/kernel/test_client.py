"""The kernel API against a real server: handles, results, failures, cancel, sweeps, discovery."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import jupyter_tasks as jt
from jupyter_tasks.client import Client, describe_call
from jupyter_tasks.discovery import discover
from jupyter_tasks.errors import TaskNotFound
from jupyter_tasks.handles import RemoteTraceback
from jupyter_tasks.transport import EventStreamClosed, HttpBackend, LoopThread, Spool

from .conftest import HANG, TasksServer

# Code defined the way a notebook defines it: in ``__main__``, so cloudpickle sends it by value.
NOTEBOOK_CODE = """
import time

class Measurement:
    def __init__(self, name, values):
        self.name = name
        self.values = values

    def mean(self):
        return sum(self.values) / len(self.values)

def measure(name, n):
    import jupyter_tasks as jt
    for i in range(n):
        jt.set_progress((i + 1) / n, f"sample {i + 1}/{n}")
    return Measurement(name, list(range(n)))

def sleepy(seconds):
    time.sleep(seconds)
    return seconds

def fragile(x):
    return 1 / x
"""


@pytest.fixture(scope="module")
def nb() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(NOTEBOOK_CODE, "<notebook>", "exec"), namespace)
    return namespace


def test_run_brings_back_an_instance_of_a_notebook_class(
    client: Client, nb: dict[str, Any]
) -> None:
    handle = jt.run(nb["measure"], "temperature", 4)
    assert len(handle.task_id) == 32
    value = handle.result(timeout=HANG)
    assert isinstance(value, nb["Measurement"])
    assert value.mean() == 1.5
    assert handle.status == "completed"
    assert handle.progress == 1.0
    assert handle.message == "sample 4/4"
    assert handle.description == "measure('temperature', 4)"


def test_options_never_take_keyword_names_from_the_function(client: Client) -> None:
    def takes_option_names(description: str, priority: int, timeout: int, retries: int) -> str:
        return f"{description}-{priority}-{timeout}-{retries}"

    runner = jt.run.options(description="options apart", priority=7, timeout=60, tags=["opt"])
    handle = runner(takes_option_names, description="d", priority=1, timeout=2, retries=3)
    assert handle.result(timeout=HANG) == "d-1-2-3"
    task = handle.task
    assert (task["description"], task["priority"], task["timeout_seconds"]) == (
        "options apart",
        7,
        60,
    )
    assert task["tags"] == ["opt"]
    # a function whose first parameter is called ``fn`` still gets it
    assert jt.run(lambda fn: fn * 2, fn=21).result(timeout=HANG) == 42


def test_failure_raises_task_failed_with_the_remote_traceback(
    client: Client, nb: dict[str, Any]
) -> None:
    handle = jt.run(nb["fragile"], 0)
    with pytest.raises(jt.TaskFailed) as info:
        handle.result(timeout=HANG)
    exc = info.value
    assert exc.remote_type == "ZeroDivisionError"
    assert exc.remote_message == "division by zero"
    assert exc.remote_traceback is not None and "in fragile" in exc.remote_traceback
    assert isinstance(exc.__cause__, RemoteTraceback)
    assert handle.status == "failed"
    assert isinstance(handle.exception(), jt.TaskFailed)


def test_cancel_stops_a_running_task(client: Client, nb: dict[str, Any]) -> None:
    handle = jt.run.options(description="long sleep")(nb["sleepy"], 600)
    started = threading.Event()

    def watch(task: dict[str, Any]) -> None:
        if task["status"] == "running":
            started.set()

    cached = client.hub.watch(handle.task_id, watch)
    if "running" in (handle.status, (cached or {}).get("status")):
        started.set()
    assert started.wait(HANG)  # the live subscription tells when a worker took it
    client.hub.unwatch(handle.task_id, watch)
    assert handle.cancel() is True
    with pytest.raises(jt.TaskCancelled) as info:
        handle.result(timeout=HANG)
    assert isinstance(info.value, concurrent.futures.CancelledError)
    assert handle.cancelled()
    assert handle.cancel() is False  # already finished


def test_map_keeps_input_order_and_is_found_again(client: Client, nb: dict[str, Any]) -> None:
    delays = [0.6, 0.4, 0.2, 0.0]
    sweep = jt.map(nb["sleepy"], delays)
    assert sweep.group_id is not None
    assert sweep.results(timeout=HANG) == delays
    finished = [h.task_id for h in sweep.as_completed(timeout=HANG)]
    assert sorted(finished) == sorted(sweep.task_ids)
    again = jt.tasks(group=sweep.group_id)
    assert again.task_ids == sweep.task_ids
    assert again.results(timeout=HANG) == delays
    assert again.counts()["completed"] == 4


def test_map_over_several_iterables_and_failures_in_place(client: Client) -> None:
    sweep = jt.map(lambda a, b: a // b, [10, 20, 30], [2, 0, 3])
    results = sweep.results(timeout=HANG, return_exceptions=True)
    assert results[0] == 5 and results[2] == 10
    assert isinstance(results[1], jt.TaskFailed)
    with pytest.raises(jt.TaskFailed):
        sweep.results()


def test_group_cancel_stops_the_rest(client: Client, nb: dict[str, Any]) -> None:
    sweep = jt.map.options(description="cancel me")(nb["sleepy"], [600] * 4)
    assert sweep.cancel() == 4
    sweep.wait(timeout=HANG)
    assert sweep.counts()["cancelled"] == 4


def test_handle_is_awaitable(client: Client) -> None:
    async def main() -> Any:
        return await jt.run(pow, 2, 10)

    assert asyncio.run(main()) == 1024


def test_submit_get_logs_and_unknown_ids(client: Client, tasks_server: TasksServer) -> None:
    handle = jt.submit("shell", "say hello", {"command": ["echo", "hello from a task"]})
    handle.wait(timeout=HANG)
    assert handle.status == "completed"
    assert "hello from a task" in handle.logs()
    assert jt.get(handle.task_id) is handle  # one handle per task in a kernel
    assert jt.get(handle.task_id[:10]).task_id == handle.task_id
    with pytest.raises(TaskNotFound):
        jt.get("0" * 32)
    with pytest.raises(jt.TaskFailed) as info:
        jt.submit("shell", "fails", {"command": ["false"]}).result(timeout=HANG)
    assert info.value.remote_type == "NonZeroExit"


def test_status_comes_from_the_event_stream(client: Client, nb: dict[str, Any]) -> None:
    handle = jt.run(nb["sleepy"], 0)
    assert client.hub.connected.wait(HANG)
    assert client.hub.mode == "stream"
    handle.wait(timeout=HANG)
    assert client.hub.cached(handle.task_id)["status"] == "completed"


class NoStream(HttpBackend):
    """A server whose event stream is unreachable (a proxy without WebSockets)."""

    async def events(self) -> Any:  # type: ignore[override]
        raise EventStreamClosed("no WebSocket here")
        yield {}


def test_polling_fallback_when_the_stream_is_unavailable(
    tasks_server: TasksServer, nb: dict[str, Any]
) -> None:
    client = Client(NoStream(tasks_server.url, tasks_server.token), LoopThread())
    try:
        handle = client.run(nb["sleepy"], 0.2)
        assert handle.result(timeout=HANG) == 0.2
        assert client.hub.mode == "polling"
    finally:
        client.close()


class DropsTheEnd(HttpBackend):
    """The first connection loses the task's last transition and then breaks."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.connections = 0

    async def events(self) -> Any:  # type: ignore[override]
        self.connections += 1
        first = self.connections == 1
        async for event in super().events():
            if first and event.get("status") == "completed":
                raise EventStreamClosed("dropped: the completion never arrives")
            yield event


def test_reconnect_resynchronises_what_was_missed(
    tasks_server: TasksServer, nb: dict[str, Any]
) -> None:
    backend = DropsTheEnd(tasks_server.url, tasks_server.token)
    client = Client(backend, LoopThread())
    try:
        assert client.hub.connected.wait(HANG)
        handle = client.run(nb["sleepy"], 1.5)  # up for a while, so it reconnects at once
        assert handle.result(timeout=HANG) == 1.5
        assert handle.status == "completed"
        deadline = time.monotonic() + HANG
        while not (backend.connections >= 2 and client.hub.mode == "stream"):
            assert time.monotonic() < deadline, "the stream did not come back"
            client.hub.connected.wait(0.05)
    finally:
        client.close()


def test_discovery_order(tasks_server: TasksServer) -> None:
    env = {"JUPYTER_TASKS_URL": "http://example.invalid/", "JUPYTER_TASKS_TOKEN": "t"}
    found = discover(env)
    assert found is not None and (found.url, found.token) == ("http://example.invalid/", "t")
    hub = {"JUPYTERHUB_SERVICE_URL": tasks_server.url, "JUPYTERHUB_API_TOKEN": tasks_server.token}
    found = discover(hub)
    assert found is not None and found.source == "JupyterHub"
    parent = {
        "JPY_PARENT_PID": str(tasks_server.proc.pid),
        "JUPYTER_RUNTIME_DIR": str(tasks_server.runtime_dir),
    }
    found = discover(parent)
    assert found is not None and found.url == tasks_server.url
    assert found.token == tasks_server.token
    assert discover({"JPY_PARENT_PID": str(2**22 + 12345)}) is None
    assert discover({}) is None


def test_spool_never_holds_both_copies(tmp_path: Path) -> None:
    spool = Spool(limit=10)
    spool.write(b"12345")
    assert spool.in_memory
    spool.write(b"x" * 100)
    assert not spool.in_memory
    source, size = spool.rewind()
    assert size == 105 and source.read() == b"12345" + b"x" * 100
    spool.close()


def test_describe_call_is_cheap_and_bounded() -> None:
    big = bytes(50_000_000)
    assert describe_call(len, (big,), {"n": 3, "s": "x" * 100}) == (
        "len(<bytes>, n=3, s='xxxxxxxxxxxxxxxxxxxxxxx…')"
    )
    assert os.environ.get("JUPYTER_TASKS_URL") is None  # tests never leak the variable
