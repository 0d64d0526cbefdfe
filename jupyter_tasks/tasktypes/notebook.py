"""The ``notebook`` task type: run a ``.ipynb`` with parameters, one progress step per cell.

Parameters are injected the papermill way: a code cell tagged ``injected-parameters``
right after the cell tagged ``parameters`` (or at the top).  The notebook runs with
nbclient in the worker; the executed copy is saved even when a cell fails or the task is
stopped.  A SIGTERM (cancel, timeout) shuts the kernel down, saves, then ends the worker.

Scraps: an output whose metadata is ``{"jupyter_tasks": {"scrap": name}}`` is recorded in
the result under ``name`` (its ``application/json`` data, else its text); ``scrap(name,
value)`` below writes such an output from inside the notebook.

nbclient and nbformat are imported where they are used, so that ``scrap`` stays cheap.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import keyword
import math
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import InvalidParameters
from .base import (
    SubmitContext,
    TaskContext,
    TaskType,
    check_dir_inside,
    resolve_inside,
    shown_path,
)

SCRAP_KEY = "jupyter_tasks"
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
#: Notebooks up to this size are parsed at submit time to check that they are notebooks.
CHECK_MAX_BYTES = 64 << 20
#: How long a stopped task waits for its kernel to shut down before it is killed.
KERNEL_SHUTDOWN_SECONDS = 1.0
_ENAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def scrap(name: str, value: Any) -> None:
    """Inside a notebook task: record a JSON ``value`` under ``name`` in the task's result."""
    json.dumps(value, allow_nan=False)  # refuse what the result could not carry
    display: Any = importlib.import_module("IPython.display").display
    data = {"application/json": value, "text/plain": repr(value)}
    display(data, raw=True, metadata={SCRAP_KEY: {"scrap": name}})


class NotebookParameters(BaseModel):
    """Parameters of a ``notebook`` task."""

    model_config = ConfigDict(extra="forbid", strict=True)

    path: str = Field(
        min_length=1,
        description="The notebook to run, relative to the server's root directory.",
        examples=["analysis.ipynb"],
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Values injected as Python assignments after the cell tagged 'parameters'.",
        examples=[{"alpha": 0.5, "region": "eu"}],
    )
    output_path: str | None = Field(
        default=None,
        description="Where to save the executed notebook (inside the root). Default: next to "
        "the input, named <name>-<UTC yyyymmdd-hhmmss>-<task id prefix>.ipynb.",
    )
    kernel_name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._+-]{1,100}$",
        description="Kernel to run it with. Default: the notebook's own kernelspec (python3).",
    )
    cwd: str | None = Field(
        default=None,
        description="The kernel's working directory, inside the root. Default: the "
        "notebook's directory.",
    )

    @field_validator("parameters")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not name.isidentifier() or keyword.iskeyword(name):
                raise ValueError(f"{name!r} is not a valid Python variable name")
        return value


class NotebookTask(TaskType):
    """Execute a notebook with parameters; the result names the executed copy."""

    name = "notebook"
    description = "Run a notebook (.ipynb) with injected parameters; saves the executed copy."
    Parameters = NotebookParameters
    validate_reads_files = True  # it opens the notebook to check it

    def validate(self, parameters: dict[str, Any], ctx: SubmitContext) -> None:
        params = self._parse(parameters)
        source = resolve_inside(ctx.root_dir, params.path, "parameters.path")
        if not os.path.isfile(source):  # False, not an error, for a name too long
            message = f"no notebook {shown_path(params.path)}"
            raise InvalidParameters(message, field="parameters.path")
        if source.suffix != ".ipynb":
            raise InvalidParameters("not a .ipynb file", field="parameters.path")
        language = _check_notebook(source)
        if params.parameters and language not in (None, "python"):
            message = f"parameters can be injected into Python notebooks only, not {language}"
            raise InvalidParameters(message, field="parameters.parameters")
        if params.output_path is not None:
            output = resolve_inside(ctx.root_dir, params.output_path, "parameters.output_path")
            if output.suffix != ".ipynb" or os.path.isdir(output) or output == source:
                message = "must name a new .ipynb file (not the input notebook)"
                raise InvalidParameters(message, field="parameters.output_path")
        if params.cwd is not None:
            check_dir_inside(ctx.root_dir, params.cwd, "parameters.cwd")

    def run(self, parameters: dict[str, Any], ctx: TaskContext) -> Any:
        nbformat = _nbformat()
        params = self._parse(parameters)
        root = Path(ctx.root_dir).resolve()
        source = resolve_inside(ctx.root_dir, params.path, "parameters.path")
        output = _output_path(params, source, ctx)
        cwd = resolve_inside(ctx.root_dir, params.cwd, "parameters.cwd") if params.cwd else None
        nb = nbformat.read(source, as_version=4)
        inject_parameters(nb, params.parameters)
        spec = nb.metadata.get("kernelspec") or {}
        kernel = params.kernel_name or spec.get("name") or "python3"
        relative = output.relative_to(root).as_posix()
        runner = _Runner(nb, kernel, cwd or source.parent, ctx, lambda: _save(nb, output))
        try:
            runner.execute()
        except Exception as exc:
            _save(nb, output)
            failure = runner.cell_failure(exc, relative)
            if failure is None:
                raise
            error, kernel_traceback = failure
            raise error from KernelTraceback(kernel_traceback)
        _save(nb, output)
        return {"output_path": relative, "scraps": scraps(nb), "last_value": last_value(nb)}

    def _parse(self, parameters: dict[str, Any]) -> NotebookParameters:
        return cast(NotebookParameters, self.parse(parameters))


