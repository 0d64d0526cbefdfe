"""Every HTTP route of the extension and its status codes, on an in-process server."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from .conftest import Api, error_of, python_task, wait_finished

pytestmark = pytest.mark.usefixtures("tasks_app")


async def test_submit_then_result_as_json_and_pickle(api: Api, tasks_app: Any) -> None:
    response = await api("POST", body=python_task("operator:add", 2, 3, tags=["sum"]))
    assert response.code == 201
    task = json.loads(response.body)
    assert task["status"] == "created"
    assert response.headers["Location"].endswith(f"/tasks/{task['task_id']}")
    assert (await wait_finished(tasks_app, task["task_id"]))["status"] == "completed"

    preview = await api.json("GET", task["task_id"], "result")
    assert preview == {"type": "int", "repr": "5", "value": 5}
    response = await api(
        "GET", task["task_id"], "result", headers={"Accept": "application/octet-stream"}
    )
    assert response.code == 200
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert int(response.headers["Content-Length"]) == len(response.body)
    assert pickle.loads(response.body) == 5  # the test may unpickle; the server never does

    fetched = await api.json("GET", task["task_id"])
    assert fetched["status"] == "completed" and fetched["tags"] == ["sum"]


async def test_shell_output_in_logs_with_offsets(api: Api, tasks_app: Any) -> None:
    task = await api.submit(task_type="shell", parameters={"command": ["echo", "hello from shell"]})
    done = await wait_finished(tasks_app, task["task_id"])
    assert done["status"] == "completed", done

    response = await api("GET", task["task_id"], "logs")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert b"hello from shell" in response.body
    end = int(response.headers["X-Next-Offset"])
    assert end == len(response.body)

    response = await api("GET", task["task_id"], "logs", params={"offset": 6})
    assert response.body == (await api("GET", task["task_id"], "logs")).body[6:]
    response = await api("GET", task["task_id"], "logs", params={"offset": end})
    assert response.body == b"" and response.headers["X-Next-Offset"] == str(end)
    for bad in ("-1", "x", "1.5", "²"):
        response = await api("GET", task["task_id"], "logs", params={"offset": bad})
        assert response.code == 400 and error_of(response).startswith("offset:")


async def test_failed_task_reports_error_and_has_no_result(api: Api, tasks_app: Any) -> None:
    task = await api.submit(**python_task("jt_helpers:boom", "it broke"))
    done = await wait_finished(tasks_app, task["task_id"])
    assert done["status"] == "failed"
    assert done["error"]["type"] == "ValueError" and "it broke" in done["error"]["message"]
    response = await api("GET", task["task_id"], "result")
    assert response.code == 409 and "no result" in error_of(response)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"", "body"),
        (b"\xff\xfe{}", "body"),
        (b"{not json", "body"),
        (b'{"a": NaN}', "body"),
        (b"[1, 2]", "body"),
        (b'"text"', "body"),
        (b"[" * 100_000 + b"]" * 100_000, "body"),
        (b'{"task_type": "python"}', "description"),
        (b'{"task_type": "python", "description": "x", "priority": "5"}', "priority"),
        (b'{"task_type": "python", "description": "x", "priority": 1.0}', "priority"),
        (b'{"task_type": "python", "description": "x", "priority": true}', "priority"),
        (b'{"task_type": "python", "description": "x", "priority": 11}', "priority"),
        (b'{"task_type": "python", "description": "x", "max_retries": 11}', "max_retries"),
        (b'{"task_type": "python", "description": "x", "timeout_seconds": 0}', "timeout_seconds"),
        (b'{"task_type": "python", "description": "", "parameters": {}}', "description"),
        (b'{"task_type": "python", "description": "x", "tags": [1]}', "tags.0"),
        (b'{"task_type": "python", "description": "x", "prio": 2}', "prio"),
        (b'{"task_type": "python", "description": "x", "parameters": {}}', "parameters.callable"),
        (
            b'{"task_type": "python", "description": "x", "parameters": {"callable": "nocolon"}}',
            "parameters.callable",
        ),
    ],
)
async def test_submit_400_names_the_field(api: Api, raw: bytes, field: str) -> None:
    response = await api("POST", raw=raw)
    assert response.code == 400, response.body
    assert error_of(response).startswith(f"{field}:"), error_of(response)


async def test_unknown_types_are_400_listing_allowed(api: Api, tasks_app: Any) -> None:
    response = await api("POST", body={"task_type": "nope", "description": "x"})
    assert response.code == 400
    names = tasks_app.orchestrator.registry.names()
    assert {"callable", "python", "shell"} <= set(names)
    assert f"allowed types: {', '.join(names)}" in error_of(response)


@pytest.mark.tasks_config(allowed_task_types=["python"])
async def test_allowed_task_types_switches_types_off(api: Api) -> None:
    types = await api.json("GET", "types")
    assert [t["name"] for t in types["types"]] == ["python"]
    response = await api("POST", body={"task_type": "shell", "description": "x"})
    assert response.code == 400
    assert "unknown task_type 'shell'; allowed types: python" in error_of(response)


@pytest.mark.tasks_config(max_body_bytes=2048, max_batch_body_bytes=4096, max_blob_bytes=8192)
async def test_bodies_over_their_limits_are_413(api: Api) -> None:
    big = python_task("operator:add", "x" * 3000, "y")
    response = await api("POST", body=big)
    assert response.code == 413 and error_of(response).startswith("body:")
    batch = {"tasks": [python_task("operator:add", "x" * 1000, "y") for _ in range(5)]}
    assert (await api("POST", "batch", body=batch)).code == 413
    assert (await api("POST", "batch", body={"tasks": batch["tasks"][:1]})).code == 201
    assert (await api("POST", "blobs", raw=b"x" * 8193)).code == 413
    assert (await api("POST", "blobs", raw=b"x" * 8192)).code == 201


async def test_types_lists_schemas(api: Api, tasks_app: Any) -> None:
    types = {t["name"]: t for t in (await api.json("GET", "types"))["types"]}
    assert sorted(types) == tasks_app.orchestrator.registry.names()
    assert {"callable", "python", "shell"} <= set(types)
    for entry in types.values():
        assert entry["description"] and entry["parameters_schema"]["type"] == "object"


async def test_health(api: Api) -> None:
    health = await api.json("GET", "health")
    assert health["healthy"] is True and health["accepting"] is True
    assert {"queued", "running", "workers"} <= set(health)


async def test_unknown_ids_and_paths_are_json_404(api: Api) -> None:
    missing = "0" * 32
    for method, parts in [
        ("GET", (missing,)),
        ("DELETE", (missing,)),
        ("POST", (missing, "cancel")),
        ("POST", (missing, "rerun")),
        ("GET", (missing, "result")),
        ("GET", (missing, "logs")),
        ("GET", ("NOT-A-TASK-ID",)),
        ("GET", ("0" * 31,)),
        ("GET", ("A" * 32,)),
        ("POST", ("0" * 33, "cancel")),
        ("GET", ("no", "such", "route")),
        ("POST", ("nothing-here",)),
        ("PATCH", ("nothing-here",)),
    ]:
        response = await api(method, *parts)
        assert response.code == 404, (method, parts, response.code)
        assert error_of(response)


async def test_unsupported_method_is_json_405(api: Api) -> None:
    response = await api("PUT", raw=b"{}")
    assert response.code == 405 and response.headers["Allow"] == "GET, POST"
    assert error_of(response)


async def test_list_filters_and_cursor(api: Api, tasks_app: Any) -> None:
    ids = []
    for i in range(5):
        task = await api.submit(**python_task("operator:add", i, 1, tags=[f"t{i % 2}"]))
        ids.append(task["task_id"])
    await api.submit(task_type="shell", parameters={"command": "true"})
    for task_id in ids:
        await wait_finished(tasks_app, task_id)

    page = await api.json("GET", params={"task_type": "python", "limit": 2})
    assert [t["task_id"] for t in page["tasks"]] == ids[::-1][:2]  # newest first
    seen = [t["task_id"] for t in page["tasks"]]
    while page["next"] is not None:
        page = await api.json(
            "GET", params={"task_type": "python", "limit": 2, "cursor": page["next"]}
        )
        seen += [t["task_id"] for t in page["tasks"]]
    assert seen == ids[::-1]

    tagged = await api.json("GET", params={"tag": "t0"})
    assert sorted(t["task_id"] for t in tagged["tasks"]) == sorted(ids[0::2])
    done = await api.json("GET", "", params={"status": "completed", "task_type": "python"})
    assert len(done["tasks"]) == 5
    assert (await api.json("GET", params={"status": "cancelled"}))["tasks"] == []

    for params, field in [
        ({"status": "sleeping"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ]:
        response = await api("GET", params=params)
        assert response.code == 400 and error_of(response).startswith(f"{field}:"), params


async def test_cancel_rerun_delete(api: Api, tasks_app: Any, tmp_path: Path) -> None:
    release = tmp_path / "release"
    blocker = await api.submit(**python_task("jt_helpers:wait_for_file", str(release)))
    blocker2 = await api.submit(**python_task("jt_helpers:wait_for_file", str(release)))
    queued = await api.submit(**python_task("operator:add", 1, 1, priority=3))

    response = await api("DELETE", queued["task_id"])
    assert response.code == 409 and "cancel it first" in error_of(response)
    cancelled = await api.json("POST", queued["task_id"], "cancel")
    assert cancelled["status"] == "cancelled"
    response = await api("POST", queued["task_id"], "cancel")
    assert response.code == 409 and "already cancelled" in error_of(response)

    rerun = await api("POST", queued["task_id"], "rerun")
    assert rerun.code == 201
    again = json.loads(rerun.body)
    assert again["task_id"] != queued["task_id"] and again["status"] == "created"
    assert again["parameters"] == queued["parameters"] and again["priority"] == 3
    assert rerun.headers["Location"].endswith(f"/tasks/{again['task_id']}")

    running = await api.json("POST", blocker["task_id"], "cancel")  # a running one
    assert running["status"] == "cancelled"
    release.touch()
    await wait_finished(tasks_app, blocker2["task_id"])
    await wait_finished(tasks_app, again["task_id"])

    response = await api("DELETE", again["task_id"])
    assert response.code == 204 and response.body == b""
    assert (await api("GET", again["task_id"])).code == 404
    assert (await api("GET", again["task_id"], "logs")).code == 404
    assert (await api("DELETE", again["task_id"])).code == 404


async def test_batch_keeps_order_and_one_group(api: Api, tasks_app: Any) -> None:
    requests = [python_task("operator:add", i, 0, description=f"item {i}") for i in range(50)]
    reply = await api.json("POST", "batch", body={"tasks": requests}, expect=201)
    tasks = reply["tasks"]
    assert [t["description"] for t in tasks] == [f"item {i}" for i in range(50)]
    groups = {t["group"] for t in tasks}
    assert len(groups) == 1 and None not in groups
    listed = await api.json("GET", params={"group": groups.pop(), "limit": 1000})
    assert len(listed["tasks"]) == 50
    for i, task in enumerate(tasks):
        assert (await wait_finished(tasks_app, task["task_id"]))["status"] == "completed"
        if i % 10 == 0:
            assert (await api.json("GET", task["task_id"], "result"))["value"] == i


async def test_invalid_batch_creates_nothing(api: Api) -> None:
    before = await api.json("GET", params={"limit": 1000})
    requests = [python_task("operator:add", i, 0) for i in range(10)]
    requests[7] = {**requests[7], "priority": 0}
    response = await api("POST", "batch", body={"tasks": requests})
    assert response.code == 400 and error_of(response).startswith("tasks[7].priority:")
    requests[7] = python_task("nocolon", 1)
    response = await api("POST", "batch", body={"tasks": requests})
    assert response.code == 400
    assert error_of(response).startswith("tasks[7].parameters.callable:"), error_of(response)
    for body, start in [
        ({"tasks": []}, "tasks:"),
        ({"tasks": {}}, "body:"),
        ({"tasks": [], "extra": 1}, "body:"),
        ({"jobs": []}, "body:"),
        ({"tasks": [1]}, "tasks[0]:"),
    ]:
        response = await api("POST", "batch", body=body)
        assert response.code == 400 and error_of(response).startswith(start), body
    assert await api.json("GET", params={"limit": 1000}) == before


async def test_blob_upload(api: Api, tasks_app: Any) -> None:
    payload = os.urandom(300_000)
    reply = await api.json("POST", "blobs", raw=payload, expect=201)
    assert reply["size"] == len(payload)
    stored = Path(tasks_app.orchestrator.store.blob_dir) / reply["blob_id"]
    assert stored.read_bytes() == payload


async def test_openapi_document(api: Api, tasks_app: Any) -> None:
    doc = await api.json("GET", "openapi.json")
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/tasks",
        "/tasks/batch",
        "/tasks/blobs",
        "/tasks/types",
        "/tasks/health",
        "/tasks/openapi.json",
        "/tasks/{task_id}",
        "/tasks/{task_id}/cancel",
        "/tasks/{task_id}/rerun",
        "/tasks/{task_id}/result",
        "/tasks/{task_id}/logs",
    }
    schemas = doc["components"]["schemas"]
    variants = schemas["TaskRequest"]["discriminator"]["mapping"]
    assert sorted(variants) == tasks_app.orchestrator.registry.names()
    python = schemas["TaskRequest_python"]["properties"]
    assert python["task_type"]["const"] == "python"
    assert "callable" in python["parameters"]["properties"]
    links = doc["paths"]["/tasks"]["post"]["responses"]["201"]["links"]
    assert {link["operationId"] for link in links.values()} >= {"getTask", "cancelTask"}
    assert "403" in doc["paths"]["/tasks/{task_id}"]["get"]["responses"]
    assert "/tasks/events" in doc["info"]["description"]


async def test_a_number_beyond_a_float_is_400_and_stores_nothing(api: Api) -> None:
    for number in ("1e400", "-1E999"):
        raw = python_task("operator:neg", 0)
        text = json.dumps(raw).replace('"args": [0]', f'"args": [{number}]').encode()
        response = await api("POST", raw=text)
        assert response.code == 400, response.body
        assert error_of(response).startswith("body:") and number in error_of(response)
        batch = b'{"tasks": [' + text + b"]}"
        response = await api("POST", "batch", raw=batch)
        assert response.code == 400 and number in error_of(response)
    assert (await api.json("GET"))["tasks"] == []
    ok = json.dumps(python_task("operator:neg", 0)).replace("[0]", "[1e300]").encode()
    assert (await api("POST", raw=ok)).code == 201


async def test_values_the_store_cannot_hold_are_400(api: Api) -> None:
    too_long = python_task("operator:add", 1, 2, timeout_seconds=2**31)
    response = await api("POST", body=too_long)
    assert response.code == 400 and error_of(response).startswith("timeout_seconds:")
    response = await api(
        "POST", "batch", body={"tasks": [python_task("jt_helpers:noop"), too_long]}
    )
    assert response.code == 400 and error_of(response).startswith("tasks[1].timeout_seconds:")
    lone = b'{"task_type": "python", "description": "\\ud800", "parameters": {}}'
    response = await api("POST", raw=lone)
    assert response.code == 400 and "surrogate" in error_of(response)
    paired = python_task("operator:add", "\U0001f600", "!", description="\U0001f600")
    assert (await api("POST", raw=json.dumps(paired).encode())).code == 201  # ASCII escapes
    for cursor in ("9" * 19, "١٢٣", "-1"):
        response = await api("GET", params={"cursor": cursor})
        assert response.code == 400 and error_of(response).startswith("cursor:"), cursor
    assert (await api("GET", params={"cursor": ""})).code == 200


async def test_log_offset_far_past_the_end_is_empty(api: Api, tasks_app: Any) -> None:
    task = await api.submit(**python_task("jt_helpers:noop"))
    await wait_finished(tasks_app, task["task_id"])
    offset = str(10**18 - 1)
    response = await api("GET", task["task_id"], "logs", params={"offset": offset})
    assert response.code == 200 and response.body == b""
    assert response.headers["X-Next-Offset"] == offset
