"""Fixtures for notebook tasks: a root directory, notebooks built with nbformat, an orchestrator.

The orchestrator runs its default (local) executor: real worker processes, real kernels.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from jupyter_tasks.orchestrator import EngineConfig, Orchestrator

KERNELSPEC = {"name": "python3", "language": "python", "display_name": "Python 3"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


@pytest.fixture
def orch(
    tmp_path: Path, root: Path, jp_asyncio_loop: asyncio.AbstractEventLoop
) -> Iterator[Orchestrator]:
    config = EngineConfig(
        db_path=str(tmp_path / "db" / "tasks.db"),
        root_dir=str(root),
        max_workers=2,
        kill_grace_seconds=2.0,
    )
    orchestrator = Orchestrator(config)
    jp_asyncio_loop.run_until_complete(orchestrator.start())
    yield orchestrator
    jp_asyncio_loop.run_until_complete(orchestrator.stop())


@pytest.fixture
def write_notebook(root: Path) -> Callable[..., Path]:
    """``write_notebook("a.ipynb", "code", ("code", ["tag"]), "# md")``: cells in order.

    A string starting with ``#md `` is a markdown cell; a tuple carries tags.
    """

    def write(name: str, *cells: Any, metadata: dict[str, Any] | None = None) -> Path:
        nb = new_notebook(metadata={"kernelspec": KERNELSPEC} if metadata is None else metadata)
        for cell in cells:
            source, tags = cell if isinstance(cell, tuple) else (cell, [])
            if source.startswith("#md "):
                nb.cells.append(new_markdown_cell(source[4:]))
            else:
                nb.cells.append(new_code_cell(source, metadata={"tags": tags} if tags else {}))
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, path)
        return path

    return write
