"""What ``%task run`` and ``%%task`` execute in a worker: code plus the names it reads.

Kept tiny and import-free: workers unpickle references to these functions, so
importing this module must not pull in IPython or widgets.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from typing import Any


def names_read(source: str, mode: str = "exec") -> list[str]:
    """Every name the code loads (also inside functions and comprehensions), in order."""
    tree = ast.parse(source, mode=mode)
    seen: dict[str, None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            seen.setdefault(node.id, None)
    return list(seen)


def eval_expression(source: str, namespace: dict[str, Any]) -> Any:
    """Evaluate one expression with the given globals (``%task run``)."""
    code = compile(source, "<%task run>", "eval")
    return eval(code, dict(namespace))


def exec_cell(source: str, namespace: dict[str, Any], outputs: Iterable[str] = ()) -> Any:
    """Run a cell (``%%task``): the named outputs as a dict, else the last expression's value."""
    globals_ = dict(namespace)
    tree = ast.parse(source, mode="exec")
    outputs = list(outputs)
    last = None
    if not outputs and tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body[-1].value)
        del tree.body[-1]
    exec(compile(tree, "<%%task>", "exec"), globals_)
    if outputs:
        missing = [name for name in outputs if name not in globals_]
        if missing:
            raise NameError(f"the cell did not assign {', '.join(missing)}")
        return {name: globals_[name] for name in outputs}
    if last is not None:
        return eval(compile(last, "<%%task>", "eval"), globals_)
    return None
