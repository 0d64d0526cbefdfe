"""The notebooks, end to end, in kernels started by a real server.

The kernel is started through the server's REST API, so it inherits the
server's environment (``JUPYTER_TASKS_URL``/``TOKEN`` set by the extension),
exactly as in JupyterLab.  nbclient then drives it over its connection file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.asynchronous import AsyncKernelClient
from nbclient import NotebookClient

from .conftest import HANG, TasksServer

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

QUICKSTART_CHECKS = """
import json, os
import jupyter_tasks.client as _jtc
_client = _jtc.default_client()
print("CHECKS " + json.dumps({
    "url_env": os.environ.get("JUPYTER_TASKS_URL"),
    "token_env": bool(os.environ.get("JUPYTER_TASKS_TOKEN")),
    "backend": _client.backend.label,
    "hub_mode": _client.hub.mode,
    "listing": listing.status,
    "summary": [type(summary).__name__, isinstance(summary, Summary), summary.total, summary.mean],
    "summary_again": [isinstance(summary_again, Summary), summary_again.total],
    "counted": counted.result(),
    "sleeper": [sleeper.status, isinstance(sleeper.exception(), jt.TaskCancelled)],
    "failure": [failure.remote_type, failure.remote_message,
                "in parse_ratio" in failure.remote_traceback, type(failure.__cause__).__name__],
    "big_total": big_total == sum(x * x for x in range(1_000_000)),
    "bound": total_task.bound_names,
    "mod": [mean_mod, round(spread_mod, 6)],
    "scores": scores,
    "again": [h.task_id for h in jt.tasks(group=group_id)] == sweep.task_ids,
}))
"""


class ServerKernelClient(AsyncKernelClient):  # type: ignore[misc]
    """A client of a kernel the server owns: liveness is the server's business.

    (Without a manager, jupyter_client judges liveness by heartbeats, which a
    kernel still starting on a busy machine can miss; nbclient's timeouts catch hangs.)
    """

    async def _async_is_alive(self) -> bool:
        return True


class ServerKernel:
    """Enough of a kernel manager for nbclient; the kernel itself belongs to the server."""

    has_kernel = True

    def __init__(self, server: TasksServer, kernel_id: str) -> None:
        self.server = server
        self.kernel_id = kernel_id

    def client(self) -> AsyncKernelClient:
        kc = ServerKernelClient()
        kc.load_connection_file(str(self.server.connection_file(self.kernel_id)))
        return kc

    async def is_alive(self) -> bool:
        return True

    async def interrupt_kernel(self) -> None:
        self.server.request("POST", f"api/kernels/{self.kernel_id}/interrupt")

    async def shutdown_kernel(self, now: bool = False) -> None:
        self.server.shutdown_kernel(self.kernel_id)

    async def cleanup_resources(self) -> None:
        pass


def execute(server: TasksServer, nb: Any) -> Any:
    """Run every cell in a fresh kernel started by the server; errors fail the test."""
    kernel_id = server.start_kernel()
    runner = NotebookClient(nb, km=ServerKernel(server, kernel_id), timeout=HANG)
    try:
        runner.execute()
    finally:
        if runner.kc is not None:
            runner.kc.stop_channels()
        server.shutdown_kernel(kernel_id)
    return nb


def stdout_of(cell: Any) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_quickstart_end_to_end_in_a_server_kernel(tasks_server: TasksServer) -> None:
    nb = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "outputs in git"
    nb.cells.append(nbformat.v4.new_code_cell(QUICKSTART_CHECKS))
    execute(tasks_server, nb)

    line = next(ln for ln in stdout_of(nb.cells[-1]).splitlines() if ln.startswith("CHECKS "))
    checks = json.loads(line[len("CHECKS ") :])
    assert checks["url_env"] == tasks_server.url  # inherited from the server, set by the extension
    assert checks["token_env"] is True
    assert checks["backend"] == tasks_server.url
    assert checks["hub_mode"] == "stream"
    assert checks["listing"] == "completed"
    assert checks["summary"] == ["Summary", True, 55, 5.5]  # the notebook's own class
    assert checks["summary_again"] == [True, 55]  # %task result -o
    assert checks["counted"] == sum(range(40))
    assert checks["sleeper"] == ["cancelled", True]
    assert checks["failure"] == ["ZeroDivisionError", "division by zero", True, "RemoteTraceback"]
    assert checks["big_total"] is True and checks["bound"] == ["big_total"]  # %task run -o
    assert checks["mod"][0] == pytest.approx(sum(x % 97 for x in range(50_000)) / 50_000)
    assert checks["scores"] == [round(1 - (a - 0.3) ** 2, 4) for a in (0.1, 0.2, 0.3, 0.4, 0.5)]
    assert checks["again"] is True

    rows = [c for c in nb.cells if c.cell_type == "code" and "summary_task\n" in c.source + "\n"]
    assert any(WIDGET_VIEW in o.get("data", {}) for c in rows for o in c.outputs), "no live row"
    # Rows change from the kernel's background thread; what the frontend received says they
    # turned green, and red with the error for the failure.
    models = nb.metadata["widgets"][WIDGET_STATE]["state"].values()
    bars = [m["state"] for m in models if m["model_name"] == "FloatProgressModel"]
    assert any(b.get("bar_style") == "success" and b.get("value") == 1.0 for b in bars)
    assert any(b.get("bar_style") == "danger" for b in bars)
    texts = [str(m["state"].get("value", "")) for m in models if m["model_name"] == "HTMLModel"]
    assert any("ZeroDivisionError" in t and "division by zero" in t for t in texts)


def test_background_training_notebook_runs(tasks_server: TasksServer) -> None:
    nb = nbformat.read(NOTEBOOKS / "background-training.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "outputs in git"
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import json\nprint('CHECKS ' + json.dumps({'best': type(best).__name__, "
            "'trained': len(linear_results) + len(knn_results), 'rmse': best.test_rmse}))"
        )
    )
    execute(tasks_server, nb)
    line = next(ln for ln in stdout_of(nb.cells[-1]).splitlines() if ln.startswith("CHECKS "))
    checks = json.loads(line[len("CHECKS ") :])
    assert checks["best"] in ("LinearModel", "KNNModel")
    assert checks["trained"] >= 6
    assert checks["rmse"] > 0
