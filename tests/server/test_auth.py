"""Authentication and authorization of every route, the WebSocket included."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest
from jupyter_server.auth import Authorizer
from tornado.httpclient import HTTPClientError

from .conftest import Api, error_of, python_task, wait_finished

pytestmark = pytest.mark.usefixtures("tasks_app")

NO_AUTH = {"Authorization": ""}
WRONG = {"Authorization": "token not-the-token"}


def routes(task_id: str) -> list[tuple[str, tuple[str, ...], bytes | None]]:
    """Every HTTP route (and an unknown path), with a body the route would accept."""
    submit = json.dumps(python_task("operator:add", 1, 2)).encode()
    return [
        ("GET", (), None),
        ("POST", (), submit),
        ("POST", ("batch",), json.dumps({"tasks": [json.loads(submit)]}).encode()),
        ("POST", ("blobs",), b"blob"),
        ("GET", ("types",), None),
        ("GET", ("health",), None),
        ("GET", ("openapi.json",), None),
        ("GET", (task_id,), None),
        ("DELETE", (task_id,), None),
        ("POST", (task_id, "cancel"), b""),
        ("POST", (task_id, "rerun"), b""),
        ("GET", (task_id, "result"), None),
        ("GET", (task_id, "logs"), None),
        ("GET", ("no-such-route",), None),
    ]


async def finished_task(api: Api, app: Any) -> str:
    task = await api.submit(**python_task("operator:add", 1, 2))
    await wait_finished(app, task["task_id"])
    return str(task["task_id"])


@pytest.mark.parametrize("headers", [NO_AUTH, WRONG], ids=["no-token", "wrong-token"])
async def test_every_route_refuses_without_valid_credentials(
    api: Api, tasks_app: Any, jp_ws_fetch: Callable[..., Any], headers: dict[str, str]
) -> None:
    task_id = await finished_task(api, tasks_app)
    before = await api.json("GET", params={"limit": 1000})
    for method, parts, body in routes(task_id):
        response = await api(method, *parts, raw=body, headers=headers)
        assert response.code == 403, (method, parts, response.code)
        assert error_of(response)
    with pytest.raises(HTTPClientError) as refused:
        await jp_ws_fetch("tasks", "events", headers=headers)
    assert refused.value.code == 403
    assert await api.json("GET", params={"limit": 1000}) == before  # nothing created
    assert (await api.json("GET", task_id))["status"] == "completed"  # nothing cancelled


async def test_kernel_token_opens_tasks_only(
    api: Api,
    tasks_app: Any,
    jp_fetch: Callable[..., Any],
    jp_ws_fetch: Callable[..., Any],
    jp_serverapp: Any,
    jp_http_port: int,
) -> None:
    token = os.environ["JUPYTER_TASKS_TOKEN"]
    assert token == tasks_app.kernel_token and token != jp_serverapp.identity_provider.token
    assert os.environ["JUPYTER_TASKS_URL"] == f"http://127.0.0.1:{jp_http_port}/a%40b/"
    kernel = {"Authorization": f"token {token}"}

    task = await api.json(
        "POST", body=python_task("operator:add", 1, 2), headers=kernel, expect=201
    )
    await wait_finished(tasks_app, task["task_id"])
    assert (await api.json("GET", task["task_id"], "result", headers=kernel))["value"] == 3
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await api("GET", "health", headers=bearer)).code == 200
    ws = await jp_ws_fetch("tasks", "events", headers=kernel)
    assert json.loads(await ws.read_message())["event"] == "snapshot"
    ws.close()

    for parts in [("api", "contents"), ("api", "kernels"), ("api", "sessions"), ("api", "me")]:
        with pytest.raises(HTTPClientError) as refused:
            await jp_fetch(*parts, headers=kernel)
        assert refused.value.code == 403, parts
    # Only the header counts: a token in the URL ends up in logs.
    response = await api("GET", "health", headers=NO_AUTH, params={"token": token})
    assert response.code == 403


async def test_cookie_session_needs_xsrf_on_post(api: Api) -> None:
    login = await api("GET", "health")
    cookie = login.headers["Set-Cookie"].split(";", 1)[0]
    session = {"Authorization": "", "Cookie": cookie}
    assert (await api("GET", "health", headers=session)).code == 200
    body = python_task("operator:add", 1, 2)
    response = await api("POST", body=body, headers=session)
    assert response.code == 403
    xsrf = "0123456789abcdef" * 2
    with_xsrf = {**session, "Cookie": f"{cookie}; _xsrf={xsrf}", "X-XSRFToken": xsrf}
    assert (await api("POST", body=body, headers=with_xsrf)).code == 201
    wrong = {**with_xsrf, "X-XSRFToken": "f" * 32}
    assert (await api("POST", body=body, headers=wrong)).code == 403
    assert (await api("POST", "blobs", raw=b"x", headers=session)).code == 403


class NoExecuteAuthorizer(Authorizer):
    """Allows watching tasks, refuses running them."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return action != "execute"


class TestAuthorizer:
    @pytest.fixture
    def jp_server_config(self, tasks_config: dict[str, Any]) -> dict[str, Any]:
        return {
            "ServerApp": {
                "jpserver_extensions": {"jupyter_tasks": True},
                "authorizer_class": NoExecuteAuthorizer,
            },
            "TasksApp": tasks_config,
        }

    async def test_execute_refused_reads_allowed(self, api: Api, tasks_app: Any) -> None:
        missing = "0" * 32
        body = python_task("operator:add", 1, 2)
        for method, parts, raw in [
            ("POST", (), json.dumps(body).encode()),
            ("POST", ("batch",), json.dumps({"tasks": [body]}).encode()),
            ("POST", ("blobs",), b"x" * 10),
            ("POST", (missing, "rerun"), b""),
        ]:
            response = await api(method, *parts, raw=raw)
            assert response.code == 403, (method, parts)
            assert "execute" in error_of(response)
        kernel = {"Authorization": f"token {tasks_app.kernel_token}"}
        assert (await api("POST", raw=json.dumps(body).encode(), headers=kernel)).code == 403
        for parts in [(), ("types",), ("health",), ("openapi.json",)]:
            assert (await api("GET", *parts)).code == 200, parts
        assert (await api("GET", missing)).code == 404  # read allowed: the id is just unknown
        assert (await api("POST", missing, "cancel")).code == 404  # write allowed too


async def test_tasks_never_see_the_kernel_credential(api: Api, tasks_app: Any) -> None:
    assert os.environ["JUPYTER_TASKS_TOKEN"]
    for name in ("JUPYTER_TASKS_TOKEN", "JUPYTER_TASKS_URL"):
        task = await api.submit(**python_task("os:getenv", name, "absent"))
        assert (await wait_finished(tasks_app, task["task_id"]))["status"] == "completed"
        assert (await api.json("GET", task["task_id"], "result"))["value"] == "absent"
