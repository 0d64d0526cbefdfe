"""Finding the tasks server from inside a kernel (or a script).

In order: ``JUPYTER_TASKS_URL``/``JUPYTER_TASKS_TOKEN``, which the server
extension sets for the kernels it starts; JupyterHub's single-user variables;
the parent server's runtime file ``jpserver-<JPY_PARENT_PID>.json``.  The last
two are used only if that server answers ``/tasks/health`` (it may not run the
extension).  None of them: the caller runs an engine in-process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import TasksError
from .transport import AccessDenied, HttpBackend, ServerUnreachable


@dataclass(frozen=True)
class ServerInfo:
    """Where the tasks API is and how it was found."""

    url: str
    token: str | None
    source: str


def _hub_url(env: Mapping[str, str]) -> str:
    url = env["JUPYTERHUB_SERVICE_URL"].rstrip("/") + "/"
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX", "").strip("/")
    if prefix and not url.rstrip("/").endswith(prefix):
        url += prefix + "/"
    return url


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _runtime_file_server(env: Mapping[str, str]) -> ServerInfo | None:
    """The parent server's ``jpserver-<pid>.json``, if that server is still alive."""
    pid = env.get("JPY_PARENT_PID", "")
    if not pid.isdigit() or not _pid_alive(int(pid)):
        return None
    path = os.path.join(env.get("JUPYTER_RUNTIME_DIR") or runtime_dir(), f"jpserver-{pid}.json")
    try:
        with open(path, encoding="utf-8") as fh:
            info = json.load(fh)
    except (OSError, ValueError):
        return None
    url = str(info.get("url") or "")
    base_url = str(info.get("base_url") or "/")
    if not url:
        return None
    if not url.rstrip("/").endswith(base_url.rstrip("/")):
        url = url.rstrip("/") + base_url
    return ServerInfo(url, info.get("token") or None, path)


def _answers(info: ServerInfo) -> bool:
    """True when the server has the tasks API (a 503 while its engine starts counts)."""
    backend = HttpBackend(info.url, info.token, timeout=5)
    try:
        backend.health()
    except (ServerUnreachable, AccessDenied):
        return False
    except TasksError:
        return True
    finally:
        backend.close()
    return True


def discover(environ: Mapping[str, str] | None = None) -> ServerInfo | None:
    """The tasks server this process should use, or None when there is none."""
    env = os.environ if environ is None else environ
    if env.get("JUPYTER_TASKS_URL"):
        return ServerInfo(env["JUPYTER_TASKS_URL"], env.get("JUPYTER_TASKS_TOKEN"), "environment")
    candidates: list[ServerInfo] = []
    if env.get("JUPYTERHUB_SERVICE_URL"):
        candidates.append(ServerInfo(_hub_url(env), env.get("JUPYTERHUB_API_TOKEN"), "JupyterHub"))
    parent = _runtime_file_server(env)
    if parent is not None:
        candidates.append(parent)
    return next((c for c in candidates if _answers(c)), None)


def runtime_dir() -> str:
    """Jupyter's runtime directory (where servers write ``jpserver-<pid>.json``)."""
    try:
        from jupyter_core.paths import jupyter_runtime_dir

        return str(jupyter_runtime_dir())
    except ImportError:  # pragma: no cover - jupyter_core comes with ipykernel
        return os.path.join(os.path.expanduser("~"), ".local", "share", "jupyter", "runtime")
