"""jupyter-tasks: background tasks for Jupyter.

The kernel API (``connect``, ``submit``, ``run``, ``map``...) lives in
``client.py``; this module re-exports it lazily (so that ``import
jupyter_tasks`` stays cheap in workers and servers) and holds the Jupyter
entry points.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .worker import set_progress

if TYPE_CHECKING:
    from .client import board, connect, get, map, run, submit, tasks
    from .handles import TaskCancelled, TaskFailed

__all__ = [
    "TaskCancelled",
    "TaskFailed",
    "__version__",
    "board",
    "connect",
    "get",
    "load_ipython_extension",
    "map",
    "run",
    "set_progress",
    "submit",
    "tasks",
]

_LAZY = {
    "connect": "client",
    "submit": "client",
    "run": "client",
    "map": "client",
    "get": "client",
    "tasks": "client",
    "board": "client",
    "TaskFailed": "handles",
    "TaskCancelled": "handles",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'jupyter_tasks' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_tasks``: the ``%task`` and ``%%task`` magics."""
    from .magics import load_ipython_extension as load

    load(ipython)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .extension import TasksApp

    return [{"module": "jupyter_tasks", "app": TasksApp}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "jupyter-tasks"}]
