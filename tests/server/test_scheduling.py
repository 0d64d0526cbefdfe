"""What the API shows of scheduling: priority order and a full queue."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import HANG, Api, error_of, python_task, wait_finished

pytestmark = pytest.mark.usefixtures("tasks_app")


async def wait_running(jp_ws_fetch: Callable[..., Any], task_id: str) -> None:
    """Until the task is running, learned from the event stream."""
    ws = await jp_ws_fetch("tasks", "events", params={"task_id": task_id})
    try:
        snapshot = json.loads(await asyncio.wait_for(ws.read_message(), HANG))
        if any(t["status"] == "running" for t in snapshot["tasks"]):
            return
        while True:
            event = json.loads(await asyncio.wait_for(ws.read_message(), HANG))
            if event["status"] == "running":
                return
            assert event["status"] == "created", event
    finally:
        ws.close()


@pytest.mark.tasks_config(max_workers=1)
async def test_priority_order_with_one_worker(
    api: Api, tasks_app: Any, jp_ws_fetch: Callable[..., Any], tmp_path: Path
) -> None:
    release = tmp_path / "release"
    blocker = await api.submit(**python_task("jt_helpers:wait_for_file", str(release)))
    await wait_running(jp_ws_fetch, blocker["task_id"])
    order = [(1, "low"), (5, "mid"), (10, "first top"), (3, "lowish"), (10, "second top")]
    ids = []
    for priority, name in order:
        task = await api.submit(
            **python_task("jt_helpers:noop", priority=priority, description=name)
        )
        ids.append(task["task_id"])
    release.touch()
    finished = [await wait_finished(tasks_app, task_id) for task_id in ids]
    started = sorted(finished, key=lambda t: t["started_at"])
    assert [t["description"] for t in started] == [
        "first top",
        "second top",
        "mid",
        "lowish",
        "low",
    ]


@pytest.mark.tasks_config(max_workers=1, max_queue_size=2)
async def test_full_queue_is_503_with_retry_after_while_healthy(
    api: Api, tasks_app: Any, jp_ws_fetch: Callable[..., Any], tmp_path: Path
) -> None:
    release = tmp_path / "release"
    blocker = await api.submit(**python_task("jt_helpers:wait_for_file", str(release)))
    await wait_running(jp_ws_fetch, blocker["task_id"])
    queued = [await api.submit(**python_task("jt_helpers:noop")) for _ in range(2)]

    response = await api("POST", body=python_task("jt_helpers:noop"))
    assert response.code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert "queue is full" in error_of(response)
    batch = {"tasks": [python_task("jt_helpers:noop")]}
    response = await api("POST", "batch", body=batch)
    assert response.code == 503 and int(response.headers["Retry-After"]) >= 1
    response = await api("POST", queued[0]["task_id"], "rerun")
    assert response.code == 503

    health = await api.json("GET", "health")
    assert health["healthy"] is True and health["accepting"] is False
    assert health["queued"] == 2 and health["running"] == 1

    release.touch()
    for task in [blocker, *queued]:
        assert (await wait_finished(tasks_app, task["task_id"]))["status"] == "completed"
    health = await api.json("GET", "health")
    assert health["accepting"] is True and health["queued"] == 0
    await api.submit(**python_task("jt_helpers:noop"))
