"""The ``/tasks/events`` WebSocket: snapshot first, then events in ``seq`` order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError
from tornado.websocket import WebSocketClientConnection

from jupyter_tasks.eventstream import CLOSE_FELL_BEHIND, EventsHandler

from .conftest import HANG, Api, error_of, python_task

pytestmark = pytest.mark.usefixtures("tasks_app")

FINAL = {"completed", "failed", "cancelled"}


async def receive(ws: WebSocketClientConnection) -> dict[str, Any] | None:
    message = await asyncio.wait_for(ws.read_message(), HANG)
    return None if message is None else json.loads(message)


async def events_until_final(ws: WebSocketClientConnection, ids: set[str]) -> list[dict[str, Any]]:
    events = []
    pending = set(ids)
    while pending:
        event = await receive(ws)
        assert event is not None, "stream closed early"
        events.append(event)
        if event["status"] in FINAL:
            pending.discard(event["task_id"])
    return events


async def test_snapshot_then_events_in_seq_order(
    api: Api, jp_ws_fetch: Callable[..., Any], tmp_path: Path
) -> None:
    release = tmp_path / "release"
    blocker = await api.submit(**python_task("jt_helpers:wait_for_file", str(release)))
    ws = await jp_ws_fetch("tasks", "events")
    snapshot = await receive(ws)
    assert snapshot is not None and snapshot["event"] == "snapshot"
    assert [t["task_id"] for t in snapshot["tasks"]] == [blocker["task_id"]]

    ids = {(await api.submit(**python_task("operator:add", i, i)))["task_id"] for i in range(5)}
    release.touch()
    events = await events_until_final(ws, ids | {blocker["task_id"]})
    ws.close()

    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for event in events:
        assert set(event) >= {"event", "seq", "task_id", "status", "progress", "message", "task"}
        assert event["task"]["task_id"] == event["task_id"]
    for task_id in ids:
        statuses = [
            e["status"] for e in events if e["task_id"] == task_id and e["event"] == "transition"
        ]
        assert statuses == ["created", "running", "completed"], statuses


async def test_a_burst_arrives_whole_and_in_order_on_every_socket(
    api: Api, jp_ws_fetch: Callable[..., Any]
) -> None:
    """Events that queue up go out together, in one write, and their text is made once
    for all sockets: each socket still gets every event as one message, in order."""
    sockets = [await jp_ws_fetch("tasks", "events") for _ in range(2)]
    for ws in sockets:
        snapshot = await receive(ws)
        assert snapshot is not None and snapshot["event"] == "snapshot"
    batch = await api.json(
        "POST",
        "batch",
        body={"tasks": [python_task("operator:add", i, 1) for i in range(300)]},
        expect=201,
    )
    ids = [t["task_id"] for t in batch["tasks"]]
    seen = [await events_until_final(ws, set(ids)) for ws in sockets]
    for events in seen:
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        for task_id in ids:
            statuses = [
                e["status"]
                for e in events
                if e["task_id"] == task_id and e["event"] == "transition"
            ]
            assert statuses == ["created", "running", "completed"], statuses
    # Both saw the same events, the same text: a later one may have caught more progress.
    transitions = [[e for e in events if e["event"] == "transition"] for events in seen]
    assert transitions[0] == transitions[1]
    for ws in sockets:
        ws.close()


async def test_filters_by_task_id_and_group(api: Api, jp_ws_fetch: Callable[..., Any]) -> None:
    ws_one = await jp_ws_fetch("tasks", "events", params={"task_id": "f" * 32})
    assert (await receive(ws_one)) == {"event": "snapshot", "tasks": []}
    batch = await api.json(
        "POST",
        "batch",
        body={"tasks": [python_task("operator:add", i, 1) for i in range(3)]},
        expect=201,
    )
    group = batch["tasks"][0]["group"]
    ws_group = await jp_ws_fetch("tasks", "events", params={"group": group})
    snapshot = await receive(ws_group)
    assert snapshot is not None and snapshot["event"] == "snapshot"
    ids = {t["task_id"] for t in batch["tasks"]}
    unfinished = {t["task_id"] for t in snapshot["tasks"]}
    assert unfinished <= ids
    other = await api.submit(**python_task("operator:add", 0, 0))
    events = await events_until_final(ws_group, unfinished) if unfinished else []
    assert all(e["task_id"] in ids for e in events)

    ws_task = await jp_ws_fetch("tasks", "events", params={"task_id": other["task_id"]})
    first = await receive(ws_task)
    assert first is not None and first["event"] == "snapshot"
    if first["tasks"]:
        events = await events_until_final(ws_task, {other["task_id"]})
        assert {e["task_id"] for e in events} == {other["task_id"]}
    for ws in (ws_one, ws_group, ws_task):
        ws.close()


async def test_filters_by_status(api: Api, jp_ws_fetch: Callable[..., Any], tmp_path: Path) -> None:
    release = tmp_path / "release"
    blocker = await api.submit(**python_task("jt_helpers:wait_for_file", str(release)))
    ends = [("status", "completed"), ("status", "failed")]
    ws_ends = await jp_ws_fetch("tasks", "events", params=ends)
    assert (await receive(ws_ends)) == {"event": "snapshot", "tasks": []}  # nothing ended yet
    ws_running = await jp_ws_fetch("tasks", "events", params={"status": "running"})
    snapshot = await receive(ws_running)
    assert snapshot is not None
    assert [t["task_id"] for t in snapshot["tasks"]] == [blocker["task_id"]]

    ok = await api.submit(**python_task("operator:add", 1, 1))
    bad = await api.submit(**python_task("jt_helpers:boom", "no"))
    release.touch()
    seen: dict[str, str] = {}
    while len(seen) < 3:
        event = await receive(ws_ends)
        assert event is not None, "stream closed early"
        assert event["event"] == "transition" and event["status"] in {"completed", "failed"}
        seen[event["task_id"]] = event["status"]
    assert seen == {
        blocker["task_id"]: "completed",
        ok["task_id"]: "completed",
        bad["task_id"]: "failed",
    }
    ws_ends.close()
    ws_running.close()

    with pytest.raises(HTTPClientError) as refused:
        await jp_ws_fetch("tasks", "events", params={"status": "finished"})
    assert refused.value.code == 400


async def test_subscriber_that_falls_behind_is_closed(
    api: Api, jp_ws_fetch: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(EventsHandler, "max_pending", 5)
    ws = await jp_ws_fetch("tasks", "events")
    assert (await receive(ws)) is not None  # the snapshot
    # One batch publishes its 20 "created" events at once: more than 5 pending.
    body = {"tasks": [python_task("operator:add", i, 1) for i in range(20)]}
    await api.json("POST", "batch", body=body, expect=201)
    while (await receive(ws)) is not None:
        pass
    assert ws.close_code == CLOSE_FELL_BEHIND


async def test_stream_ends_with_1001_when_the_server_stops(
    tasks_app: Any, jp_ws_fetch: Callable[..., Any]
) -> None:
    ws = await jp_ws_fetch("tasks", "events")
    assert (await receive(ws)) is not None
    await tasks_app.stop_extension()
    assert (await receive(ws)) is None
    assert ws.close_code == 1001


async def test_bad_requests_are_json_400(api: Api, jp_ws_fetch: Callable[..., Any]) -> None:
    with pytest.raises(HTTPClientError) as bad:
        await jp_ws_fetch("tasks", "events", params={"task_id": "not-an-id"})
    assert bad.value.code == 400
    response = await api("GET", "events")  # plain HTTP, no Upgrade
    assert response.code == 400 and "WebSocket" in error_of(response)
