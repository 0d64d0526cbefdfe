"""Servers in their own process: memory of an upload, a restart, what a real kernel sees."""

from __future__ import annotations

import ast
import json
import pickle
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from support import PeakRSS

from .conftest import HANG, ServerProcess, python_task, wait_done_ws

MiB = 1 << 20


def chunks(total: int, size: int = MiB) -> Iterator[bytes]:
    block = b"\x5a" * size
    for _ in range(total // size):
        yield block


def test_100_mb_blob_upload_leaves_server_memory_flat(
    server_process: Callable[..., ServerProcess],
) -> None:
    server = server_process({"max_workers": 1})
    warm = server.request("POST", "tasks/blobs", data=b"warm-up" * 1000)  # first-use imports
    assert warm.status_code == 201
    before = psutil.Process(server.pid).memory_info().rss
    with PeakRSS(server.pid) as rss:
        # A generator: sent chunked, with no Content-Length, so the server cannot preallocate.
        response = server.request("POST", "tasks/blobs", data=chunks(100 * MiB))
    assert response.status_code == 201, response.text
    blob = response.json()
    assert blob["size"] == 100 * MiB
    stored = Path(server.tasks["db_path"]).parent
    files = [p for p in stored.rglob(blob["blob_id"]) if p.is_file()]
    assert len(files) == 1 and files[0].stat().st_size == 100 * MiB
    growth = rss.peak - before
    print(f"server RSS {before / MiB:.1f} MiB before, peak growth {growth / MiB:.1f} MiB")
    assert growth < 25 * MiB, f"server RSS grew by {growth / MiB:.1f} MiB during the upload"


def test_restart_keeps_results_and_runs_queued_tasks(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    db = str(tmp_path / "shared" / "tasks.db")
    release = tmp_path / "release"
    first = server_process({"db_path": db, "max_workers": 1}, name="first")
    done = first.request("POST", "tasks", json=python_task("operator:add", 2, 3)).json()
    assert wait_done_ws(first, [done["task_id"]])[done["task_id"]]["status"] == "completed"

    blocker = first.request(
        "POST", "tasks", json=python_task("jt_helpers:wait_for_file", str(release))
    ).json()
    batch = first.request(
        "POST",
        "tasks/batch",
        json={"tasks": [python_task("operator:mul", i, 10) for i in range(3)]},
    ).json()["tasks"]
    assert {t["status"] for t in batch} == {"created"}
    first.stop()

    release.touch()  # whatever the restart does with the blocker, it can finish now
    second = server_process({"db_path": db, "max_workers": 1}, name="second")
    kept = second.request("GET", f"tasks/{done['task_id']}/result")
    assert kept.json() == {"type": "int", "repr": "5", "value": 5}
    raw = second.request(
        "GET",
        f"tasks/{done['task_id']}/result",
        headers={"Accept": "application/octet-stream"},
    )
    assert pickle.loads(raw.content) == 5

    finished = wait_done_ws(second, [t["task_id"] for t in batch] + [blocker["task_id"]])
    for i, task in enumerate(batch):
        assert finished[task["task_id"]]["status"] == "completed"
        value = second.request("GET", f"tasks/{task['task_id']}/result").json()["value"]
        assert value == i * 10
    assert finished[blocker["task_id"]]["status"] in ("completed", "failed")


KERNEL_CODE = """
import json, os, urllib.request, urllib.error
def _jt_status(path):
    url, token = os.environ["JUPYTER_TASKS_URL"], os.environ["JUPYTER_TASKS_TOKEN"]
    request = urllib.request.Request(url + path, headers={"Authorization": "token " + token})
    try:
        return urllib.request.urlopen(request, timeout=60).status
    except urllib.error.HTTPError as exc:
        return exc.code
_jt_seen = json.dumps({
    "url": os.environ["JUPYTER_TASKS_URL"],
    "health": _jt_status("tasks/health"),
    "contents": _jt_status("api/contents"),
    "kernels": _jt_status("api/kernels"),
})
"""


def test_a_kernel_gets_a_url_and_a_token_for_tasks_only(
    server_process: Callable[..., ServerProcess],
) -> None:
    from jupyter_client.blocking.client import BlockingKernelClient

    server = server_process({"max_workers": 1})
    kernel = server.request("POST", "api/kernels", json={"name": "python3"})
    assert kernel.status_code == 201, kernel.text
    kernel_id = kernel.json()["id"]
    client = BlockingKernelClient()
    client.load_connection_file(str(server.runtime / f"kernel-{kernel_id}.json"))
    client.start_channels()
    try:
        # The answer comes back in the execute reply (user_expressions), on the shell channel,
        # where ZeroMQ queues the request until the kernel is up: no readiness polling.
        msg_id = client.execute(KERNEL_CODE, silent=True, user_expressions={"seen": "_jt_seen"})
        while True:
            reply = client.get_shell_msg(timeout=HANG)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
    finally:
        client.stop_channels()
        server.request("DELETE", f"api/kernels/{kernel_id}")
    assert reply["content"]["status"] == "ok", reply["content"]
    expression = reply["content"]["user_expressions"]["seen"]
    assert expression["status"] == "ok", expression
    seen = json.loads(ast.literal_eval(expression["data"]["text/plain"]))
    assert seen == {"url": server.url, "health": 200, "contents": 403, "kernels": 403}


def test_stop_leaves_no_worker_processes(server_process: Callable[..., ServerProcess]) -> None:
    server = server_process({"max_workers": 2})
    task = server.request("POST", "tasks", json=python_task("jt_helpers:noop")).json()
    wait_done_ws(server, [task["task_id"]])
    children = psutil.Process(server.pid).children(recursive=True)
    assert children, "the local executor should have worker processes"
    server.stop()
    _, alive = psutil.wait_procs(children, timeout=HANG)
    assert not alive, [p.cmdline() for p in alive]


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_oversized_blob_is_413_before_it_is_stored(
    server_process: Callable[..., ServerProcess], declared: bool
) -> None:
    server = server_process({"max_workers": 1, "max_blob_bytes": 4 * MiB})
    body: Any = b"x" * (8 * MiB) if declared else chunks(8 * MiB, 64 * 1024)
    started = time.monotonic()
    try:
        response = server.request("POST", "tasks/blobs", data=body)
    except requests.ConnectionError:
        pytest.skip("the client did not read the early answer before the server closed")
    assert response.status_code == 413, response.text
    assert "larger than the limit" in response.json()["message"]
    assert time.monotonic() - started < HANG
    blobs = Path(server.tasks["db_path"]).parent
    assert not [p for p in blobs.rglob("*") if p.is_file() and p.stat().st_size >= 4 * MiB]
