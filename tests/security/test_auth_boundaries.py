"""Who may call what: every route and verb refuses strangers, foreign origins and foreign hosts.

Against a real server (``hostile_server``): no token, a wrong token, a browser session
(cookie + XSRF) sent from a foreign ``Origin``, and a ``Host`` header the server does not
answer to (Jupyter Server's DNS-rebinding check, active because the server listens on
loopback only), on every HTTP route with every verb and on the ``/tasks/events``
WebSocket upgrade.  Each refusal changes nothing.

Requests without a valid token carry a matching XSRF cookie and header: Jupyter Server
checks XSRF before it looks at who is asking, so without the pair a POST would be
refused by the XSRF check and the authentication would go untested.  Every refusal is
checked to come from the check under test, not from XSRF.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import websocket
from support import HANG, ServerProcess, python_task

from .conftest import anonymous, server_log_errors

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]
#: Every route (``{id}`` is a real, finished task) and a path that is no route.
ROUTES = [
    "tasks",
    "tasks/batch",
    "tasks/blobs",
    "tasks/types",
    "tasks/health",
    "tasks/openapi.json",
    "tasks/events",
    "tasks/{id}",
    "tasks/{id}/cancel",
    "tasks/{id}/rerun",
    "tasks/{id}/result",
    "tasks/{id}/logs",
    "tasks/no-such-route",
]
XSRF = "0123456789abcdef" * 2
#: An XSRF cookie and header that match, and nothing else.
NO_TOKEN: dict[str, str] = {"Cookie": f"_xsrf={XSRF}", "X-XSRFToken": XSRF}
WRONG_TOKENS = {
    "wrong": {"Authorization": "token not-the-token"},
    "empty": {"Authorization": "token "},
    "bearer-wrong": {"Authorization": "Bearer 0123456789abcdef"},
    "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
    "forged-cookie": {"Cookie": "username-127-0-0-1=2|1:0|10:1|x|4:e30=|deadbeef"},
    "long": {"Authorization": "token " + "a" * 8000},
    "doubled": {"Authorization": "token token not-the-token"},
}
FOREIGN_ORIGINS = ["http://evil.example", "null", "http://127.0.0.1.evil.example"]
FOREIGN_HOSTS = [
    "evil.example",
    "evil.example:{port}",
    "127.0.0.1.evil.example:{port}",
    "localhost.evil.example",
    "192.168.1.10:{port}",
    "0.0.0.0:{port}",
]
BODY = json.dumps(python_task("operator:add", 1, 2)).encode()
_PAIRS = [("tasks/health", "GET"), ("tasks", "POST")]


def _port(server: ServerProcess) -> str:
    return server.url.rsplit(":", 1)[1].split("/", 1)[0]


def _url(server: ServerProcess, route: str, task_id: str) -> str:
    return route.replace("{id}", task_id)


@pytest.fixture(scope="module")
def state(hostile_server: ServerProcess, finished_task: dict[str, Any]) -> Iterator[Any]:
    """What refusals must leave alone: the list of tasks and the finished task."""

    def snapshot() -> Any:
        listed = hostile_server.request("GET", "tasks", params={"limit": 1000}).json()
        blobs = sorted(p.name for p in hostile_server.base.rglob("blobs/*"))
        return [t["task_id"] for t in listed["tasks"]], blobs

    before = snapshot()
    yield finished_task
    assert snapshot() == before, "a refused request changed the server's state"
    task = hostile_server.request("GET", f"tasks/{finished_task['task_id']}").json()
    assert task["status"] == "completed"
    assert server_log_errors(hostile_server) == []


def assert_refused(response: requests.Response, statuses: tuple[int, ...] = (403,)) -> None:
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    if response.request.method != "HEAD" and response.content:
        assert "task_id" not in response.text  # no task data leaks in a refusal
        assert "xsrf" not in response.text.lower(), response.text  # refused by the check under test


def ws_connect(server: ServerProcess, **kw: Any) -> websocket.WebSocket:
    url = server.url.replace("http://", "ws://") + "tasks/events"
    return websocket.create_connection(url, timeout=HANG, **kw)


def ws_refused(server: ServerProcess, **kw: Any) -> int:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        ws_connect(server, **kw).close()
    return int(refused.value.status_code)


# -- no token, wrong tokens ------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("headers", [NO_TOKEN, WRONG_TOKENS["wrong"]], ids=["none", "wrong"])
def test_every_route_and_verb_refuses_without_a_valid_token(
    hostile_server: ServerProcess, state: Any, route: str, method: str, headers: dict[str, str]
) -> None:
    path = _url(hostile_server, route, state["task_id"])
    body = BODY if method in ("POST", "PUT", "PATCH") else None
    headers = with_xsrf(headers)
    assert_refused(anonymous(hostile_server, method, path, headers=headers, data=body))


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
@pytest.mark.parametrize("headers", WRONG_TOKENS.values(), ids=WRONG_TOKENS)
def test_malformed_credentials_are_refused(
    hostile_server: ServerProcess, state: Any, method: str, headers: dict[str, str]
) -> None:
    body = BODY if method == "POST" else None
    path = "tasks" if method != "DELETE" else f"tasks/{state['task_id']}"
    headers = with_xsrf(headers)
    assert_refused(anonymous(hostile_server, method, path, headers=headers, data=body))


def with_xsrf(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` plus a matching XSRF cookie and header (kept beside any other cookie)."""
    cookie = "; ".join(c for c in (headers.get("Cookie"), f"_xsrf={XSRF}") if c)
    return {**headers, "Cookie": cookie, "X-XSRFToken": XSRF}


