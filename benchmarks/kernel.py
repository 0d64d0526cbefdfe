"""Event latency: a transition on the server -> the widget model update in the kernel.

Starts a Jupyter server with the extension, starts a kernel through it (so the
kernel finds the server exactly as in JupyterLab) and, inside that kernel, runs
short tasks one after another, each shown as a live row.  For every task it
records when the server finished it (``finished_at``) and when the row's model
changed (the bar turning "success").  Next to it, a client polling
``GET /tasks/{id}`` every second (random phase) records when it first saw the
task finished.

    python benchmarks/kernel.py [--tasks 60] [--poll 1.0]

Not part of the test suite; the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

HANG = 120.0


def _timestamp(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _poll_until_finished(backend: Any, task_id: str, interval: float) -> float:
    """A naive client: ``GET`` every ``interval`` seconds; returns when it saw the end."""
    next_poll = time.time() + random.uniform(0, interval)
    while True:
        time.sleep(max(0.0, next_poll - time.time()))
        if backend.get(task_id)["status"] in ("completed", "failed", "cancelled"):
            return time.time()
        next_poll += interval


def _timed_events(client: Any, arrivals: dict[tuple[str, str], float]) -> None:
    """Note when each transition reaches the kernel, to split the latency in two."""
    source = client.backend.events

    async def events() -> Any:
        async for event in source():
            if event.get("event") == "transition":
                arrivals[(event["task_id"], event["status"])] = time.time()
            yield event

    client.backend.events = events


def _probe(client: Any, index: int, poll: float) -> tuple[str, float, float | None, float]:
    """One task shown as a row: (task id, finished_at, row turned green, poller saw it)."""
    import jupyter_tasks as jt
    from jupyter_tasks.widget import TaskRow

    seen: dict[str, float] = {}
    handle = jt.run.options(description=f"latency probe {index}")(time.sleep, 0.3)
    row = TaskRow(handle)
    row.bar.observe(lambda change: seen.setdefault(change["new"], time.time()), ["bar_style"])
    polled: list[float] = []

    def poller() -> None:
        polled.append(_poll_until_finished(client.backend, handle.task_id, poll))

    thread = threading.Thread(target=poller)
    thread.start()
    handle.wait(HANG)
    thread.join(HANG)
    return handle.task_id, _timestamp(handle.task["finished_at"]), seen.get("success"), polled[0]


def measure(tasks: int = 60, poll: float = 1.0) -> dict[str, Any]:
    """Run in a kernel: per task, seconds from the server's transition to each client."""
    import jupyter_tasks.client as jtc

    client = jtc.default_client()
    arrivals: dict[tuple[str, str], float] = {}
    _timed_events(client, arrivals)
    client.hub.connected.wait(HANG)
    out: dict[str, Any] = {"stream": [], "polled": [], "server": [], "kernel": [], "skipped": 0}
    for index in range(tasks):
        task_id, finished_at, row_at, polled_at = _probe(client, index, poll)
        arrived = arrivals.get((task_id, "completed"))
        if row_at is None or arrived is None:  # finished before the row existed
            out["skipped"] += 1
            continue
        out["stream"].append(row_at - finished_at)
        out["server"].append(arrived - finished_at)
        out["kernel"].append(row_at - arrived)
        out["polled"].append(polled_at - finished_at)
    out["mode"] = client.hub.mode
    return out


# -- the harness: a server, a kernel it starts, the measurement inside ------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _request(url: str, token: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("Authorization", f"token {token}")
    with urllib.request.urlopen(req, timeout=HANG) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def start_server(base: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """A server with the extension, its own directories and a clean environment."""
    for name in ("root", "runtime", "data", "config"):
        (base / name).mkdir(parents=True, exist_ok=True)
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_TASKS_", "JPY_"))}
    env.update(
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTER_DATA_DIR=str(base / "data"),
        JUPYTER_CONFIG_DIR=str(base / "config"),
    )
    cmd = [
        sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--port={port}", f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={base / 'root'}",
        "--ServerApp.jpserver_extensions=jupyter_tasks=True",
    ]  # fmt: skip
    log = open(base / "server.log", "wb")  # noqa: SIM115 - handed to the server process
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if _request(url, token, "GET", "tasks/health")["healthy"]:
                return proc, url, token
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the server did not start; see {base / 'server.log'}")


def run_in_kernel(url: str, token: str, runtime: Path, tasks: int, poll: float) -> dict[str, Any]:
    """Start a kernel through the server and run ``measure`` in it."""
    from jupyter_client.blocking.client import BlockingKernelClient

    kernel_id = _request(url, token, "POST", "api/kernels", {"name": "python3"})["id"]
    connection = runtime / f"kernel-{kernel_id}.json"
    kc = BlockingKernelClient()
    try:
        deadline = time.monotonic() + HANG
        while time.monotonic() < deadline:  # connect once the kernel has answered the server
            state = _request(url, token, "GET", f"api/kernels/{kernel_id}")["execution_state"]
            if state != "starting" and connection.exists():
                break
            time.sleep(0.1)
        kc.load_connection_file(str(connection))
        kc.start_channels()
        kc.wait_for_ready(timeout=HANG)
        code = (
            "import importlib.util, json\n"
            f"spec = importlib.util.spec_from_file_location('bench_kernel', {__file__!r})\n"
            "bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench)\n"
            f"print('RESULT ' + json.dumps(bench.measure({tasks}, {poll})))\n"
        )
        out: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))

        kc.execute_interactive(code, timeout=HANG * 10, output_hook=hook)
        text = "".join(out)
        line = next((ln for ln in text.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(f"the measurement failed in the kernel:\n{text}")
        return dict(json.loads(line[len("RESULT ") :]))
    finally:
        kc.stop_channels()
        _request(url, token, "DELETE", f"api/kernels/{kernel_id}")


def _quantiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99, ordered[-1]


def report(result: dict[str, Any], poll: float) -> None:
    rows = [
        ("event stream -> widget", result["stream"]),
        ("  server -> kernel", result["server"]),
        ("  kernel -> widget", result["kernel"]),
        (f"{poll:g} s polling", result["polled"]),
    ]
    n = len(result["stream"])
    print(f"transition on the server -> seen in the kernel ({n} tasks, {result['mode']} mode)")
    print(f"{'client':<24}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for name, values in rows:
        p50, p99, top = _quantiles(values)
        print(f"{name:<24}{p50 * 1000:>10.1f}{p99 * 1000:>10.1f}{top * 1000:>10.1f}")
    p99_stream = _quantiles(result["stream"])[1] * 1000
    verdict = "met" if p99_stream <= 20 else "MISSED"
    print(f"target p99 <= 20 ms: {verdict} ({p99_stream:.1f} ms); skipped {result['skipped']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=60, help="tasks to time")
    parser.add_argument("--poll", type=float, default=1.0, help="polling client's period (s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jt-bench-") as tmp:
        proc, url, token = start_server(Path(tmp))
        try:
            result = run_in_kernel(url, token, Path(tmp) / "runtime", args.tasks, args.poll)
        finally:
            proc.terminate()
            try:
                proc.wait(HANG)
            except subprocess.TimeoutExpired:
                proc.kill()
    report(result, args.poll)


if __name__ == "__main__":
    main()
