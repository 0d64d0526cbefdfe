"""Load on a real server: many clients at once, and an event subscriber that never reads.

Eight clients submit tasks one request at a time while another polls ``/api/status``
and ``/tasks/health`` and a WebSocket subscriber follows ``/tasks/events``: no 5xx, no
"database is locked", every task completed.  The p99 latencies of submit and of
``/api/status`` are printed (the server stays responsive); the only bound asserted on
them catches a hang, not slowness.  8 clients submit 500 tasks each.

Then thousands of tasks report progress while one subscriber never reads: the server
drops it (never buffering without bound), its memory stays bounded, and a subscriber
that reads receives every event.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil
import requests
import websocket
from support import HANG, PeakRSS, ServerProcess

CLIENTS = 8
SUBMITS = 500
TAG = "load"
NOOP = {
    "task_type": "python",
    "description": "no-op under load",
    "parameters": {"callable": "builtins:int", "args": []},
    "tags": [TAG],
}
FINAL = {"completed", "failed", "cancelled"}
#: A p99 above this is a hang, not a slow machine.
HANG_P99 = 10.0
LOCKED = "database is locked"
MiB = 1 << 20


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


class Subscriber(threading.Thread):
    """Follows ``/tasks/events`` and keeps the last status of every task it hears of."""

    def __init__(self, server: ServerProcess) -> None:
        super().__init__(daemon=True)
        url = server.url.replace("http://", "ws://") + "tasks/events"
        # Without the optional wsaccel, websocket-client checks each message's UTF-8 byte
        # by byte in Python (about 0.5 ms a message here), and a reader meant to keep up
        # fell 10,000 events behind a fast engine; decoding the JSON checks it anyway.
        self.ws = websocket.create_connection(
            url,
            header=[f"Authorization: token {server.token}"],
            timeout=HANG,
            skip_utf8_validation=True,
        )
        snapshot = json.loads(self.ws.recv())
        assert snapshot["event"] == "snapshot", snapshot
        self.status: dict[str, str] = {}
        self.finished: set[str] = set()
        self.events = 0
        self.bytes = 0
        self.close_code: int | None = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def run(self) -> None:
        try:
            while True:
                opcode, data = self.ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    self.close_code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                    return
                event = json.loads(data)
                with self._lock:
                    self.events += 1
                    self.bytes += len(data)
                    self.status[event["task_id"]] = event["status"]
                    if event["status"] in FINAL:
                        self.finished.add(event["task_id"])
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc

    def count_finished(self, ids: set[str]) -> int:
        with self._lock:
            return len(self.finished & ids)


class Poller(threading.Thread):
    """Polls ``/api/status`` (timed) and ``/tasks/health`` until stopped."""

    def __init__(self, server: ServerProcess) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.latencies: list[float] = []
        self.codes: list[tuple[str, int, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        session = requests.Session()
        session.headers.update(self.server.headers)
        while not self.stop.is_set():
            for path in ("api/status", "tasks/health", "tasks?limit=20"):
                started = time.perf_counter()
                response = session.get(self.server.url + path, timeout=HANG)
                if path == "api/status":
                    self.latencies.append(time.perf_counter() - started)
                self.codes.append((path, response.status_code, response.text[:300]))
            self.stop.wait(0.02)


def submitter(
    server: ServerProcess,
    count: int,
    ids: list[str],
    latencies: list[float],
    failures: list[tuple[int, str]],
) -> Callable[[], None]:
    def run() -> None:
        session = requests.Session()
        session.headers.update(server.headers)
        for _ in range(count):
            started = time.perf_counter()
            response = session.post(server.url + "tasks", json=NOOP, timeout=HANG)
            latencies.append(time.perf_counter() - started)
            if response.status_code == 201:
                ids.append(response.json()["task_id"])
            else:
                failures.append((response.status_code, response.text[:300]))

    return run


def test_concurrent_clients_submit_poll_and_subscribe(
    server_process: Callable[..., ServerProcess],
) -> None:
    server = server_process({"max_workers": 2})
    log_start = server.log_path.stat().st_size  # start-up (a 503 from health until ready) ends
    subscriber = Subscriber(server)
    subscriber.start()
    poller = Poller(server)
    poller.start()

    ids: list[str] = []
    submit_latencies: list[float] = []
    failures: list[tuple[int, str]] = []
    clients = [
        threading.Thread(
            target=submitter(server, SUBMITS, ids, submit_latencies, failures), daemon=True
        )
        for _ in range(CLIENTS)
    ]
    started = time.monotonic()
    for client in clients:
        client.start()
    for client in clients:
        client.join(HANG)
    assert not any(c.is_alive() for c in clients), "a client hung"
    submitted = time.monotonic() - started
    assert failures == [], failures[:5]
    expected = CLIENTS * SUBMITS
    assert len(ids) == len(set(ids)) == expected

    # Bounded wait for the stream to report every task finished.
    wanted = set(ids)
    deadline = time.monotonic() + HANG
    while subscriber.count_finished(wanted) < expected and subscriber.is_alive():
        assert time.monotonic() < deadline, (
            f"{subscriber.count_finished(wanted)} of {expected} tasks seen finished"
        )
        time.sleep(0.05)
    finished = time.monotonic() - started
    poller.stop.set()
    poller.join(HANG)
    assert subscriber.error is None, subscriber.error
    assert subscriber.close_code is None, f"the subscriber was closed ({subscriber.close_code})"
    assert {subscriber.status[t] for t in wanted} == {"completed"}

    # The store agrees: all of them completed, none left in another state.
    completed: set[str] = set()
    cursor = ""
    while True:
        page = server.request("GET", f"tasks?tag={TAG}&limit=1000&cursor={cursor}")
        assert page.status_code == 200, page.text[:300]
        body = page.json()
        assert {t["status"] for t in body["tasks"]} <= {"completed"}
        completed.update(t["task_id"] for t in body["tasks"])
        if body["next"] is None:
            break
        cursor = body["next"]
    assert completed == wanted

    bad = [(path, code, text) for path, code, text in poller.codes if code != 200]
    assert bad == [], bad[:5]
    assert not any(LOCKED in text for _, _, text in poller.codes)
    with server.log_path.open("rb") as fh:
        fh.seek(log_start)
        log = fh.read().decode(errors="replace")
    assert LOCKED not in log
    assert not re.search(r"\b5\d\d (GET|POST|DELETE) ", log), log[-3000:]

    submit_p99, status_p99 = p99(submit_latencies), p99(poller.latencies)
    print(
        f"\n{CLIENTS} clients x {SUBMITS} submits: submitted in {submitted:.1f} s, "
        f"all completed after {finished:.1f} s; {subscriber.events} events; "
        f"p99 submit {submit_p99 * 1000:.1f} ms, p99 /api/status {status_p99 * 1000:.1f} ms "
        f"({len(poller.latencies)} polls)"
    )
    assert submit_p99 < HANG_P99 and status_p99 < HANG_P99
    subscriber.ws.close()
    subscriber.join(HANG)


# -- a subscriber that never reads ------------------------------------------------------------

#: Tasks of the flood, each reporting progress.  Their three transitions (15,000 events) take
#: a subscriber that never reads well past ``EventsHandler.max_pending`` (10,000 events behind),
#: even after the kernel's socket buffers have taken a few MiB of them.
FLOOD = 5_000
#: Characters in each task's parameters, which every event of the task repeats.
PAD = 1_000
BATCH = 500


def server_sockets(pid: int, port: int) -> list[Any]:
    """The server's TCP connections to the client port ``port``."""
    return [
        c for c in psutil.Process(pid).net_connections("tcp") if c.raddr and c.raddr.port == port
    ]


