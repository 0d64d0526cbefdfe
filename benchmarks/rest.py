"""Side-by-side figures for the REST API; not part of the test suite.

    python benchmarks/rest.py            # full size
    python benchmarks/rest.py --quick    # smaller counts, same table

Each figure is printed next to a reference measured in the same run on the
same machine:

* submit throughput, one request at a time, against an empty authenticated
  extension handler on the same server, the same handler making one durable SQLite
  commit (the least a submit that stores its task before answering does), and Jupyter
  Server's ``/api/status``;
* the no-op round trip (``POST /tasks`` -> ``completed`` seen on the event
  WebSocket, subscribed to tasks' ends as a waiting client does) against a Dask
  ``LocalCluster`` round trip (when ``distributed`` is installed) and a warm
  ``ProcessPoolExecutor``;
* 10,000 no-op tasks through ``POST /tasks/batch`` (1,000 per request) until all
  are completed, against ``ProcessPoolExecutor`` running the same 10,000 calls;
* server start-up with and without the extension (``--startup``).

The sides of each figure are measured by turns, so all see the same stretches
of a noisy machine: the request rates in five rounds, the round trips in three
rounds (only the side measured running), the batches and the pool's runs round
by round (the median is shown).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import http.client
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

NOOP = {"callable": "builtins:int", "args": []}
#: Round trips of the three sides alternate in this many rounds (see ``by_turns``).
TRIP_ROUNDS = 3
#: Rounds of the one-at-a-time request rates, each side in turn.
RATE_ROUNDS = 5

EMPTY_EXTENSION = '''
"""An empty authenticated extension handler: the ceiling for any extension route.