@pytest.mark.parametrize("headers", [NO_TOKEN, *WRONG_TOKENS.values()], ids=["none", *WRONG_TOKENS])
def test_event_stream_refuses_without_a_valid_token(
    hostile_server: ServerProcess, state: Any, headers: dict[str, str]
) -> None:
    header = [f"{k}: {v}" for k, v in with_xsrf(headers).items()]
    assert ws_refused(hostile_server, header=header) == 403


def test_a_token_in_the_url_is_checked_too(hostile_server: ServerProcess, state: Any) -> None:
    xsrf = with_xsrf({})
    assert_refused(anonymous(hostile_server, "GET", "tasks?token=not-the-token"))
    response = anonymous(hostile_server, "POST", "tasks?token=wrong", headers=xsrf, data=BODY)
    assert_refused(response)


@pytest.mark.parametrize("route", ["tasks", "tasks/health", "tasks/{id}/cancel"])
def test_cors_preflight_grants_nothing(
    hostile_server: ServerProcess, state: Any, route: str
) -> None:
    """OPTIONS is open (a preflight carries no credentials) but lets no foreign origin in."""
    response = anonymous(
        hostile_server,
        "OPTIONS",
        _url(hostile_server, route, state["task_id"]),
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code in (200, 204, 403, 405)
    assert "Access-Control-Allow-Origin" not in response.headers
    assert b"task_id" not in response.content


# -- browser sessions from a foreign origin ------------------------------------------------


@pytest.fixture(scope="module")
def session(hostile_server: ServerProcess) -> dict[str, str]:
    """A logged-in browser: its cookie, plus the XSRF pair a page of the server would send."""
    login = hostile_server.request("GET", "tasks/health")
    cookie = login.headers["Set-Cookie"].split(";", 1)[0]
    return with_xsrf({"Cookie": cookie})


def test_the_session_works_from_its_own_origin(
    hostile_server: ServerProcess, session: dict[str, str]
) -> None:
    """The control: the same cookie, same origin, is accepted (GET, and the WebSocket)."""
    origin = hostile_server.url.rstrip("/")
    response = anonymous(
        hostile_server, "GET", "tasks/health", headers={**session, "Origin": origin}
    )
    assert response.status_code == 200, response.text
    ws = ws_connect(hostile_server, cookie=session["Cookie"], origin=origin)
    try:
        assert json.loads(ws.recv())["event"] == "snapshot"
    finally:
        ws.close()


SESSION_CASES = [
    *[(route, method, FOREIGN_ORIGINS[0]) for route in ROUTES for method in METHODS[:-1]],
    *[("tasks", method, origin) for origin in FOREIGN_ORIGINS[1:] for method in ("GET", "POST")],
]


@pytest.mark.parametrize(("route", "method", "origin"), SESSION_CASES)
def test_a_session_from_a_foreign_origin_is_refused(
    hostile_server: ServerProcess,
    state: Any,
    session: dict[str, str],
    route: str,
    method: str,
    origin: str,
) -> None:
    path = _url(hostile_server, route, state["task_id"])
    body = BODY if method in ("POST", "PUT", "PATCH") else None
    headers = {**session, "Origin": origin}
    response = anonymous(hostile_server, method, path, headers=headers, data=body)
    # Jupyter Server answers a cross-origin request 404; the WebSocket handshake route, 403.
    upgrade_route = route == "tasks/events" and method == "GET"
    assert_refused(response, (403,) if upgrade_route else (404,))


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
def test_a_session_websocket_from_a_foreign_origin_is_refused(
    hostile_server: ServerProcess, state: Any, session: dict[str, str], origin: str
) -> None:
    assert ws_refused(hostile_server, cookie=session["Cookie"], origin=origin) == 403


def test_a_session_post_without_xsrf_is_refused(
    hostile_server: ServerProcess, state: Any, session: dict[str, str]
) -> None:
    cookie_only = {"Cookie": session["Cookie"].split(";", 1)[0]}
    response = anonymous(hostile_server, "POST", "tasks", headers=cookie_only, data=BODY)
    assert response.status_code == 403 and "xsrf" in response.text.lower(), response.text


# -- foreign Host headers (DNS rebinding) ----------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}"])
def test_local_host_names_are_answered(hostile_server: ServerProcess, host: str) -> None:
    """The control: the check refuses foreign names, not the server's own."""
    headers = {"Host": host.format(port=_port(hostile_server))}
    assert hostile_server.request("GET", "tasks/health", headers=headers).status_code == 200


HOST_CASES = [
    *[(route, method, FOREIGN_HOSTS[1]) for route in ROUTES for method in METHODS],
    *[(r, m, host) for host in FOREIGN_HOSTS if host != FOREIGN_HOSTS[1] for r, m in _PAIRS],
]


@pytest.mark.parametrize(("route", "method", "host"), HOST_CASES)
def test_a_foreign_host_is_refused_even_with_the_token(
    hostile_server: ServerProcess, state: Any, route: str, method: str, host: str
) -> None:
    path = _url(hostile_server, route, state["task_id"])
    body = BODY if method in ("POST", "PUT", "PATCH") else None
    headers = {"Host": host.format(port=_port(hostile_server))}
    assert_refused(hostile_server.request(method, path, headers=headers, data=body))


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
def test_a_websocket_to_a_foreign_host_is_refused(
    hostile_server: ServerProcess, state: Any, session: dict[str, str], host: str
) -> None:
    host = host.format(port=_port(hostile_server))
    token = [f"Authorization: token {hostile_server.token}"]
    assert ws_refused(hostile_server, header=token, host=host) == 403
    assert ws_refused(hostile_server, cookie=session["Cookie"], host=host) == 403
