"""One real server for the security suite, with a root directory built to be escaped from.

``hostile_server`` is a ``jupyter server`` subprocess (``support.ServerProcess``) shared by
the modules that only send requests: the Host check needs a real socket, and one server
start serves hundreds of parametrized cases.  Its root directory holds symlinks pointing
out of it (a directory, a notebook), a symlink loop, a subdirectory and a notebook; the
directory ``outside`` next to the root is what escapes would reach.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from support import HANG, ServerProcess, python_task, wait_done_ws

#: Body limits of ``hostile_server``: small enough to exceed cheaply.
BATCH_LIMIT = 2 << 20
BLOB_LIMIT = 4 << 20

NOTEBOOK = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture(scope="session")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("security")
    server = ServerProcess(
        base / "server",
        {"max_workers": 1, "max_batch_body_bytes": BATCH_LIMIT, "max_blob_bytes": BLOB_LIMIT},
    )
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.ipynb").write_text(json.dumps(NOTEBOOK))
    root = server.root
    (root / "sub").mkdir()
    (root / "inside.ipynb").write_text(json.dumps(NOTEBOOK))
    (root / "notes.txt").write_text("not a notebook")
    os.symlink(outside, root / "link_out")
    os.symlink(outside / "secret.ipynb", root / "nb_link.ipynb")
    os.symlink(root / "sub", root / "link_in")
    os.symlink(root / "loop_b", root / "loop_a")
    os.symlink(root / "loop_a", root / "loop_b")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def finished_task(hostile_server: ServerProcess) -> dict[str, Any]:
    """A completed task of ``hostile_server`` (for routes that need a real id)."""
    response = hostile_server.request("POST", "tasks", json=python_task("operator:add", 1, 2))
    assert response.status_code == 201, response.text
    task_id = response.json()["task_id"]
    done = wait_done_ws(hostile_server, [task_id])[task_id]
    assert done["status"] == "completed", done
    return done


def anonymous(server: ServerProcess, method: str, path: str, **kw: Any) -> requests.Response:
    """A request that carries only what ``kw`` gives it (no token)."""
    kw.setdefault("timeout", HANG)
    kw.setdefault("allow_redirects", False)
    return requests.request(method, server.url + path, **kw)


def server_log_errors(server: ServerProcess) -> list[str]:
    """Lines of the server's log that tell of an uncaught error or a 5xx answer."""
    text = server.log_path.read_text(errors="replace")
    markers = ("Uncaught exception", "Traceback", "Task exception was never retrieved")
    return [
        line
        for line in text.splitlines()
        if any(m in line for m in markers) or " 500 " in line or " 502 " in line
    ]
