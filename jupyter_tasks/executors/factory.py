"""Build the executor that ``TasksApp.executor`` names: "local", "dask" or a class path.

One place maps the engine's settings onto each executor, so the server extension and
embedders only pass names.  Heavy modules (``distributed``) load only when asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .base import Executor

if TYPE_CHECKING:
    from ..orchestrator import EngineConfig


class ExecutorConfigError(ValueError):
    """The executor named in the configuration cannot be built; the message says why."""


def make_executor(name: str, config: EngineConfig, dask_address: str | None = None) -> Executor:
    """The executor called ``name``, set up from ``config``.

    A class path ("pkg.mod:Class" or "pkg.mod.Class") names an ``Executor`` subclass; it is
    built with ``Class.from_config(config, dask_address)`` when it has that class method,
    else with no arguments.
    """
    if name == "local":
        from .local import LocalExecutor

        return LocalExecutor(
            max_workers=config.max_workers,
            kill_grace_seconds=config.kill_grace_seconds,
            worker_memory_limit=config.worker_memory_limit,
            max_tasks_per_worker=config.max_tasks_per_worker,
        )
    if name == "dask":
        try:
            from .dask import DaskExecutor
        except ImportError as exc:
            raise ExecutorConfigError(
                "executor 'dask' needs the 'distributed' package "
                f"(pip install 'jupyter-tasks[dask]'): {exc}"
            ) from exc
        return DaskExecutor.from_config(config, dask_address)
    cls = _import_class(name)
    from_config = getattr(cls, "from_config", None)
    try:
        executor = from_config(config, dask_address) if callable(from_config) else cls()
    except TypeError as exc:  # e.g. a constructor that needs arguments and no from_config
        raise ExecutorConfigError(f"cannot build executor {name!r}: {exc}") from exc
    if not isinstance(executor, Executor):
        raise ExecutorConfigError(f"{name!r} did not build an Executor")
    return executor


def _import_class(path: str) -> type[Executor]:
    module_name, sep, qualname = path.partition(":")
    if not sep:
        module_name, _, qualname = path.rpartition(".")
    if not module_name or not qualname:
        raise ExecutorConfigError(f"executor {path!r} is not 'local', 'dask' or 'pkg.mod:Class'")
    try:
        obj: object = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ExecutorConfigError(f"cannot import executor {path!r}: {exc}") from exc
    if not (isinstance(obj, type) and issubclass(obj, Executor)):
        raise ExecutorConfigError(f"{path!r} is not an Executor subclass")
    return obj
