"""Credentials stay where they belong.

* The kernel credential (``JUPYTER_TASKS_TOKEN``) opens the ``/tasks`` routes and nothing
  else of the server: not the contents, kernels, sessions, terminals, events or config
  APIs, not the pages, not their WebSockets, not the login form.
* Neither it nor the server's token reaches what tasks see or what the server records:
  tasks that go looking for them (a Python task dumping ``os.environ`` and
  ``/proc/self/environ``, a shell task running ``env``, a pickled callable, a task that
  fails with its environment as the message) find neither, and neither appears in task
  records, results, logs, events, the SQLite files or the server's log.  A canary
  variable set beside them shows the search itself works.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import cloudpickle
import pytest
from support import HANG, Api, python_task, wait_finished
from tornado.httpclient import HTTPClientError, HTTPResponse

CANARY = "canary-7f3a9c1e-visible-to-tasks"

SNOOP = '''
"""Tasks that go looking for credentials."""
import os

import jupyter_tasks


def environ():
    jupyter_tasks.set_progress(0.5, os.environ.get("JT_CANARY"))
    print(dict(os.environ))
    return dict(os.environ)


def proc_environ():
    with open("/proc/self/environ", "rb") as fh:
        text = fh.read().decode("utf-8", "replace")
    print(text)
    return text


def fail_with_environ():
    raise RuntimeError(repr(dict(os.environ)))
'''


def snooping_requests(interpreter: str) -> list[dict[str, Any]]:
    def snoop() -> dict[str, str]:  # pickled by value: defined here, not importable
        import os

        print(dict(os.environ))
        return dict(os.environ)

    payload = base64.b64encode(cloudpickle.dumps((snoop, (), {}))).decode()
    shell = "cat /proc/$$/environ; echo; env; echo $JUPYTER_TASKS_TOKEN $JUPYTER_TOKEN"
    return [
        python_task("jt_snoop:environ"),
        python_task("jt_snoop:proc_environ"),
        python_task("jt_snoop:fail_with_environ"),
        python_task("os:environ.copy"),
        {"task_type": "shell", "description": "env", "parameters": {"command": ["env"]}},
        {
            "task_type": "shell",
            "description": "sh",
            "parameters": {"command": ["sh", "-c", shell], "env": {"EXTRA": "1"}},
        },
        {
            "task_type": "callable",
            "description": "callable",
            "parameters": {"pickle_b64": payload, "python": interpreter},
        },
    ]


@pytest.fixture
def leaky_environment(jp_serverapp: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The server's token where servers often find it (set before any worker starts)."""
    token = str(jp_serverapp.identity_provider.token)
    assert token
    for name in ("JUPYTER_TOKEN", "JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN"):
        monkeypatch.setenv(name, token)
    monkeypatch.setenv("JT_CANARY", CANARY)
    return {"server token": token}


@pytest.fixture
def snoop_api(leaky_environment: dict[str, str], request: pytest.FixtureRequest) -> Api:
    api: Api = request.getfixturevalue("api")  # starts the engine: after the environment
    return api


async def read_events(ws: Any, task_ids: set[str], into: list[str]) -> None:
    """Every message of the stream until each of ``task_ids`` has finished."""
    pending = set(task_ids)
    while pending:
        message = await ws.read_message()
        assert message is not None, "the event stream closed"
        into.append(message)
        event = json.loads(message)
        if event.get("status") in ("completed", "failed", "cancelled"):
            pending.discard(event["task_id"])


