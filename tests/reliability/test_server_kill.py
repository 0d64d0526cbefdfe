"""SIGKILL a real server while a client submits tasks: nothing acknowledged is lost, nothing
stuck, nothing run twice, no worker left behind, the database intact.

The plan (tasks, batches, retries) and the moments of the kills come from a seeded
generator: the seed is printed and named in every failure, and ``JUPYTER_TASKS_SEED=<seed>``
replays the same plan and kill points (a kill "while tasks run" lands as timing allows).
CI runs a few kills; ``JUPYTER_TASKS_FULL=1`` adds the full run: 1,000 small tasks and
more than 20 kills.

Every task appends its key (unique per request) to one marker file under the root
directory as it starts, one ``O_APPEND`` write per run, so the lines count the runs.
"""

from __future__ import annotations

import math
import os
import random
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from support import HANG, ServerProcess, python_task

from .conftest import describe, poll, read_pids, tree, wait_all_gone, wait_no_orphans

FULL = os.environ.get("JUPYTER_TASKS_FULL") == "1"
SEED = int(os.environ.get("JUPYTER_TASKS_SEED") or random.SystemRandom().randrange(1 << 32))
MAX_WORKERS = 2


@dataclass
class Sent:
    """One task request the client makes, and what became of it."""

    key: str
    request: dict[str, Any]
    max_retries: int
    task_id: str | None = None  # once a 201 named it
    answer: str = "unsent"  # "acknowledged", "no answer" (the server died), "HTTP <code>"


@dataclass
class Plan:
    """The client's requests in order: each one ``POST /tasks`` or one ``POST /tasks/batch``."""

    groups: list[list[Sent]] = field(default_factory=list)
    next_group: int = 0

    @property
    def sent(self) -> list[Sent]:
        return [s for group in self.groups for s in group]


def make_plan(rng: random.Random, markers: Path, small: int, long: int) -> Plan:
    """``small`` quick tasks (singles and batches) with ``long`` slower ones spread among them.

    A long task works up to 1.5 s, some with ``sleep`` children, some with retries.
    """

    def sent(key: str, seconds: float = 0.0, children: int = 0, retries: int = 0) -> Sent:
        request = python_task(
            "taskmods:mark", str(markers), key, seconds, children, description=key
        )
        request["max_retries"] = retries
        return Sent(key, request, retries)

    groups: list[list[Sent]] = []
    made = 0
    while made < small:
        size = rng.randint(2, 12) if rng.random() < 0.2 else 1
        size = min(size, small - made)
        groups.append([sent(f"s{made + i}") for i in range(size)])
        made += size
    for i in range(long):
        long_task = sent(
            f"l{i}",
            seconds=round(rng.uniform(0.2, 1.5), 2),
            children=rng.choice([0, 1, 2]),
            retries=rng.choice([0, 0, 1, 2]),
        )
        groups.insert(rng.randint(0, len(groups)), [long_task])
    return Plan(groups)


class Client(threading.Thread):
    """Submits the plan's next ``count`` requests, one at a time, until the server dies."""

    def __init__(self, server: ServerProcess, plan: Plan, count: int) -> None:
        super().__init__(daemon=True)
        self.url, self.headers = server.url, server.headers
        self.plan, self.count = plan, count
        self.answered = 0
        self.stopped = False
        self.cond = threading.Condition()

    def run(self) -> None:
        session = requests.Session()
        try:
            for _ in range(self.count):
                if self.plan.next_group >= len(self.plan.groups):
                    return
                group = self.plan.groups[self.plan.next_group]
                self.plan.next_group += 1
                if not self._send(session, group):
                    return
        finally:
            session.close()
            with self.cond:
                self.stopped = True
                self.cond.notify_all()

    def _send(self, session: requests.Session, group: list[Sent]) -> bool:
        if len(group) == 1:
            path, body = "tasks", group[0].request
        else:
            path, body = "tasks/batch", {"tasks": [s.request for s in group]}
        for s in group:
            s.answer = "no answer"
        try:
            response = session.post(self.url + path, json=body, headers=self.headers, timeout=HANG)
        except requests.RequestException:
            return False  # the server is gone; what was in flight may or may not exist
        if response.status_code == 201:
            tasks = response.json()["tasks"] if len(group) > 1 else [response.json()]
            for s, task in zip(group, tasks, strict=True):
                s.task_id, s.answer = task["task_id"], "acknowledged"
        else:
            for s in group:
                s.answer = f"HTTP {response.status_code}: {response.text[:200]}"
        with self.cond:
            self.answered += 1
            self.cond.notify_all()
        return True

    def wait_answers(self, count: int) -> None:
        """Until ``count`` requests were answered, or the client stopped."""
        with self.cond:
            done = self.cond.wait_for(lambda: self.answered >= count or self.stopped, HANG)
        assert done, "the client hung"


