"""Widget model state through a task's life: value, bar style, description, buttons."""

from __future__ import annotations

import threading
import time
import types
import uuid
from collections.abc import Callable
from typing import Any

import jupyter_tasks as jt
from jupyter_tasks.client import Client
from jupyter_tasks.live import Throttle
from jupyter_tasks.widget import GroupRow, TaskRow

from .conftest import HANG


def until(predicate: Callable[[], bool], what: str = "condition") -> None:
    """Wait (bounded) for a state the event-loop thread is about to set."""
    deadline = time.monotonic() + HANG
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def gate(tmp_path: Any) -> tuple[str, Callable[[], None]]:
    """A file a task waits for, so the test decides when it moves on."""
    path = str(tmp_path / f"gate-{uuid.uuid4().hex}")

    def open_gate() -> None:
        with open(path, "w"):
            pass

    return path, open_gate


def _staged(path: str) -> str:
    import os
    import time

    import jupyter_tasks as jt

    jt.set_progress(0.25, "waiting for the gate")
    while not os.path.exists(path):
        time.sleep(0.01)
    jt.set_progress(0.75, "almost")
    return "finished"


# Sent by value, as a notebook's functions are (a test module is not importable in workers).
staged = types.FunctionType(_staged.__code__, {"__name__": "__main__"}, "staged")


def test_row_follows_a_task_to_completion(client: Client, tmp_path: Any) -> None:
    path, open_gate = gate(tmp_path)
    handle = jt.run.options(description="staged work")(staged, path)
    row = TaskRow(handle)
    assert "staged work" in row.title.value
    assert handle.task_id[:8] in row.title.value
    until(lambda: row.bar.value == 0.25, "progress 0.25")
    assert row.bar.bar_style == "info"
    assert "running" in row.status.value
    assert "waiting for the gate" in row.info.value
    assert row.cancel_button.layout.display != "none"
    open_gate()
    until(lambda: row.bar.bar_style == "success", "completed")
    assert row.bar.value == 1.0
    assert "done" in row.status.value
    assert row.cancel_button.layout.display == "none"
    assert row.elapsed.value.endswith("s")
    until(lambda: "finished" in row.details.value, "the result preview")
    assert "str" in row.details.value


def test_row_shows_the_error_and_the_traceback_on_demand(client: Client) -> None:
    def broken() -> None:
        raise KeyError("missing column")

    handle = jt.run(broken)
    row = TaskRow(handle)
    until(lambda: row.bar.bar_style == "danger", "failed")
    assert "KeyError" in row.details.value and "missing column" in row.details.value
    assert row.traceback_button.layout.display != "none"
    assert row.traceback.layout.display == "none"
    row.traceback_button.value = True
    assert row.traceback.layout.display != "none"
    assert "in broken" in row.traceback.value


def test_cancel_button_cancels(client: Client, tmp_path: Any) -> None:
    path, open_gate = gate(tmp_path)
    handle = jt.run(staged, path)
    row = TaskRow(handle)
    until(lambda: row.bar.value == 0.25, "running")
    row.cancel_button.click()
    until(lambda: row.bar.bar_style == "warning", "cancelled")
    assert "cancelled" in row.status.value
    assert row.cancel_button.layout.display == "none"
    assert handle.status == "cancelled"
    open_gate()


def test_group_row_counts_and_failures(client: Client) -> None:
    sweep = jt.map(lambda x: 10 // x, [1, 0, 5])
    row = GroupRow(sweep)
    sweep.wait(timeout=HANG)
    until(lambda: "3" in row.counts.value and row.bar.value == 1.0, "all finished")
    assert row.bar.bar_style == "danger"
    assert "<b>2/3</b> done" in row.counts.value
    assert "[1]" in row.failures.value and "ZeroDivisionError" in row.failures.value
    assert row.cancel_button.layout.display == "none"


def test_board_adds_new_tasks_on_top(client: Client) -> None:
    tag = uuid.uuid4().hex[:12]
    first = jt.run.options(tags=[tag], description="first")(int, "1")
    first.wait(timeout=HANG)
    board = jt.board(tag=tag)
    assert list(board.rows) == [first.task_id]
    second = jt.run.options(tags=[tag], description="second")(int, "2")
    until(lambda: second.task_id in board.rows, "the new row")
    assert list(board.rows) == [second.task_id, first.task_id]
    assert board.body.children[0] is board.rows[second.task_id].widget
    other = jt.run.options(tags=["not-on-this-board"])(int, "3")
    other.wait(timeout=HANG)
    second.wait(timeout=HANG)
    assert other.task_id not in board.rows
    board.close()


class FakeHub:
    """Timers recorded instead of scheduled: the test fires them."""

    def __init__(self) -> None:
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def call_later(self, delay: float, fn: Callable[[], None]) -> Any:
        self.timers.append((delay, fn))
        return threading.Timer(0, lambda: None)  # has cancel()


def test_throttle_sends_the_first_and_the_latest() -> None:
    hub = FakeHub()
    rendered: list[int] = []
    throttle = Throttle(hub, rendered.append, interval=10.0)  # type: ignore[arg-type]
    for value in range(100):
        throttle.soon(value)
    assert rendered == [0]  # the leading edge at once
    assert len(hub.timers) == 1  # one timer, whatever the number of updates
    hub.timers[0][1]()
    assert rendered == [0, 99]  # then only the latest
    throttle.now(-1)  # a transition is never held back
    assert rendered == [0, 99, -1]
    throttle.soon(None)  # whatever the value, even None, the latest is rendered
    hub.timers[-1][1]()
    assert rendered == [0, 99, -1, None]
