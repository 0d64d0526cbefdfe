"""``%task``/``%%task`` through IPython's own test shell, against a server subprocess."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from IPython import get_ipython
from IPython.core.error import UsageError
from IPython.testing.globalipapp import start_ipython

import jupyter_tasks.client as jt_client
from jupyter_tasks.client import Client
from jupyter_tasks.handles import TaskHandle

from .conftest import HANG, TasksServer, free_port


@pytest.fixture
def ip(client: Client) -> Iterator[Any]:
    start_ipython()  # once per session; later calls return None
    shell = get_ipython()
    shell.run_line_magic("load_ext", "jupyter_tasks")
    shell.run_cell(
        "def double(x):\n    return 2 * x\n"
        "def nap(seconds):\n    import time\n    time.sleep(seconds)\n    return seconds\n"
        "data = [1, 2, 3]\n"
    )
    yield shell
    for name in ("total", "result", "fitted", "mean", "y", "z", "again"):
        shell.user_ns.pop(name, None)


def task(ip: Any, line: str) -> Any:
    return ip.run_line_magic("task", line)


def error_of(ip: Any, line: str, cell: str | None = None) -> str:
    with pytest.raises(UsageError) as info:
        if cell is None:
            task(ip, line)
        else:
            ip.run_cell_magic("task", line, cell)
    message = str(info.value)
    assert "\n" not in message, message  # one line, always
    return message


def test_submit_parses_literals_and_options(ip: Any) -> None:
    handle = task(ip, "submit shell \"say hi\" command=\"['echo', 'hi there']\" -p 3 -t 30")
    assert isinstance(handle, TaskHandle)
    handle.wait(timeout=HANG)
    assert handle.status == "completed"
    assert handle.task["priority"] == 3 and handle.task["timeout_seconds"] == 30
    assert handle.task["parameters"] == {"command": ["echo", "hi there"]}
    assert "hi there" in handle.logs()


def test_run_binds_the_result_with_o_while_the_user_works(ip: Any) -> None:
    handle = task(ip, "run -o total double(sum(data)) + len(data)")
    assert "total" not in ip.user_ns or handle.done()
    ip.run_cell("data = None  # the user keeps working; the task has its own copy")
    handle.wait(timeout=HANG)
    assert ip.user_ns["total"] == 15
    assert handle.bound_names == ["total"]
    assert handle.description == "double(sum(data)) + len(data)"


def test_run_options_and_expression_with_spaces_and_quotes(ip: Any) -> None:
    handle = task(ip, "run -p 9 -t 50 -o z ' - '.join(['a', 'b'])")
    handle.wait(timeout=HANG)
    assert ip.user_ns["z"] == "a - b"
    assert handle.task["priority"] == 9 and handle.task["timeout_seconds"] == 50


def test_cell_magic_brings_named_variables_back(ip: Any) -> None:
    cell = (
        "values = [double(v) for v in data]\n"
        "mean = sum(values) / len(values)\n"
        "fitted = max(values)\n"
    )
    handle = ip.run_cell_magic("task", "-o mean,fitted", cell)
    handle.wait(timeout=HANG)
    assert (ip.user_ns["mean"], ip.user_ns["fitted"]) == (4.0, 6)
    assert "values" not in ip.user_ns
    plain = ip.run_cell_magic("task", "", "x = 20\nx + 1\n")
    assert plain.result(timeout=HANG) == 21


def test_status_list_cancel_result_logs_board(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    done = task(ip, "run double(21)")
    done.wait(timeout=HANG)
    assert task(ip, f"result {done.task_id}") == 42
    task(ip, f"result {done.task_id[:8]} -o again")
    assert ip.user_ns["again"] == 42
    long = task(ip, "run nap(600)")
    capsys.readouterr()
    task(ip, f"status {long.task_id}")
    assert capsys.readouterr().out.startswith(long.task_id[:8])
    task(ip, "list -n 5")
    listing = capsys.readouterr().out
    assert long.task_id[:8] in listing and done.task_id[:8] in listing
    task(ip, f"cancel {long.task_id[:8]}")
    assert capsys.readouterr().out.startswith(f"cancelled {long.task_id[:8]}")
    long.wait(timeout=HANG)
    assert long.status == "cancelled"
    printer = task(ip, "submit shell printer command=\"['echo', 'logged line']\"")
    printer.wait(timeout=HANG)
    capsys.readouterr()
    task(ip, f"logs {printer.task_id}")
    assert "logged line" in capsys.readouterr().out
    board = task(ip, "board")
    assert done.task_id in board.rows
    board.close()


def test_every_error_is_one_line(ip: Any) -> None:
    assert "missing subcommand" in error_of(ip, "")
    assert "unknown subcommand 'frobnicate'" in error_of(ip, "frobnicate")
    assert "required: task_type, description" in error_of(ip, "submit")
    assert "expected key=value, got 'oops'" in error_of(ip, 'submit shell "d" oops')
    assert "No closing quotation" in error_of(ip, 'submit shell "unclosed')
    assert "unrecognized arguments: -x" in error_of(ip, 'submit shell "d" -x')
    assert "unknown task_type 'nosuchtype'" in error_of(ip, 'submit nosuchtype "d"')
    assert "'high' is not an integer" in error_of(ip, "run -p high double(1)")
    assert "missing EXPRESSION" in error_of(ip, "run -o y")
    assert "-o needs a variable name" in error_of(ip, "run -o 1y double(1)")
    assert "invalid syntax" in error_of(ip, "run double(")
    assert "required: task_id" in error_of(ip, "status")
    assert "no task with id '" + "0" * 32 in error_of(ip, "status " + "0" * 32)
    assert "no task with id 'abcdef12'" in error_of(ip, "cancel abcdef12")
    assert "takes no arguments" in error_of(ip, "board now")
    assert "-o needs variable names" in error_of(ip, "-o 1bad", "x = 1")
    failed = task(ip, "run 1 / 0")
    failed.wait(timeout=HANG)
    assert "ZeroDivisionError: division by zero" in error_of(ip, f"result {failed.task_id}")
    assert "already failed" in error_of(ip, f"cancel {failed.task_id}")
    running = task(ip, "run nap(600)")
    assert "is still" in error_of(ip, f"result {running.task_id}")
    running.cancel()


def test_no_server_is_one_line(ip: Any, tasks_server: TasksServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}/"
    jt_client.connect(dead, "token")
    try:
        message = error_of(ip, "list")
        assert message.startswith(f"%task: cannot reach the jupyter-tasks server at {dead}")
    finally:
        jt_client.connect(tasks_server.url, tasks_server.token)


def test_usage_errors_print_one_line_in_a_cell(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ip.run_cell("%task status nope")
    captured = capsys.readouterr()
    lines = [ln for ln in (captured.out + captured.err).splitlines() if ln.strip()]
    assert lines == ["UsageError: %task: no task with id 'nope'"]