def all_tasks(server: ServerProcess) -> dict[str, dict[str, Any]]:
    """Every task the server knows, by id (paged, newest first)."""
    tasks: dict[str, dict[str, Any]] = {}
    cursor = ""
    while True:
        page = server.request("GET", "tasks", params={"limit": 1000, "cursor": cursor}).json()
        tasks.update((t["task_id"], t) for t in page["tasks"])
        if not page["next"]:
            return tasks
        cursor = page["next"]


def unfinished(server: ServerProcess) -> list[dict[str, Any]]:
    params = {"status": ["created", "running"], "limit": 1000}
    tasks: list[dict[str, Any]] = server.request("GET", "tasks", params=params).json()["tasks"]
    return tasks


def integrity(db: Path) -> str:
    """``PRAGMA integrity_check`` on a read-only connection (it leaves the WAL as it is)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def when(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def kill_server(server: ServerProcess, replay: str) -> None:
    """SIGKILL the server; every process of its tree, taken just before, must end by itself."""
    pid = server.pid
    before = tree(pid)
    server.kill()
    wait_all_gone([p.pid for p in before], f"{replay}: processes of the killed server")
    wait_no_orphans(server, f"{replay}: the killed server's processes")


def check_after_restart(
    server: ServerProcess, plan: Plan, restarted_at: float, replay: str
) -> None:
    """Whatever was acknowledged is there; nothing runs since before the restart."""
    tasks = all_tasks(server)
    lost = [s.key for s in plan.sent if s.answer == "acknowledged" and s.task_id not in tasks]
    assert not lost, f"{replay}: acknowledged tasks lost: {lost}"
    params = {"status": "running", "limit": 1000}
    running = server.request("GET", "tasks", params=params).json()["tasks"]
    stuck = [t for t in running if when(t["started_at"]) < restarted_at]
    assert not stuck, f"{replay}: running since before the restart: {stuck}"


def check_settled(server: ServerProcess, plan: Plan, markers: Path, replay: str) -> Counter[str]:
    """Each task's final state against its runs (marker lines); returns the statuses."""
    tasks = all_tasks(server)
    rows: dict[str, dict[str, Any]] = {}
    for task in tasks.values():
        key = task["parameters"]["args"][1]
        assert key not in rows, f"{replay}: two tasks from one request: {key}"
        rows[key] = task
    runs = Counter(markers.read_text().split()) if markers.exists() else Counter()
    assert set(runs) <= set(rows), f"{replay}: runs of unknown tasks: {set(runs) - set(rows)}"
    for group in plan.groups:  # a batch is stored whole or not at all, answered or not
        stored = sum(s.key in rows for s in group)
        assert stored in (0, len(group)), f"{replay}: {stored} of a batch of {len(group)} stored"
    statuses: Counter[str] = Counter()
    for s in plan.sent:
        if s.answer == "acknowledged":
            assert s.task_id in tasks, f"{replay}: acknowledged task lost: {s.key}"
            assert tasks[s.task_id]["parameters"]["args"][1] == s.key
        else:
            assert s.answer in ("no answer", "unsent"), f"{replay}: {s.key}: {s.answer}"
        task = rows.get(s.key)
        if task is None:
            continue
        where = f"{replay}: task {s.key} {task['task_id']}"
        status, error, attempt = task["status"], task["error"], task["attempt"]
        statuses[status] += 1
        assert status in ("completed", "failed"), f"{where} is {status}"
        if status == "failed":  # killed while running, with no retry left
            assert error["type"] == "ServerRestart", f"{where}: {error}"
            assert attempt == s.max_retries + 1, f"{where}: failed in attempt {attempt}"
        assert 1 <= attempt <= s.max_retries + 1, f"{where}: attempt {attempt}"
        # A run is counted (attempt) before it starts; a killed run counts as one.
        assert runs[s.key] <= attempt, f"{where}: ran {runs[s.key]} times in {attempt} attempts"
        if s.max_retries == 0:
            assert runs[s.key] <= 1, f"{where} ran {runs[s.key]} times without retries"
        if status == "completed":
            assert runs[s.key] >= 1, f"{where} completed without running"
    return statuses


