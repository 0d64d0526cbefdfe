"""schemathesis against the served OpenAPI document, on a live server.

The server allows one task type, ``echo`` (``fuzz_types/``, registered through
an entry point of a throw-away distribution on ``PYTHONPATH``): it returns
its input, so random requests cannot run commands or import arbitrary code,
yet every route, the 201s and the links from ``POST /tasks`` are exercised.

Hooks (``fuzz_types/strict_ints.py``) send whole numbers as JSON integers
(JSON Schema counts ``10.0`` as an integer, the contract does not) and accept
the documented 503 + Retry-After of a full queue, which the fuzzer's
10,000-task batches cause; any other 5xx fails the test.

Excluded check: ``missing_required_header`` expects 401 for a request without
credentials; Jupyter Server answers 403 by design (documented in the OpenAPI
description). ``ignored_auth`` still verifies that such requests are refused.

All four phases run, the stateful one included: it chains calls along the OpenAPI
links from ``POST /tasks`` (and ``rerun``) to the task routes, so cancel, rerun,
result, logs and delete are fuzzed on tasks that exist.  The run's JSON and NDJSON
reports are read back: no failure of any check, and at least one declared link
from ``POST /tasks`` followed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .conftest import ServerProcess

SEED = int(os.environ.get("JUPYTER_TASKS_FUZZ_SEED", "20260101"))
MAX_EXAMPLES = int(os.environ.get("JUPYTER_TASKS_FUZZ_EXAMPLES", "15"))
PHASES = "examples,coverage,fuzzing,stateful"
#: Only catches a hang; a normal run takes a fraction of it.
RUN_LIMIT = 900
FUZZ_TYPES = Path(__file__).with_name("fuzz_types")


def test_schemathesis_finds_no_server_errors_or_schema_violations(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    types_dir = tmp_path / "fuzz_types"
    shutil.copytree(FUZZ_TYPES, types_dir)
    pythonpath = os.pathsep.join(p for p in (str(types_dir), os.environ.get("PYTHONPATH")) if p)
    server = server_process(
        {"allowed_task_types": ["echo"], "max_workers": 2},
        env={"PYTHONPATH": pythonpath},
    )
    types = server.request("GET", "tasks/types").json()["types"]
    assert [t["name"] for t in types] == ["echo"]

    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        server.url + "tasks/openapi.json",
        "--header",
        f"Authorization: token {server.token}",
        "--checks",
        "all",
        "--exclude-checks",
        "missing_required_header",
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--phases",
        PHASES,
        "--report",
        "json,ndjson",
        "--report-dir",
        str(tmp_path / "report"),
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--no-color",
    ]
    print(f"schemathesis seed {SEED}, {MAX_EXAMPLES} examples per operation")
    started = time.monotonic()
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT,
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "strict_ints", "PYTHONPATH": pythonpath},
    )
    report = result.stdout + result.stderr
    print(f"schemathesis ran {time.monotonic() - started:.1f} s")
    (tmp_path / "schemathesis.txt").write_text(report)
    print(report)
    errors = [line for line in server.log().splitlines() if " 500 " in line]
    assert result.returncode == 0, f"schemathesis failed (seed {SEED}):\n{report[-10_000:]}"
    assert not errors

    (summary,) = [json.loads(p.read_text()) for p in (tmp_path / "report").glob("*.json")]
    assert summary["seed"] == SEED and summary["complete"], summary
    statuses = {name: phase["status"] for name, phase in summary["phases"].items()}
    # "examples" has nothing to run: the document declares no examples.
    assert statuses == {
        "examples": "skip",
        "coverage": "success",
        "fuzzing": "success",
        "stateful": "success",
    }, summary["phases"]
    assert summary["failures"] == [] and summary["errors"] == [], summary
    assert summary["test_cases"]["with_failures"] == 0, summary["test_cases"]
    links = followed_links(next((tmp_path / "report").glob("*.ndjson")))
    print("declared links followed:", *sorted(links), sep="\n  ")
    assert any(link.startswith("POST /tasks -> [201] ") for link in links), links


def followed_links(ndjson: Path) -> set[str]:
    """Transitions of the stateful phase along links the document declares (not inferred)."""
    found: set[str] = set()
    for line in ndjson.read_text().splitlines():
        scenario = json.loads(line).get("ScenarioFinished")
        if not scenario or scenario.get("phase") != "stateful":
            continue
        # A skipped scenario (its first step filtered out) records no cases.
        for case in scenario["recorder"].get("cases", {}).values():
            transition = case.get("transition")
            if transition and not transition.get("is_inferred"):
                found.add(transition["id"])
    return found