And the same plus one durable SQLite commit: the least a submit that stores its task
before answering must do.
"""
import asyncio
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web


class EmptyHandler(APIHandler):
    auth_resource = "tasks"

    @web.authenticated
    @authorized
    def get(self):
        self.finish("{}")

    @web.authenticated
    @authorized
    def post(self):
        self.finish("{}")


class CommitHandler(APIHandler):
    """The empty handler plus one INSERT committed (WAL, synchronous NORMAL), on a thread of
    its own: the event loop never waits on the disk."""

    auth_resource = "tasks"
    thread = ThreadPoolExecutor(1)
    db = None

    @classmethod
    def insert(cls, body):
        if cls.db is None:
            cls.db = sqlite3.connect("bench-commit.db", isolation_level=None)
            cls.db.execute("PRAGMA journal_mode=WAL")
            cls.db.execute("PRAGMA synchronous=NORMAL")
            cls.db.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body TEXT)")
        cls.db.execute("BEGIN IMMEDIATE")
        cls.db.execute("INSERT INTO t (body) VALUES (?)", (body,))
        cls.db.execute("COMMIT")

    @web.authenticated
    @authorized
    async def post(self):
        body = self.request.body.decode()
        await asyncio.get_running_loop().run_in_executor(self.thread, self.insert, body)
        self.finish("{}")


def _jupyter_server_extension_points():
    return [{"module": "jt_bench_empty"}]


def _load_jupyter_server_extension(serverapp):
    empty = url_path_join(serverapp.base_url, "bench/empty")
    commit = url_path_join(serverapp.base_url, "bench/commit")
    serverapp.web_app.add_handlers(".*$", [(empty, EmptyHandler), (commit, CommitHandler)])
'''


class Server:
    """A Jupyter server in its own process, in a throw-away Jupyter environment."""

    def __init__(self, base: Path, tasks_enabled: bool = True, **tasks: Any) -> None:
        self.base = base
        self.token = secrets.token_hex(16)
        self.tasks_enabled = tasks_enabled
        self.tasks = {"db_path": str(base / "tasks.db"), **tasks}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.started_at = 0.0

    def start(self) -> Server:
        for name in ("config", "data", "runtime", "root"):
            (self.base / name).mkdir(parents=True, exist_ok=True)
        (self.base / "root" / "jt_bench_empty.py").write_text(textwrap.dedent(EMPTY_EXTENSION))
        extensions = {"jupyter_tasks": self.tasks_enabled, "jt_bench_empty": True}
        config = {
            "ServerApp": {
                "jpserver_extensions": extensions,
                "open_browser": False,
                "allow_root": True,
                "port": 0,
                "port_retries": 0,
                "root_dir": str(self.base / "root"),
                "log_level": "WARN",
            },
            "IdentityProvider": {"token": self.token},
            "TasksApp": self.tasks,
        }
        (self.base / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(self.base / "config"),
            "JUPYTER_DATA_DIR": str(self.base / "data"),
            "JUPYTER_RUNTIME_DIR": str(self.base / "runtime"),
            "JUPYTER_PLATFORM_DIRS": "1",
            "PYTHONPATH": os.pathsep.join(
                [str(self.base / "root"), os.environ.get("PYTHONPATH", "")]
            ),
        }
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server"],
            cwd=self.base / "root",
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(self.base / "server.log").open("wb"),
            start_new_session=True,
        )
        return self

    def wait_ready(self, path: str, limit: float = 120.0) -> float:
        """Seconds from start until ``path`` answers 200 (polled: this is a start-up wait)."""
        assert self.proc is not None
        deadline = time.monotonic() + limit
        runtime = self.base / "runtime"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.base / "server.log").read_text()[-3000:]
                raise RuntimeError(f"server exited:\n{log}")
            if not self.port:
                for info in runtime.glob(f"jpserver-{self.proc.pid}.json"):
                    with contextlib.suppress(ValueError):
                        self.port = int(json.loads(info.read_text())["port"])
            if self.port:
                with contextlib.suppress(OSError):
                    status, _ = self.call("GET", path)
                    if status == 200:
                        return time.perf_counter() - self.started_at
            time.sleep(0.01)
        raise TimeoutError(f"{path} not ready after {limit} s")

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}", "Content-Type": "application/json"}

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        conn: http.client.HTTPConnection | None = None,
    ) -> tuple[int, Any]:
        own = conn is None
        conn = conn or self.connection()
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, "/" + path, body=data, headers=self.headers)
        response = conn.getresponse()
        raw = response.read()
        if own:
            conn.close()
        ctype = response.headers.get("Content-Type", "")
        return response.status, json.loads(raw) if raw and "json" in ctype else raw

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(60)


@contextlib.contextmanager
def running(base: Path, **tasks: Any) -> Iterator[Server]:
    server = Server(base, **tasks).start()
    try:
        server.wait_ready("tasks/health")
        yield server
    finally:
        server.stop()


# -- measurements ---------------------------------------------------------------------------


def sequential_rates(
    server: Server, calls: dict[str, tuple[str, str, Any]], count: int, rounds: int
) -> dict[str, float]:
    """Requests per second of each ``(method, path, body)``, one at a time on one keep-alive
    connection each, by turns: ``rounds`` rounds of ``count // rounds`` requests each."""
    conns = {name: server.connection() for name in calls}
    for name, (method, path, body) in calls.items():
        for _ in range(min(200, count)):  # warm-up
            server.call(method, path, body, conns[name])
    spent = dict.fromkeys(calls, 0.0)
    per_round = max(1, count // rounds)
    for _ in range(rounds):
        for name, (method, path, body) in calls.items():
            started = time.perf_counter()
            for _ in range(per_round):
                status, _ = server.call(method, path, body, conns[name])
                assert status in (200, 201), status
            spent[name] += time.perf_counter() - started
    for conn in conns.values():
        conn.close()
    return {name: per_round * rounds / spent[name] for name in calls}


#: The event stream's filter for a client that waits for its tasks to end: no ``created``,
#: ``running`` or progress events to read (see the README's benchmark notes).
ENDS_QUERY = "?status=completed&status=failed&status=cancelled"


def events_socket(server: Server) -> Any:
    import websocket

    # No UTF-8 check of its own (decoding the text refuses bad UTF-8 anyway): without the
    # optional ``wsaccel``, websocket-client checks it byte by byte in Python, which cost
    # more CPU than the server spent on a message and left less of the machine to it.
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{server.port}/tasks/events{ENDS_QUERY}",
        header=[f"Authorization: token {server.token}"],
        timeout=120,
        skip_utf8_validation=True,
    )
    assert json.loads(ws.recv())["event"] == "snapshot"
    return ws


@contextlib.contextmanager
def task_trips(server: Server) -> Iterator[Callable[[], float]]:
    """A no-op round trip: from sending ``POST /tasks`` to reading its ``completed`` event."""
    ws = events_socket(server)
    conn = server.connection()
    request = {"task_type": "python", "description": "no-op", "parameters": NOOP}

    def trip() -> float:
        started = time.perf_counter()
        status, task = server.call("POST", "tasks", request, conn)
        assert status == 201, task
        while True:
            event = json.loads(ws.recv())
            if event["task_id"] == task["task_id"] and event["status"] == "completed":
                return time.perf_counter() - started

    try:
        for _ in range(5):  # the first ones warm the workers up
            trip()
        yield trip
    finally:
        ws.close()
        conn.close()