def _nbformat() -> Any:
    return importlib.import_module("nbformat")


def _check_notebook(path: Path) -> str | None:
    """Refuse what is not a notebook; the kernel language it declares (None: unknown)."""
    if path.stat().st_size > CHECK_MAX_BYTES:
        return None
    try:
        content = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise InvalidParameters(f"not a notebook: {exc}", field="parameters.path") from None
    if not (isinstance(content, dict) and isinstance(content.get("cells"), list)):
        raise InvalidParameters("not a notebook (no cells)", field="parameters.path")
    metadata = content.get("metadata") or {}
    spec = metadata.get("kernelspec") or {}
    info = metadata.get("language_info") or {}
    language = spec.get("language") or info.get("name")
    return str(language).lower() if language else None


def _output_path(params: NotebookParameters, source: Path, ctx: TaskContext) -> Path:
    if params.output_path is not None:
        output = resolve_inside(ctx.root_dir, params.output_path, "parameters.output_path")
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        output = source.with_name(f"{source.stem}-{stamp}-{ctx.task_id[:8]}.ipynb")
    output.parent.mkdir(parents=True, exist_ok=True)
    return output


def _save(nb: Any, path: Path) -> None:
    """Write atomically: a reader never sees half a notebook."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _nbformat().write(nb, tmp)
    os.replace(tmp, path)


# -- parameters, scraps, last value ---------------------------------------------------------


def inject_parameters(nb: Any, values: dict[str, Any]) -> None:
    """Add the ``injected-parameters`` cell (replacing an earlier one), papermill's way."""
    nbformat = _nbformat()
    nb.cells = [c for c in nb.cells if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    if not values:
        return
    lines = ["# Parameters"] + [f"{name} = {python_literal(v)}" for name, v in values.items()]
    cell = nbformat.v4.new_code_cell("\n".join(lines) + "\n", metadata={"tags": [INJECTED_TAG]})
    if (nb.get("nbformat_minor") or 0) < 5:
        cell.pop("id", None)  # cell ids arrived with nbformat 4.5
    tagged = [i for i, c in enumerate(nb.cells) if PARAMETERS_TAG in _tags(c)]
    nb.cells.insert(tagged[0] + 1 if tagged else 0, cell)


def python_literal(value: Any) -> str:
    """Python source for a JSON value (``repr`` except for non-finite floats, recursively)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    if isinstance(value, dict):
        items = (f"{python_literal(k)}: {python_literal(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(python_literal(v) for v in value) + "]"
    return repr(value)


def _tags(cell: Any) -> list[str]:
    tags = cell.get("metadata", {}).get("tags", [])
    return tags if isinstance(tags, list) else []


def _text(data: Any) -> str:
    return "".join(data) if isinstance(data, list) else str(data)


def scraps(nb: Any) -> dict[str, Any]:
    """Outputs marked ``{"jupyter_tasks": {"scrap": name}}``: name -> JSON data or text."""
    found: dict[str, Any] = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            mark = (output.get("metadata") or {}).get(SCRAP_KEY)
            if not (isinstance(mark, dict) and isinstance(mark.get("scrap"), str)):
                continue
            data = output.get("data") or {}
            if "application/json" in data:
                found[mark["scrap"]] = data["application/json"]
            elif "text/plain" in data:
                found[mark["scrap"]] = _text(data["text/plain"])
    return found


def last_value(nb: Any) -> str | None:
    """The text of the last code cell's ``execute_result`` (its last expression), if any."""
    cells = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    if not cells:
        return None
    for output in cells[-1].get("outputs", []):
        if output.get("output_type") == "execute_result":
            return _text((output.get("data") or {}).get("text/plain", ""))
    return None


# -- execution -------------------------------------------------------------------------------


class CellExecutionError(Exception):
    """A cell failed; raised under the cell's own error name where that is a plain name."""


class KernelTraceback(Exception):
    """The kernel's traceback of a failed cell (the cause of the task's error)."""


class _Runner:
    """nbclient with per-cell progress, cell output in the task's log, and SIGTERM handling."""

    def __init__(
        self, nb: Any, kernel: str, cwd: Path, ctx: TaskContext, save: Callable[[], None]
    ) -> None:
        self.nb, self.ctx, self.save = nb, ctx, save
        self.total = sum(1 for c in nb.cells if _will_run(c))
        self.done = 0
        self.current = 0
        self._started = time.monotonic()
        self.client = _client_class()(
            nb,
            kernel_name=kernel,
            resources={"metadata": {"path": os.fspath(cwd)}},
            timeout=None,
            on_cell_execute=self._on_cell_execute,
            on_cell_executed=self._on_cell_executed,
        )
        self.client.on_terminate = self._on_terminate

    def execute(self) -> None:
        self.ctx.set_progress(0.0, f"starting kernel ({self.total} cells)")
        self.client.execute()

    def _on_cell_execute(self, cell: Any, cell_index: int) -> None:
        self.current = self.done + 1
        self._started = time.monotonic()

    def _on_cell_executed(self, cell: Any, cell_index: int, execute_reply: Any) -> None:
        self.done += 1
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                sys.stdout.write(_text(output.get("text", "")))
        took = time.monotonic() - self._started
        print(f"[jupyter-tasks] cell {self.done}/{self.total} ran in {took:.2f} s", flush=True)
        self.ctx.set_progress(self.done / max(1, self.total), f"cell {self.done}/{self.total}")

    def _on_terminate(self) -> None:
        print("[jupyter-tasks] stopped: kernel shut down", flush=True)
        self.save()

    def cell_failure(self, exc: Exception, output: str) -> tuple[Exception, str] | None:
        """For a failed cell: the task's error (named as the cell's) and the kernel's traceback."""
        from nbclient.exceptions import CellExecutionError as NbCellError

        if not isinstance(exc, NbCellError):
            return None
        where = f"cell {self.current} of {self.total}; executed notebook saved as {output}"
        name = exc.ename if _ENAME.fullmatch(exc.ename or "") else "CellExecutionError"
        error_class = type(name, (CellExecutionError,), {"__module__": "__main__"})
        text = _ANSI.sub("", str(exc))
        sys.stdout.write(text + "\n")
        return error_class(f"{exc.evalue} ({where})"), text


def _will_run(cell: Any) -> bool:
    return bool(
        cell.cell_type == "code" and cell.source.strip() and "skip-execution" not in _tags(cell)
    )


_CLIENT_CLASS: type[Any] | None = None


def _client_class() -> type[Any]:
    """A NotebookClient that, on SIGTERM, stops its kernel, saves, then ends the process."""
    global _CLIENT_CLASS
    if _CLIENT_CLASS is not None:
        return _CLIENT_CLASS
    from nbclient import NotebookClient

    class TerminableClient(NotebookClient):  # type: ignore[misc]
        on_terminate: Callable[[], None] | None = None
        _terminating: asyncio.Future[None] | None = None

        async def async_start_new_kernel(self, **kwargs: Any) -> None:
            # nbclient installed its own SIGTERM handler just before; ours replaces it.
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self._sigterm)
            await super().async_start_new_kernel(**kwargs)

        def _sigterm(self) -> None:
            if self._terminating is None:
                self._terminating = asyncio.ensure_future(self._terminate())

        async def _terminate(self) -> None:
            try:
                if self.km is not None:
                    self.km.shutdown_wait_time = KERNEL_SHUTDOWN_SECONDS
                    await asyncio.wait_for(
                        self._async_cleanup_kernel(), KERNEL_SHUTDOWN_SECONDS + 1.0
                    )
                if self.on_terminate is not None:
                    self.on_terminate()
            finally:
                sys.stdout.flush()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)

    _CLIENT_CLASS = TerminableClient
    return TerminableClient
