"""Hostile input: every malformed request gets a 4xx JSON ``{"message"}`` naming what is wrong.

Never a 5xx: bodies that are not UTF-8, too large or absurdly nested, huge strings,
wrong types in every field of a ``TaskRequest`` (and of every built-in task type's
parameters), paths that leave the root directory (``..``, absolute paths, symlinks out,
symlink loops), unknown task types and task ids that are not ids, on every route.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
import requests
import websocket
from support import HANG, ServerProcess, wait_done_ws

from .conftest import BATCH_LIMIT, BLOB_LIMIT, server_log_errors

BODY_LIMIT = 1 << 20  # TasksApp.max_body_bytes, the default
#: Longest error message worth reading; a reply never echoes a huge input whole.
MESSAGE_MAX = 2_000
ROUTE_LIMITS = [("tasks", BODY_LIMIT), ("tasks/batch", BATCH_LIMIT), ("tasks/blobs", BLOB_LIMIT)]
VALID = {"task_type": "python", "description": "ok", "parameters": {"callable": "builtins:len"}}


def refused(response: requests.Response, status: int, prefix: str = "") -> str:
    """Assert a JSON error answer with ``status`` whose message starts with ``prefix``."""
    assert response.status_code == status, (status, response.status_code, response.text[:500])
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    message = response.json()["message"]
    assert isinstance(message, str) and message.startswith(prefix), (prefix, message[:500])
    assert len(message) <= MESSAGE_MAX, len(message)
    return message


def submit(server: ServerProcess, body: Any, path: str = "tasks") -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return server.request("POST", path, data=data, headers={"Content-Type": "application/json"})


def with_request(**fields: Any) -> dict[str, Any]:
    """``VALID`` with ``fields`` replaced (``...`` removes a field)."""
    request = {**VALID, **fields}
    return {k: v for k, v in request.items() if v is not ...}


# -- bodies ------------------------------------------------------------------------------------

NOT_UTF8 = {
    "latin-1": '{"task_type": "python", "description": "caf\xe9"}'.encode("latin-1"),
    "bom-utf16": json.dumps(VALID).encode("utf-16"),
    "lone-ff": b"\xff\xfe{}",
    "overlong-slash": b'{"description": "\xc0\xaf"}',
    "encoded-surrogate": b'{"description": "\xed\xa0\x80"}',
    "truncated-sequence": b'{"description": "\xe2\x82"}',
}


@pytest.mark.parametrize("route", ["tasks", "tasks/batch"])
@pytest.mark.parametrize("raw", NOT_UTF8.values(), ids=NOT_UTF8.keys())
def test_bodies_not_utf8_are_400(hostile_server: ServerProcess, route: str, raw: bytes) -> None:
    message = refused(submit(hostile_server, raw, route), 400, "body:")
    assert "UTF-8" in message


NESTED = {
    "arrays-unclosed": b"[" * 100_000,
    "arrays-closed": b"[" * 100_000 + b"]" * 100_000,
    "objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "in-parameters": (
        b'{"task_type": "python", "description": "x", "parameters": {"callable": "builtins:len",'
        b' "args": [' + b"[" * 20_000 + b"]" * 20_000 + b"]}}"
    ),
    "in-batch-item": b'{"tasks": [' + b"[" * 50_000 + b"]" * 50_000 + b"]}",
}


@pytest.mark.parametrize("route", ["tasks", "tasks/batch"])
@pytest.mark.parametrize("raw", NESTED.values(), ids=NESTED.keys())
def test_deeply_nested_json_is_400(hostile_server: ServerProcess, route: str, raw: bytes) -> None:
    message = refused(submit(hostile_server, raw, route), 400, "body:")
    assert "JSON" in message


def test_nesting_that_parses_is_stored_and_served(hostile_server: ServerProcess) -> None:
    """What the parser accepts, every later step (store, list, events, worker) copes with."""
    nested: Any = []
    for _ in range(300):
        nested = [nested]
    raw = (
        b'{"task_type": "python", "description": "deep", "parameters": {"callable": '
        b'"builtins:len", "args": [' + json.dumps(nested).encode() + b"]}}"
    )
    response = submit(hostile_server, raw)
    assert response.status_code == 201, response.text[:300]
    task_id = response.json()["task_id"]
    done = wait_done_ws(hostile_server, [task_id])[task_id]  # through the event stream
    assert done["status"] == "completed", done["error"]
    assert hostile_server.request("GET", f"tasks/{task_id}/result").json()["value"] == 1
    fetched = hostile_server.request("GET", f"tasks/{task_id}")
    assert fetched.status_code == 200 and fetched.json()["parameters"]["args"] == [nested]
    assert hostile_server.request("GET", "tasks", params={"limit": 5}).status_code == 200


@pytest.mark.parametrize(("route", "limit"), ROUTE_LIMITS)
def test_bodies_over_the_limit_are_413(
    hostile_server: ServerProcess, route: str, limit: int
) -> None:
    body = b'{"description": "' + b"x" * limit + b'"}'
    message = refused(submit(hostile_server, body, route), 413, "body:")
    assert str(limit) in message


def raw_post(server: ServerProcess, route: str, headers: str, body: bytes = b"") -> bytes:
    """POST over a bare socket (sending only ``body``, however much is announced); the
    status line and headers of the answer."""
    host = server.url.split("//", 1)[1].split("/", 1)[0]
    address, port = host.rsplit(":", 1)
    head = (
        f"POST /{route} HTTP/1.1\r\nHost: {host}\r\nAuthorization: token {server.token}\r\n"
        f"Content-Type: application/json\r\n{headers}\r\n"
    )
    with socket.create_connection((address, int(port)), timeout=HANG) as sock:
        sock.sendall(head.encode() + body)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(65536)
            assert chunk, reply
            reply += chunk
    return reply


@pytest.mark.parametrize(("route", "limit"), ROUTE_LIMITS)
def test_chunked_bodies_over_the_limit_are_413(
    hostile_server: ServerProcess, route: str, limit: int
) -> None:
    """No Content-Length to check up front: the bytes are counted as they arrive.

    One byte more than the limit is sent, in chunks, and the body is left unfinished:
    the answer comes without the server waiting for the rest.
    """
    size = 64 << 10
    sizes = [size] * (limit // size) + [limit % size + 1]
    body = b"".join(b"%x\r\n%s\r\n" % (n, b" " * n) for n in sizes if n)
    reply = raw_post(hostile_server, route, "Transfer-Encoding: chunked\r\n", body)
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]


@pytest.mark.parametrize("route", [route for route, _ in ROUTE_LIMITS])
def test_declared_length_over_the_limit_is_413_before_the_body(
    hostile_server: ServerProcess, route: str
) -> None:
    """A request announcing 1 TB gets its 413 without the server waiting for any of it."""
    reply = raw_post(hostile_server, route, "Content-Length: 1000000000000\r\n")
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]


@pytest.mark.parametrize("suffix", ["cancel", "rerun"])
def test_task_action_bodies_are_capped_too(
    hostile_server: ServerProcess, finished_task: dict[str, Any], suffix: str
) -> None:
    """Cancel and rerun take no body; one over ``max_body_bytes`` is refused, not buffered."""
    route = f"tasks/{finished_task['task_id']}/{suffix}"
    refused(submit(hostile_server, b"x" * (BODY_LIMIT + 1), route), 413, "body:")


# -- huge strings ------------------------------------------------------------------------------

HUGE = "x" * 600_000
HUGE_STRINGS = {
    "description": (with_request(description=HUGE), "description:"),
    "task_type": (with_request(task_type=HUGE), "unknown task_type"),
    "tag": (with_request(tags=[HUGE]), "tags.0:"),
    "field-name": ({**VALID, HUGE: 1}, "x"),
    "callable": (with_request(parameters={"callable": HUGE}), "parameters.callable:"),
    "cwd": (with_request(parameters={"callable": "builtins:len", "cwd": HUGE}), "parameters.cwd:"),
    "parameter-name": (
        with_request(parameters={"callable": "builtins:len", HUGE: 1}),
        "parameters.x",
    ),
    "shell-env-name": (
        {
            "task_type": "shell",
            "description": "x",
            "parameters": {"command": "true", "env": {HUGE + "=": "1"}},
        },
        "parameters.env:",
    ),
}


@pytest.mark.parametrize(("body", "prefix"), HUGE_STRINGS.values(), ids=HUGE_STRINGS.keys())
def test_huge_strings_are_400_with_a_short_message(
    hostile_server: ServerProcess, body: dict[str, Any], prefix: str
) -> None:
    refused(submit(hostile_server, body), 400, prefix)


# -- wrong types in every field ------------------------------------------------------------

NOT_INT: list[Any] = ["5", True, 1.0, 5.5, None, [], {}]
WRONG_FIELDS: list[tuple[str, Any]] = [
    *[("task_type", v) for v in (None, 1, True, 1.5, [], {"python": 1})],
    *[("task_type", v) for v in ("", "nope", "PYTHON", " python", "python\x00", "../python")],
    *[("description", v) for v in (None, 1, True, 1.5, [], {}, "", "x" * 10_001)],
    *[("parameters", v) for v in (None, 1, True, "x", [], [["callable", "builtins:len"]])],
    *[("priority", v) for v in [*NOT_INT, 0, 11, -1, 2**63, 10**100]],
    *[("timeout_seconds", v) for v in [v for v in NOT_INT if v is not None]],
    *[("timeout_seconds", v) for v in (0, -1, -0.5, 0.5, 2**31, 2**64, 10**100, "inf")],
    *[("max_retries", v) for v in [*NOT_INT, -1, 11, 2**63]],
    *[("tags", v) for v in (None, "tag", 1, {}, [1], [None], [""], ["x" * 201], ["t"] * 101)],
]


def _field_id(case: tuple[str, Any]) -> str:
    return f"{case[0]}={json.dumps(case[1])[:24]}"


@pytest.mark.parametrize("case", WRONG_FIELDS, ids=map(_field_id, WRONG_FIELDS))
def test_every_request_field_with_a_wrong_value_is_400(
    hostile_server: ServerProcess, case: tuple[str, Any]
) -> None:
    field, value = case
    prefix = "unknown task_type" if field == "task_type" and isinstance(value, str) else field
    refused(submit(hostile_server, with_request(**{field: value})), 400, prefix)


@pytest.mark.parametrize("field", ["task_type", "description"])
def test_missing_required_fields_are_400(hostile_server: ServerProcess, field: str) -> None:
    refused(submit(hostile_server, with_request(**{field: ...})), 400, f"{field}:")


@pytest.mark.parametrize("name", ["prio", "task_id", "status", "group", "__proto__", "é"])
def test_unknown_and_server_owned_fields_are_400(hostile_server: ServerProcess, name: str) -> None:
    refused(submit(hostile_server, {**VALID, name: "x"}), 400, f"{name}:")


@pytest.mark.parametrize(
    "case", WRONG_FIELDS[::4], ids=[f"tasks[2].{_field_id(c)}" for c in WRONG_FIELDS[::4]]
)
def test_wrong_values_in_a_batch_name_the_index(
    hostile_server: ServerProcess, case: tuple[str, Any]
) -> None:
    field, value = case
    items = [VALID, VALID, with_request(**{field: value}), VALID]
    message = refused(submit(hostile_server, {"tasks": items}, "tasks/batch"), 400, "tasks[2]")
    assert field in message


BATCH_SHAPES: list[Any] = [
    [],
    {},
    {"tasks": None},
    {"tasks": {}},
    {"tasks": "x"},
    {"tasks": []},
    {"tasks": [1]},
    {"tasks": [None]},
    {"tasks": [VALID], "extra": 1},
    {"jobs": [VALID]},
]


@pytest.mark.parametrize("body", BATCH_SHAPES, ids=[json.dumps(b)[:30] for b in BATCH_SHAPES])
def test_batch_shapes_are_400(hostile_server: ServerProcess, body: Any) -> None:
    refused(submit(hostile_server, body, "tasks/batch"), 400)


# -- wrong parameters of every built-in task type --------------------------------------------

CALLABLE_OK = {"pickle_b64": "gAR9lC4="}
WRONG_PARAMETERS: list[tuple[str, dict[str, Any], str]] = [
    # python
    *[("python", {"callable": v}, "callable") for v in (None, 1, [], "", "nocolon", "a b:c")],
    *[("python", {"callable": v}, "callable") for v in ("os:system;", ":f", "m:", "m:1f")],
    *[("python", {"callable": "builtins:len", "args": v}, "args") for v in ("x", {}, 1)],
    *[("python", {"callable": "builtins:len", "kwargs": v}, "kwargs") for v in ("x", [], 1)],
    *[("python", {"callable": "builtins:len", "cwd": v}, "cwd") for v in (1, [], True)],
    ("python", {"callable": "builtins:len", "extra": 1}, "extra"),
    # shell
    *[("shell", {"command": v}, "command") for v in (None, 1, [], [1], "", [""], {}, "''")],
    *[("shell", {"command": v}, "command") for v in (["a\x00b"], "a\x00b", '"unclosed')],
    *[("shell", {"command": "true", "cwd": v}, "cwd") for v in (1, ["sub"])],
    *[("shell", {"command": "true", "env": v}, "env") for v in ("A=1", ["A"], {"A": 1})],
    *[("shell", {"command": "true", "env": v}, "env") for v in ({"": "x"}, {"A=B": "x"})],
    ("shell", {"command": "true", "env": {"A": "x\x00"}}, "env"),
    ("shell", {"command": "true", "shell": True}, "shell"),
    # notebook
    *[("notebook", {"path": v}, "path") for v in (None, 1, "", "missing.ipynb", "sub")],
    ("notebook", {"path": "notes.txt"}, "path"),
    *[("notebook", {"path": "inside.ipynb", "parameters": v}, "parameters") for v in ([], 1)],
    *[
        ("notebook", {"path": "inside.ipynb", "parameters": {k: 1}}, "parameters")
        for k in ("1bad", "class", "a-b", "")
    ],
    *[
        ("notebook", {"path": "inside.ipynb", "output_path": v}, "output_path")
        for v in (1, "out.txt", "inside.ipynb", "sub")
    ],
    *[
        ("notebook", {"path": "inside.ipynb", "kernel_name": v}, "kernel_name")
        for v in (1, "../evil", "a b", "", "k" * 101)
    ],
    ("notebook", {"path": "inside.ipynb", "cwd": 1}, "cwd"),
    # callable
    ("callable", {}, "parameters"),
    ("callable", {**CALLABLE_OK, "blob_id": "0" * 32}, "parameters"),
    *[("callable", {"pickle_b64": v}, "pickle_b64") for v in (1, "not base64!", "gAR9lC4")],
    *[("callable", {"blob_id": v}, "blob_id") for v in ("../../etc/passwd", "0" * 32, "A" * 32)],
    *[("callable", {**CALLABLE_OK, "python": v}, "python") for v in (1, "python3", "bin/python")],
    *[
        ("callable", {**CALLABLE_OK, "python": v}, "python")
        for v in ("/nonexistent/python", "/etc/passwd", "/", "/usr/bin/\x00")
    ],
]


@pytest.mark.parametrize(
    "case",
    WRONG_PARAMETERS,
    ids=[f"{t}:{f}={json.dumps(p)[:30]}" for t, p, f in WRONG_PARAMETERS],
)
def test_wrong_parameters_of_every_task_type_are_400(
    hostile_server: ServerProcess, case: tuple[str, dict[str, Any], str]
) -> None:
    task_type, parameters, field = case
    prefix = field if field == "parameters" else f"parameters.{field}"
    body = {"task_type": task_type, "description": "x", "parameters": parameters}
    refused(submit(hostile_server, body), 400, prefix)


# -- paths out of the root directory -------------------------------------------------------

ESCAPES = [
    "..",
    "../",
    "../outside",
    "sub/../..",
    "sub/../../outside",
    "/",
    "/etc",
    "/tmp",
    "link_out",
    "link_out/",
    "link_in/../..",
    "./../server",
]
BROKEN_PATHS = ["loop_a", "loop_a/deeper", "a\x00b", "x" * 5_000, "x/" * 3_000, "\udcff"]


def _path_cases() -> list[tuple[str, str, dict[str, Any]]]:
    cases: list[tuple[str, str, dict[str, Any]]] = []
    for path in ESCAPES + BROKEN_PATHS:
        cases += [
            ("python", "cwd", {"callable": "builtins:len", "cwd": path}),
            ("shell", "cwd", {"command": "true", "cwd": path}),
            ("notebook", "cwd", {"path": "inside.ipynb", "cwd": path}),
            ("notebook", "output_path", {"path": "inside.ipynb", "output_path": path}),
        ]
    for path in [*ESCAPES, *BROKEN_PATHS, "nb_link.ipynb", "link_out/secret.ipynb"]:
        notebook = path if path.endswith(".ipynb") else path.rstrip("/") + "/secret.ipynb"
        cases.append(("notebook", "path", {"path": notebook}))
    cases.append(("notebook", "path", {"path": "../outside/secret.ipynb"}))
    out = {"path": "inside.ipynb", "output_path": "link_out/x.ipynb"}
    cases.append(("notebook", "output_path", out))
    return cases


PATH_CASES = _path_cases()


@pytest.mark.parametrize(
    "case", PATH_CASES, ids=[f"{t}.{f}={json.dumps(p)[:40]}" for t, f, p in PATH_CASES]
)
def test_paths_outside_the_root_are_400(
    hostile_server: ServerProcess, case: tuple[str, str, dict[str, Any]]
) -> None:
    task_type, field, parameters = case
    body = {"task_type": task_type, "description": "x", "parameters": parameters}
    raw = json.dumps(body).encode()  # ASCII escapes: a lone surrogate survives as "\udcff"
    message = refused(submit(hostile_server, raw), 400)
    assert message.startswith((f"parameters.{field}:", "body:")), message
    value = str(parameters[field])
    if value.rstrip("/") in {e.rstrip("/") for e in ESCAPES} or "link_out" in value:
        assert "outside the server's root directory" in message, message
    if value.startswith("loop_a"):
        assert "symlink loop" in message, message


@pytest.mark.parametrize(
    ("task_type", "parameters"),
    [
        ("python", {"callable": "builtins:len", "args": [[1]], "cwd": "link_in"}),
        ("shell", {"command": "true", "cwd": "sub/.."}),
    ],
)
def test_paths_inside_the_root_are_accepted(
    hostile_server: ServerProcess, task_type: str, parameters: dict[str, Any]
) -> None:
    """The control: a symlink within the root and a ``..`` that stays inside are fine."""
    body = {"task_type": task_type, "description": "x", "parameters": parameters}
    assert submit(hostile_server, body).status_code == 201


# -- ids that are not task ids ---------------------------------------------------------------

ID_ROUTES = [
    ("GET", ""),
    ("DELETE", ""),
    ("POST", "/cancel"),
    ("POST", "/rerun"),
    ("GET", "/result"),
    ("GET", "/logs"),
]
NOT_IDS = {
    "word": "not-an-id",
    "short": "0" * 31,
    "long": "0" * 33,
    "upper": "A" * 32,
    "non-hex": "g" * 32,
    "uuid-dashed": "12345678-1234-4234-8234-123456789abc",
    "space": "%20" + "0" * 31,
    "dot-dot": "%2e%2e",
    "nul": "0" * 31 + "%00",
    "unicode": "%C3%A9" * 32,
    "huge": "0" * 5_000,
    "empty": "",
}


#: Every id route with every non-id (``/tasks/`` itself is the collection route).
ID_CASES = [
    pytest.param(method, suffix, task_id, id=f"{method}{suffix}-{name}")
    for name, task_id in NOT_IDS.items()
    for method, suffix in ID_ROUTES
    if task_id or suffix
]


@pytest.mark.parametrize(("method", "suffix", "task_id"), ID_CASES)
def test_ids_that_are_not_ids_are_json_404(
    hostile_server: ServerProcess, method: str, suffix: str, task_id: str
) -> None:
    response = hostile_server.request(method, f"tasks/{task_id}{suffix}")
    refused(response, 404, "task_id:")
    assert "32 lower-case hex" in response.json()["message"]


def test_a_well_formed_unknown_id_is_404_naming_it(hostile_server: ServerProcess) -> None:
    for method, suffix in ID_ROUTES:
        message = refused(hostile_server.request(method, f"tasks/{'0' * 32}{suffix}"), 404)
        assert "0" * 32 in message


def test_bad_unicode_in_paths_and_queries_is_400(hostile_server: ServerProcess) -> None:
    refused(hostile_server.request("GET", "tasks/%ff"), 400)
    refused(hostile_server.request("GET", "tasks/%ff/logs"), 400)
    refused(hostile_server.request("GET", "tasks?status=%ff"), 400)
    refused(hostile_server.request("GET", "tasks?tag=%c0%af"), 400)


QUERIES = [
    ("tasks", {"limit": "0"}, "limit:"),
    ("tasks", {"limit": "1e3"}, "limit:"),
    ("tasks", {"limit": "-1"}, "limit:"),
    ("tasks", {"limit": "9" * 40}, "limit:"),
    ("tasks", {"limit": "\u0661\u0660"}, "limit:"),
    ("tasks", {"status": "sleeping"}, "status:"),
    ("tasks", {"cursor": "x"}, "cursor:"),
    ("tasks", {"cursor": "9" * 30}, "cursor:"),
]


@pytest.mark.parametrize(("route", "params", "prefix"), QUERIES, ids=[str(q[1]) for q in QUERIES])
def test_bad_queries_are_400(
    hostile_server: ServerProcess, route: str, params: dict[str, str], prefix: str
) -> None:
    refused(hostile_server.request("GET", route, params=params), 400, prefix)


@pytest.mark.parametrize("offset", ["-1", "x", "1.5", "1e3", "²", "9" * 30])
def test_bad_log_offsets_are_400(
    hostile_server: ServerProcess, finished_task: dict[str, Any], offset: str
) -> None:
    route = f"tasks/{finished_task['task_id']}/logs"
    refused(hostile_server.request("GET", route, params={"offset": offset}), 400, "offset:")


@pytest.mark.parametrize("task_id", ["x", "0" * 31, "A" * 32, "0" * 33])
def test_event_stream_with_a_bad_task_id_is_400(
    hostile_server: ServerProcess, task_id: str
) -> None:
    url = hostile_server.url.replace("http://", "ws://") + f"tasks/events?task_id={task_id}"
    with pytest.raises(websocket.WebSocketBadStatusException) as refused_ws:
        websocket.create_connection(
            url, header=[f"Authorization: token {hostile_server.token}"], timeout=HANG
        )
    assert refused_ws.value.status_code == 400
    body = refused_ws.value.resp_body
    assert json.loads(body)["message"].startswith("task_id:"), body


# -- afterwards ------------------------------------------------------------------------------


def test_the_server_logged_no_uncaught_error(hostile_server: ServerProcess) -> None:
    """Runs last in this module: nothing above caused an uncaught error or a 5xx."""
    health = hostile_server.request("GET", "tasks/health")
    assert health.status_code == 200 and health.json()["healthy"], health.text
    assert server_log_errors(hostile_server) == []
