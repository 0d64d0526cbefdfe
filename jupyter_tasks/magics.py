"""``%task`` and ``%%task``: background tasks from IPython (``%load_ext jupyter_tasks``).

Every problem (bad arguments, an unknown id, no server) is a one-line
``UsageError``, never a traceback: a magic is typed, so its errors must read
like a reply.
"""

from __future__ import annotations

import argparse
import ast
import shlex
from collections.abc import Callable
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from . import client as _client
from .errors import TasksError
from .handles import TaskCancelled, TaskFailed, TaskHandle
from .remote import eval_expression, exec_cell, names_read

SUBCOMMANDS = ("submit", "run", "status", "list", "cancel", "result", "logs", "board")
USAGE = """\
%task submit TYPE "description" [key=value ...] [-p PRIORITY] [-t TIMEOUT]
%task run [-o NAME] [-p PRIORITY] [-t TIMEOUT] EXPRESSION
%task status ID | %task list [-s STATUS] [-n LIMIT] | %task cancel ID
%task result ID [-o NAME] | %task logs ID | %task board
%%task [-o NAME[,NAME...]] [-p PRIORITY] [-t TIMEOUT]   (cell: runs in a worker)"""

#: Names IPython puts in the namespace that a worker has no use for.
_SKIP = {"In", "Out", "get_ipython", "exit", "quit", "_", "__", "___", "_ih", "_oh", "_dh"}


class _Parser(argparse.ArgumentParser):
    """argparse that raises a one-line ``UsageError`` instead of printing and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise UsageError(message.strip() if message else f"{self.prog}: see %task?")


def _int_option(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None


def _parser(sub: str) -> _Parser:
    p = _Parser(prog=f"%task {sub}", add_help=False)
    if sub in ("submit", "run", "cell"):
        p.add_argument("-p", "--priority", type=_int_option, default=None)
        p.add_argument("-t", "--timeout", type=_int_option, default=None)
    if sub in ("run", "result", "cell"):
        p.add_argument("-o", "--output", default=None)
    if sub == "submit":
        p.add_argument("task_type")
        p.add_argument("description")
        p.add_argument("params", nargs="*")
    if sub in ("status", "cancel", "result", "logs"):
        p.add_argument("task_id")
    if sub == "list":
        p.add_argument("-s", "--status", action="append", default=None)
        p.add_argument("-n", "--limit", type=_int_option, default=20)
    return p


def _literal(text: str) -> Any:
    """A Python literal where the text is one (``3``, ``[1, 2]``, ``'x'``), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%task: {exc}") from None


def _split_run(line: str) -> tuple[list[str], str]:
    """``-o y -p 3 f(x, 'a b')`` -> the option tokens and the untouched expression."""
    options: list[str] = []
    rest = line.strip()
    while rest.startswith("-"):
        head, _, rest = rest.partition(" ")
        if head == "--":  # the expression itself starts with "-"
            break
        options.append(head)
        if len(head) == 2:  # "-o NAME": the value is the next word
            value, _, rest = rest.strip().partition(" ")
            options.append(value)
        rest = rest.strip()
    return options, rest