def run_kills(server: ServerProcess, small: int, long: int, kills: int) -> None:
    rng = random.Random(SEED)
    replay = f"JUPYTER_TASKS_SEED={SEED}"
    print(f"{replay} (small={small}, long={long}, kills={kills})")
    markers = server.root / "markers"
    db = Path(server.tasks["db_path"])
    plan = make_plan(rng, markers, small, long)
    for cycle in range(kills):
        left = len(plan.groups) - plan.next_group
        share = max(1, math.ceil(left / (kills - cycle)))
        client = Client(server, plan, share)
        client.start()
        if rng.random() < 0.6:  # while the client submits
            client.wait_answers(rng.randint(0, share))
        else:  # while the submitted tasks run
            client.wait_answers(share)
            time.sleep(rng.uniform(0.0, 1.0))
        kill_server(server, f"{replay}, kill {cycle + 1}")
        client.join(HANG)
        assert integrity(db) == "ok", f"{replay}: kill {cycle + 1}"
        restarted_at = time.time()
        server.start()
        check_after_restart(server, plan, restarted_at, f"{replay}, kill {cycle + 1}")
    client = Client(server, plan, len(plan.groups))
    client.start()
    client.join(HANG)
    assert plan.next_group == len(plan.groups)
    poll(lambda: not unfinished(server), f"{replay}: every task to finish")
    statuses = check_settled(server, plan, markers, replay)
    answers = Counter(s.answer for s in plan.sent)
    print(f"{replay}: requests {dict(answers)}, tasks {dict(statuses)}")
    sample = [s for s in plan.sent if s.answer == "acknowledged"]
    for s in rng.sample(sample, min(20, len(sample))):
        task = server.request("GET", f"tasks/{s.task_id}").json()
        if task["status"] == "completed":
            result = server.request("GET", f"tasks/{s.task_id}/result").json()
            assert result["value"] == s.key, f"{replay}: {s.key}: {result}"
    server.stop()
    assert integrity(db) == "ok", replay


@pytest.mark.parametrize(
    ("small", "long", "kills"),
    [
        pytest.param(150, 6, 3, id="ci"),
        pytest.param(
            1000,
            48,
            24,
            id="full",
            marks=[
                pytest.mark.skipif(not FULL, reason="the full run needs JUPYTER_TASKS_FULL=1"),
                pytest.mark.timeout(3600),  # 25 server starts: only a hang takes longer
            ],
        ),
    ],
)
def test_sigkilled_server_loses_nothing_and_runs_nothing_twice(
    server_process: Any, small: int, long: int, kills: int
) -> None:
    server = server_process({"max_workers": MAX_WORKERS}, only_tasks=True)
    run_kills(server, small, long, kills)


def test_workers_and_their_children_exit_with_a_killed_server(server_process: Any) -> None:
    """Two busy workers (one task forks, one starts ``sleep`` children) and an idle one.

    What becomes of the tasks themselves on restart is the test above's business.
    """
    server = server_process({"max_workers": 3}, only_tasks=True)
    pidfile, markers = server.root / "pids", server.root / "markers"
    for request in (
        python_task("taskmods:family", str(pidfile), description="forks"),
        python_task("taskmods:mark", str(markers), "sleeps", 600, 2, description="sleeps"),
    ):
        assert server.request("POST", "tasks", json=request).status_code == 201
    family = read_pids(pidfile)

    def complete() -> bool:
        names = Counter(p.name() for p in tree(server.pid))
        return names["sleep"] == 4 and len(psutil.Process(server.pid).children()) == 3

    poll(complete, "three workers and the sleep children of both tasks")
    before = tree(server.pid)
    assert set(family) <= {p.pid for p in before}
    print(f"{len(before) - 1} processes under the server: {describe(before)}")
    kill_server(server, "the kill")


def test_a_worker_in_a_long_c_call_exits_with_a_killed_server(server_process: Any) -> None:
    server = server_process({"max_workers": 1}, only_tasks=True)
    pidfile = server.root / "pid"
    request = python_task("taskmods:spin", str(pidfile), description="spins")
    assert server.request("POST", "tasks", json=request).status_code == 201
    (worker,) = read_pids(pidfile)
    server.kill()
    # The task would compute for hours: a short wait is enough to see whether it was ended.
    wait_all_gone([worker], "a worker busy in a C call", bound=3.0)
