"""No server at all: the same API runs tasks through an engine inside the process.

Each run is a fresh interpreter with a clean environment, so nothing another
test set (a server URL, a token, a parent pid) can leak in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from .conftest import HANG

FIRST = """
import json, psutil
import jupyter_tasks as jt

def square(x):
    jt.set_progress(0.5, "halfway")
    return x * x

handle = jt.run(square, 7)
sweep = jt.map(square, [3, 1, 2])
out = {
    "result": handle.result(timeout=120),
    "results": sweep.results(timeout=120),
    "group": sweep.group_id,
    "progress": handle.progress,
    "workers": [p.pid for p in psutil.Process().children(recursive=True)],
}
print(json.dumps(out))
"""

SECOND = """
import json, sys
import jupyter_tasks as jt
again = jt.tasks(group=sys.argv[1])
print(json.dumps({"results": again.results(timeout=120), "n": len(again)}))
"""


def run_clean(code: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
    }
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=HANG * 2,
    )


def test_no_server_runs_tasks_in_process_and_says_so_once(tmp_path: Path) -> None:
    first = run_clean(FIRST, tmp_path)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout.strip().splitlines()[-1])
    assert out["result"] == 49
    assert out["results"] == [9, 1, 4]
    assert out["progress"] == 1.0
    notes = [ln for ln in first.stderr.splitlines() if ln.startswith("jupyter-tasks:")]
    assert len(notes) == 1 and "no Jupyter server found" in notes[0], first.stderr
    db = tmp_path / "data" / "jupyter_tasks" / "kernel.db"
    assert db.exists() and str(db) in notes[0]
    deadline = time.monotonic() + HANG
    while any(psutil.pid_exists(p) for p in out["workers"]):  # workers end with the process
        alive = [p for p in out["workers"] if psutil.pid_exists(p)]
        if all(psutil.Process(p).status() == psutil.STATUS_ZOMBIE for p in alive):
            break
        assert time.monotonic() < deadline, f"workers left behind: {alive}"
        time.sleep(0.05)

    second = run_clean(SECOND, tmp_path, out["group"])  # a "kernel restart"
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout.strip().splitlines()[-1]) == {"results": [9, 1, 4], "n": 3}