@magics_class
class TaskMagics(Magics):
    """``%task ...`` subcommands and the ``%%task`` cell magic."""

    @line_cell_magic
    def task(self, line: str, cell: str | None = None) -> Any:
        """Background tasks. Usage:

        %task submit TYPE "description" [key=value ...] [-p PRIORITY] [-t TIMEOUT]
        %task run [-o NAME] [-p PRIORITY] [-t TIMEOUT] EXPRESSION
        %task status ID | list | cancel ID | result ID [-o NAME] | logs ID | board
        %%task [-o NAME[,NAME...]] [-p PRIORITY] [-t TIMEOUT]
        """
        try:
            if cell is not None:
                return self._cell(line, cell)
            sub, _, rest = line.strip().partition(" ")
            if sub not in SUBCOMMANDS:
                what = f"unknown subcommand {sub!r}" if sub else "missing subcommand"
                raise UsageError(f"%task: {what}; use one of {', '.join(SUBCOMMANDS)}")
            handler: Callable[[str], Any] = getattr(self, f"_{sub}")
            return handler(rest)
        except (TasksError, TaskFailed, TaskCancelled, TimeoutError) as exc:
            raise UsageError(f"%task: {exc}") from None

    # -- helpers ---------------------------------------------------------------------------

    @property
    def _ns(self) -> dict[str, Any]:
        assert self.shell is not None
        ns: dict[str, Any] = self.shell.user_ns
        return ns

    def _captured(self, source: str, mode: str) -> dict[str, Any]:
        """The namespace values the code reads (builtins and IPython's own names left out)."""
        try:
            names = names_read(source, mode)
        except SyntaxError as exc:
            raise UsageError(f"%task: invalid syntax: {exc.msg}") from None
        ns = self._ns
        return {n: ns[n] for n in names if n in ns and n not in _SKIP and not n.startswith("_i")}

    def _bind_on_completion(self, handle: TaskHandle, names: list[str], from_dict: bool) -> None:
        """Bind the result to ``names`` as soon as the task completes; the user keeps working."""
        ns = self._ns

        def bind(h: TaskHandle) -> None:
            if h.status != "completed":
                return
            value = h.result()
            if from_dict:
                for name in names:
                    ns[name] = value[name]
            else:
                ns[names[0]] = value
            h.bound_names.extend(names)

        handle.add_done_callback(bind)

    def _runner(self, opts: argparse.Namespace, description: str) -> _client.Runner:
        return _client.run.options(
            description=description[:10_000], priority=opts.priority, timeout=opts.timeout
        )

    # -- subcommands -----------------------------------------------------------------------

    def _submit(self, rest: str) -> TaskHandle:
        opts = _parser("submit").parse_args(_split(rest))
        parameters: dict[str, Any] = {}
        for item in opts.params:
            key, sep, value = item.partition("=")
            if not sep or not key.isidentifier():
                raise UsageError(f"%task submit: expected key=value, got {item!r}")
            parameters[key] = _literal(value)
        return _client.submit(
            opts.task_type,
            opts.description,
            parameters,
            priority=opts.priority or 1,
            timeout_seconds=opts.timeout,
        )

    def _run(self, rest: str) -> TaskHandle:
        options, expression = _split_run(rest)
        opts = _parser("run").parse_args(options)
        if not expression:
            raise UsageError("%task run: missing EXPRESSION")
        if opts.output is not None and not opts.output.isidentifier():
            raise UsageError(f"%task run: -o needs a variable name, not {opts.output!r}")
        namespace = self._captured(expression, "eval")
        handle = self._runner(opts, expression)(eval_expression, expression, namespace)
        if opts.output:
            self._bind_on_completion(handle, [opts.output], from_dict=False)
        return handle

    def _cell(self, line: str, cell: str) -> TaskHandle:
        opts = _parser("cell").parse_args(_split(line))
        outputs = [n.strip() for n in (opts.output or "").split(",") if n.strip()]
        bad = [n for n in outputs if not n.isidentifier()]
        if bad:
            raise UsageError(f"%%task: -o needs variable names, not {', '.join(map(repr, bad))}")
        namespace = self._captured(cell, "exec")
        first = next((ln.strip() for ln in cell.splitlines() if ln.strip()), "cell")
        handle = self._runner(opts, f"%%task {first}")(exec_cell, cell, namespace, outputs)
        if outputs:
            self._bind_on_completion(handle, outputs, from_dict=True)
        return handle

    def _status(self, rest: str) -> None:
        handle = _client.get(_parser("status").parse_args(_split(rest)).task_id)
        print(_line(handle))

    def _list(self, rest: str) -> None:
        opts = _parser("list").parse_args(_split(rest))
        group = _client.tasks(opts.status, limit=opts.limit)
        if not len(group):
            print("no tasks")
        for handle in group:
            print(_line(handle))

    def _cancel(self, rest: str) -> None:
        handle = _client.get(_parser("cancel").parse_args(_split(rest)).task_id)
        if not handle.cancel():
            raise UsageError(f"%task cancel: task {handle.task_id[:8]} already {handle.status}")
        print(f"cancelled {handle.task_id[:8]} {handle.description}")

    def _result(self, rest: str) -> Any:
        opts = _parser("result").parse_args(_split(rest))
        if opts.output is not None and not opts.output.isidentifier():
            raise UsageError(f"%task result: -o needs a variable name, not {opts.output!r}")
        handle = _client.get(opts.task_id)
        if not handle.done():
            raise UsageError(f"%task result: task {handle.task_id[:8]} is still {handle.status}")
        value = handle.result()
        if opts.output:
            self._ns[opts.output] = value
            return None
        return value

    def _logs(self, rest: str) -> None:
        handle = _client.get(_parser("logs").parse_args(_split(rest)).task_id)
        text = handle.logs()
        print(
            text if text else f"(task {handle.task_id[:8]} printed nothing)",
            end="" if text else "\n",
        )

    def _board(self, rest: str) -> Any:
        if rest.strip():
            raise UsageError("%task board: takes no arguments (use jt.board(...) to filter)")
        return _client.board()


def _line(handle: TaskHandle) -> str:
    """One task as one line: id, status, progress, message, description."""
    task = handle.task
    pct = "" if task.get("progress") is None else f" {float(task['progress']):.0%}"
    extra = ""
    if task.get("status") == "failed" and task.get("error"):
        extra = f"  {task['error'].get('type')}: {task['error'].get('message')}"
    elif task.get("message"):
        extra = f"  {task['message']}"
    return f"{handle.task_id[:8]}  {handle.status:<9}{pct:>5}  {handle.description}{extra}"


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_tasks``."""
    ipython.register_magics(TaskMagics)