def drain(ws: websocket.WebSocket) -> tuple[int, int | None]:
    """Read what a socket still holds: (messages, close code or None on EOF or reset)."""
    messages = 0
    try:
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return messages, int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
            if opcode == websocket.ABNF.OPCODE_TEXT:
                messages += 1
    except (websocket.WebSocketConnectionClosedException, ConnectionError):
        return messages, None


def test_a_subscriber_that_never_reads_is_dropped_and_others_keep_up(
    server_process: Callable[..., ServerProcess],
) -> None:
    server = server_process({"max_workers": 2})
    url = server.url.replace("http://", "ws://") + "tasks/events"
    slow = websocket.create_connection(
        url,
        header=[f"Authorization: token {server.token}"],
        timeout=HANG,
        sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)],  # a small window, soon full
    )
    slow_port = slow.sock.getsockname()[1]
    assert server_sockets(server.pid, slow_port)
    fast = Subscriber(server)
    fast.start()
    request = {
        "task_type": "python",
        "description": "progress under a slow subscriber",
        "parameters": {"callable": "jupyter_tasks:set_progress", "args": [0.5, "x" * PAD]},
    }
    for _ in range(3):  # first-use imports and the workers' start
        server.request("POST", "tasks", json=request)
    process = psutil.Process(server.pid)
    before = process.memory_info().rss
    ids: set[str] = set()
    with PeakRSS(server.pid) as rss:
        for _ in range(FLOOD // BATCH):
            reply = server.request("POST", "tasks/batch", json={"tasks": [request] * BATCH})
            assert reply.status_code == 201, reply.text[:300]
            ids.update(t["task_id"] for t in reply.json()["tasks"])
            del reply
        deadline = time.monotonic() + HANG
        while fast.count_finished(ids) < FLOOD and fast.is_alive():
            assert time.monotonic() < deadline, f"{fast.count_finished(ids)} of {FLOOD} seen"
            time.sleep(0.05)
        # Bounded wait for the server to let go of the slow subscriber's socket.
        while server_sockets(server.pid, slow_port):
            assert time.monotonic() < deadline, "the slow subscriber was never dropped"
            time.sleep(0.05)
    after = process.memory_info().rss
    assert fast.error is None and fast.close_code is None, (fast.error, fast.close_code)
    assert {fast.status[t] for t in ids} == {"completed"}
    received, code = drain(slow)
    assert code in (None, 4001), code
    assert received < fast.events
    peak, growth = (rss.peak - before) / MiB, (after - before) / MiB
    # Bounded by design: at most max_pending events (a few kB each here) wait for it, and
    # max_unflushed messages; holding the whole stream would take its size and more.
    print(
        f"\n{FLOOD} tasks, {fast.events} events ({fast.bytes / MiB:.0f} MiB) to the reader; the"
        f" one that never read got {received} before it was dropped (close code {code});"
        f" server RSS peak +{peak:.1f} MiB, after +{growth:.1f} MiB"
    )
    assert peak < 64, f"server RSS peaked {peak:.1f} MiB above where the flood started"
    slow.close()
    fast.ws.close()
    fast.join(HANG)