async def test_tasks_find_no_credentials_and_none_is_recorded(
    snoop_api: Api,
    tasks_app: Any,
    leaky_environment: dict[str, str],
    jp_root_dir: Path,
    jp_ws_fetch: Callable[..., Any],
    tasks_config: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = snoop_api
    secrets = {**leaky_environment, "kernel token": tasks_app.kernel_token}
    assert os.environ["JUPYTER_TASKS_TOKEN"] == secrets["kernel token"]
    (jp_root_dir / "jt_snoop.py").write_text(textwrap.dedent(SNOOP))

    ws = await jp_ws_fetch("tasks", "events")
    messages = [await ws.read_message()]  # the snapshot: subscribed before submitting
    ids = [(await api.submit(**r))["task_id"] for r in snooping_requests(sys.executable)]
    await asyncio.wait_for(read_events(ws, set(ids), messages), HANG)
    ws.close()

    seen: dict[str, bytes] = {}
    for task_id in ids:
        task = await wait_finished(tasks_app, task_id)
        seen[f"record {task_id}"] = json.dumps(task).encode()
        for parts, accept in [
            ((task_id,), "application/json"),
            ((task_id, "logs"), "text/plain"),
            ((task_id, "result"), "application/json"),
            ((task_id, "result"), "application/octet-stream"),
        ]:
            response = await api("GET", *parts, headers={"Accept": accept})
            seen[f"GET {'/'.join(parts)} ({accept})"] = response.body
    seen["list"] = (await api("GET", params={"limit": 1000})).body
    seen["events"] = "\n".join(messages).encode()
    db = Path(tasks_config["db_path"])
    for path in [*db.parent.rglob("*")]:
        if path.is_file():
            seen[f"file {path.relative_to(db.parent)}"] = path.read_bytes()
    log = caplog.text
    assert f"/tasks/{ids[0]}" in log, "the server's log was not captured"

    statuses = {json.loads(seen[f"record {i}"])["status"] for i in ids}
    assert statuses <= {"completed", "failed"}, statuses
    everything = b"\n".join(seen.values())
    assert CANARY.encode() in everything, "the tasks' environment never came back"
    for where in ("events", "list"):
        assert CANARY.encode() in seen[where], where  # the progress message carries it
    assert any(CANARY.encode() in v for k, v in seen.items() if k.startswith("file ")), "disk"
    for name, secret in secrets.items():
        leaks = [where for where, data in seen.items() if secret.encode() in data]
        assert leaks == [], f"the {name} appears in {leaks}"
    assert secrets["kernel token"] not in log
    # Jupyter Server itself prints its URL with the token once at start; nothing else may.
    lines = [line for line in log.splitlines() if secrets["server token"] in line]
    assert all("?token=" in line for line in lines), lines


# -- the kernel credential opens /tasks only ---------------------------------------------


class TestKernelTokenScope:
    """A server with the pages and APIs a user runs (Lab, terminals) besides the tasks."""

    @pytest.fixture
    def jp_server_config(self, tasks_config: dict[str, Any]) -> dict[str, Any]:
        extensions = {"jupyter_tasks": True, "jupyterlab": True, "jupyter_server_terminals": True}
        return {"ServerApp": {"jpserver_extensions": extensions}, "TasksApp": tasks_config}

    async def test_kernel_token_opens_nothing_but_tasks(
        self,
        api: Api,
        tasks_app: Any,
        jp_serverapp: Any,
        jp_fetch: Callable[..., Any],
        jp_ws_fetch: Callable[..., Any],
        jp_root_dir: Path,
    ) -> None:
        token = tasks_app.kernel_token
        forms = {
            "token": {"Authorization": f"token {token}"},
            "bearer": {"Authorization": f"Bearer {token}"},
        }
        assert (await api("GET", "health", headers=forms["token"])).code == 200
        response = await api("GET", headers=forms["bearer"])
        assert response.code == 200
        assert "username-" not in response.headers.get("Set-Cookie", "")  # no session minted

        async def fetch(method: str, *parts: str, **kw: Any) -> HTTPResponse:
            kw.setdefault("follow_redirects", False)
            if method in ("POST", "PUT", "PATCH"):
                kw.setdefault("body", "{}")
            try:
                response: HTTPResponse = await jp_fetch(
                    *parts, method=method, allow_nonstandard_methods=True, **kw
                )
            except HTTPClientError as exc:
                assert exc.response is not None, exc
                response = exc.response
            return response

        targets: list[tuple[str, tuple[str, ...], str | None]] = [
            ("GET", ("api", "contents"), None),
            ("GET", ("api", "contents", "jt_helpers.py"), None),
            (
                "PUT",
                ("api", "contents", "planted.py"),
                '{"type": "file", "format": "text", "content": "x"}',
            ),
            ("PATCH", ("api", "contents", "jt_helpers.py"), '{"path": "moved.py"}'),
            ("DELETE", ("api", "contents", "jt_helpers.py"), None),
            ("GET", ("api", "kernels"), None),
            ("POST", ("api", "kernels"), '{"name": "python3"}'),
            ("GET", ("api", "sessions"), None),
            ("POST", ("api", "sessions"), '{"path": "a.ipynb", "type": "notebook"}'),
            ("GET", ("api", "kernelspecs"), None),
            ("GET", ("api", "terminals"), None),
            ("POST", ("api", "terminals"), "{}"),
            ("GET", ("api", "status"), None),
            ("GET", ("api", "me"), None),
            ("GET", ("api", "config", "notebook"), None),
            ("PATCH", ("api", "config", "notebook"), '{"x": 1}'),
            ("POST", ("api", "events"), '{"schema_id": "x", "version": 1, "data": {}}'),
            ("GET", ("api", "nbconvert"), None),
            ("GET", ("lab", "api", "settings"), None),
            ("GET", ("lab", "api", "workspaces"), None),
            ("GET", ("files", "jt_helpers.py"), None),
            ("GET", ("lab",), None),
            ("GET", ("lab", "tree", "jt_helpers.py"), None),
        ]
        for parts in [
            ("api", "contents"),
            ("api", "terminals"),
            ("lab",),
            ("lab", "api", "settings"),
        ]:
            assert (await fetch("GET", *parts)).code == 200, parts  # the server token opens them
        for name, headers in forms.items():
            for method, parts, body in targets:
                response = await fetch(method, *parts, headers=headers, body=body)
                where = (name, method, "/".join(parts), response.code)
                if response.code == 302:  # a page: sent to the login form
                    assert "login" in response.headers["Location"], where
                else:
                    assert response.code == 403, where
                assert "username-" not in response.headers.get("Set-Cookie", ""), where
        for method, parts, body in targets[:3]:  # in the URL, where Jupyter takes its own token
            response = await fetch(method, *parts, params={"token": token}, body=body)
            assert response.code == 403, (method, parts, response.code)

        for parts in [
            ("api", "kernels", "0" * 8 + "-0000-4000-8000-" + "0" * 12, "channels"),
            ("api", "events", "subscribe"),
            ("terminals", "websocket", "1"),
        ]:
            with pytest.raises(HTTPClientError) as refused:
                await jp_ws_fetch(*parts, headers=forms["token"])
            assert refused.value.code == 403, parts

        # The login form does not take the kernel credential for a password.
        xsrf = "0123456789abcdef" * 2
        form = urlencode({"password": token, "_xsrf": xsrf})
        response = await fetch(
            "POST", "login", body=form, headers={"Authorization": "", "Cookie": f"_xsrf={xsrf}"}
        )
        assert response.code != 302, response.headers.get("Location")
        assert "username-" not in response.headers.get("Set-Cookie", "")

        # Nothing happened: no kernel, no terminal, the files as they were.
        assert list(jp_serverapp.kernel_manager.list_kernel_ids()) == []
        assert (jp_root_dir / "jt_helpers.py").exists()
        assert not (jp_root_dir / "planted.py").exists()
        assert not (jp_root_dir / "moved.py").exists()
        terminals = jp_serverapp.web_app.settings.get("terminal_manager")
        assert terminals is None or not terminals.list()
