"""jupyter-tasks: background tasks for Jupyter.

The kernel API (``connect``, ``submit``, ``run``, ``map``...) lives in
``client.py``; this module re-exports it and holds the Jupyter entry points.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__
from .worker import set_progress

__all__ = ["__version__", "set_progress"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .extension import TasksApp

    return [{"module": "jupyter_tasks", "app": TasksApp}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "jupyter-tasks"}]