def by_turns(
    sides: Mapping[
        str, Callable[[], contextlib.AbstractContextManager[Callable[[], float] | None]]
    ],
    count: int,
) -> dict[str, list[float]]:
    """``count`` round trips of each side, in ``TRIP_ROUNDS`` rounds by turns: all sample the
    same stretches of the machine's load, and only the side being measured is running (an
    idle Dask cluster alone keeps a sixth of a core busy).  A side that yields None is
    skipped (Dask not installed)."""
    times: dict[str, list[float]] = {}
    per_round = max(1, count // TRIP_ROUNDS)
    for _ in range(TRIP_ROUNDS):
        for name, side in sides.items():
            with side() as trip:
                if trip is not None:
                    times.setdefault(name, []).extend(trip() for _ in range(per_round))
    return times


def batch_throughput(server: Server, total: int, per_batch: int) -> float:
    """Tasks per second: batches submitted until every task is seen completed.

    The events are read on a thread from the start, as a client keeping up would: one
    that reads only after its last batch falls behind and is dropped by the server.
    """
    ws = events_socket(server)
    conn = server.connection()
    request = {"task_type": "python", "description": "no-op", "parameters": NOOP}
    completed: set[str] = set()
    closed = threading.Event()

    def read() -> None:
        while len(completed) < total:
            message = ws.recv()
            if not message:
                break  # closed
            event = json.loads(message)
            if event.get("status") == "completed":
                completed.add(event["task_id"])
        closed.set()

    reader = threading.Thread(target=read, daemon=True)
    started = time.perf_counter()
    reader.start()
    ids: set[str] = set()
    for _ in range(total // per_batch):
        status, reply = server.call("POST", "tasks/batch", {"tasks": [request] * per_batch}, conn)
        assert status == 201, reply
        ids.update(t["task_id"] for t in reply["tasks"])
    assert closed.wait(600), "the tasks did not complete within 600 s"
    elapsed = time.perf_counter() - started
    assert ids <= completed, f"the event stream ended after {len(completed)} completions"
    ws.close()
    conn.close()
    return total / elapsed


@contextlib.contextmanager
def pool_trips() -> Iterator[Callable[[], float]]:
    with concurrent.futures.ProcessPoolExecutor() as pool:
        pool.submit(int).result()

        def trip() -> float:
            started = time.perf_counter()
            pool.submit(int).result()
            return time.perf_counter() - started

        yield trip


def pool_throughput(total: int) -> float:
    with concurrent.futures.ProcessPoolExecutor() as pool:
        pool.submit(int).result()
        started = time.perf_counter()
        futures = [pool.submit(int) for _ in range(total)]
        for future in futures:
            future.result()
        return total / (time.perf_counter() - started)


@contextlib.contextmanager
def dask_trips() -> Iterator[Callable[[], float] | None]:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        yield None
        return
    cluster_kw = {"processes": True, "dashboard_address": None}
    with (
        LocalCluster(**cluster_kw) as cluster,  # type: ignore[no-untyped-call]
        Client(cluster) as client,  # type: ignore[no-untyped-call]
    ):
        client.submit(int, pure=False).result()

        def trip() -> float:
            started = time.perf_counter()
            client.submit(int, pure=False).result()
            return time.perf_counter() - started

        yield trip


def startup(base: Path, runs: int) -> dict[str, list[float]]:
    """Seconds until /api/status answers, with and without the extension, in wall time and
    in the server's own CPU time (steadier on a busy machine); and until /tasks/health
    answers (the engine's store open and workers started)."""
    import psutil

    out: dict[str, list[float]] = {}
    for i in range(runs):
        for enabled in (False, True):
            name = "with" if enabled else "without"
            server = Server(base / f"start-{i}-{enabled}", tasks_enabled=enabled).start()
            try:
                out.setdefault(name, []).append(server.wait_ready("api/status"))
                assert server.proc is not None
                cpu = psutil.Process(server.proc.pid).cpu_times()
                out.setdefault(f"{name} cpu", []).append(cpu.user + cpu.system)
                if enabled:
                    out.setdefault("engine", []).append(server.wait_ready("tasks/health"))
            finally:
                server.stop()
    return out


# -- report --------------------------------------------------------------------------------


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--startup", type=int, default=3, help="start-up runs (0: skip)")
    parser.add_argument("--startup-only", action="store_true", help="only the start-up figures")
    args = parser.parse_args()
    if args.startup_only:
        with tempfile.TemporaryDirectory(prefix="jt-bench-") as tmp:
            print_startup(startup(Path(tmp), max(1, args.startup)), max(1, args.startup))
        return
    requests_n = 500 if args.quick else 3000
    trips_n = 50 if args.quick else 300
    total = 2000 if args.quick else 10_000
    batch_rounds = 1 if args.quick else 3

    rows: list[tuple[str, str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="jt-bench-") as tmp:
        base = Path(tmp)
        with running(base / "server", worker_memory_limit=0) as server:
            submit = {"task_type": "python", "description": "no-op", "parameters": NOOP}
            rates = sequential_rates(
                server,
                {
                    "empty": ("POST", "bench/empty", submit),
                    "commit": ("POST", "bench/commit", submit),
                    "status": ("GET", "api/status", None),
                    "submit": ("POST", "tasks", submit),
                },
                requests_n,
                RATE_ROUNDS,
            )
            submits, empty, status = rates["submit"], rates["empty"], rates["status"]
            rows.append(
                (
                    "submit, one request at a time",
                    f"{submits:,.0f} req/s",
                    f"empty ext. handler {empty:,.0f} req/s",
                    f"{submits / empty:.2f}",
                    ">= 0.60",
                )
            )
            for reference, rate in (
                ("empty + 1 SQLite commit", rates["commit"]),
                ("/api/status", status),
            ):
                rows.append(("", "", f"{reference} {rate:,.0f} req/s", f"{submits / rate:.2f}", ""))
            sides = {"tasks": lambda: task_trips(server), "dask": dask_trips, "pool": pool_trips}
            times = by_turns(sides, trips_n)
            trips, pool = times["tasks"], times["pool"]
            dask = times.get("dask")
        if dask is None:
            rows.append(
                (
                    "no-op round trip (median)",
                    ms(trips),
                    "Dask LocalCluster: not installed",
                    "-",
                    "<= 0.33",
                )
            )
        else:
            rows.append(
                (
                    "no-op round trip (median)",
                    ms(trips),
                    f"Dask LocalCluster {ms(dask)}",
                    f"{statistics.median(trips) / statistics.median(dask):.2f}",
                    "<= 0.33",
                )
            )
        rows.append(
            (
                "",
                f"p90 {sorted(trips)[int(len(trips) * 0.9)] * 1000:.2f} ms",
                f"ProcessPoolExecutor {ms(pool)}",
                f"{statistics.median(trips) / statistics.median(pool):.1f}",
                "",
            )
        )
        batches, pool_rates = [], []
        for n in range(batch_rounds):  # by turns, a fresh server each; the median is shown
            with running(
                base / f"batch-{n}", worker_memory_limit=0, max_queue_size=total
            ) as server:
                batches.append(batch_throughput(server, total, 1000))
            pool_rates.append(pool_throughput(total))
        batch, pool_rate = statistics.median(batches), statistics.median(pool_rates)
        rows.append(
            (
                f"{total:,} no-op tasks, batches of 1,000",
                f"{batch:,.0f} tasks/s",
                f"ProcessPoolExecutor {pool_rate:,.0f} tasks/s",
                f"{batch / pool_rate:.2f}",
                ">= 0.60",
            )
        )
        starts = startup(base, args.startup) if args.startup else None

    widths = [max(len(r[i]) for r in [*rows, HEADER]) for i in range(5)]
    for row in [HEADER, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    if dask is None:
        print("\nDask column skipped: 'distributed' is not installed (pip install distributed).")
    if starts:
        print_startup(starts, args.startup)
    print(f"\n{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")


def print_startup(starts: dict[str, list[float]], runs: int) -> None:
    """Medians of ``startup``'s figures, in one paragraph."""
    med = {key: statistics.median(values) for key, values in starts.items()}
    print(
        f"\nserver start to /api/status 200 (median of {runs}): "
        f"{med['without']:.2f} s without the extension, {med['with']:.2f} s with it "
        f"({(med['with'] - med['without']) * 1000:+.0f} ms wall); server CPU "
        f"{med['without cpu']:.2f} s vs {med['with cpu']:.2f} s "
        f"({(med['with cpu'] - med['without cpu']) * 1000:+.0f} ms); /tasks/health 200 "
        f"after {med['engine']:.2f} s"
    )


HEADER = ("measure", "jupyter-tasks", "reference", "ratio", "target")

if __name__ == "__main__":
    main()
