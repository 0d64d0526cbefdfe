"""Live rows for tasks, built from ipywidgets 8 core widgets (so any frontend shows them).

A row changes only on the kernel's event-loop thread (the shared subscription
calls it), under the row's lock for the few changes made elsewhere (the first
render, the result preview, the Cancel button).  Status changes are rendered
at once; progress is throttled per row: the first update goes out at once, later
ones at most every ``THROTTLE_SECONDS``, and the latest value always wins.
"""

from __future__ import annotations

import html
import sys
import threading
import time
from collections import OrderedDict
from datetime import datetime
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from .handles import TaskDict, is_finished, is_newer
from .live import Throttle

if TYPE_CHECKING:
    from .client import Client
    from .handles import TaskGroup, TaskHandle
    from .transport import ListQuery

__all__ = ["Board", "GroupRow", "TaskRow", "widgets_available"]


BAR_STYLE = {
    "created": "",
    "running": "info",
    "completed": "success",
    "failed": "danger",
    "cancelled": "warning",
}
_STATUS_COLOR = {
    "created": "var(--jp-ui-font-color2, #757575)",
    "running": "var(--jp-brand-color1, #1976d2)",
    "completed": "var(--jp-success-color1, #388e3c)",
    "failed": "var(--jp-error-color1, #d32f2f)",
    "cancelled": "var(--jp-warn-color1, #f57c00)",
}
_STATUS_LABEL = {
    "created": "queued",
    "running": "running",
    "completed": "done",
    "failed": "failed",
    "cancelled": "cancelled",
}


def widgets_available() -> bool:
    """True inside a Jupyter kernel, where a frontend can render widgets."""
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None) is not None


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def elapsed_seconds(task: TaskDict, now: float | None = None) -> float | None:
    """Seconds the task has run (or ran); None before it started."""
    start = _parse_time(task.get("started_at"))
    if start is None:
        return None
    end = _parse_time(task.get("finished_at")) or (now if now is not None else time.time())
    return max(0.0, end - start)


def format_seconds(seconds: float | None) -> str:
    """``4.2s``, ``3m 04s``, ``1h 02m``."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"


def _status_html(status: str) -> str:
    color = _STATUS_COLOR.get(status, "inherit")
    label = _STATUS_LABEL.get(status, status)
    return f'<span style="color:{color};font-weight:600">{html.escape(label)}</span>'


class TaskRow:
    """One task: description, status, bar, message, elapsed, Cancel; error or result below."""

    def __init__(self, handle: TaskHandle) -> None:
        self.handle = handle
        self._hub = handle._client.hub
        self._lock = threading.RLock()
        self._task: TaskDict = handle.task
        self._build()
        self._throttle = Throttle(self._hub, self._render)
        self.cancel_button.on_click(self._on_cancel)
        self.traceback_button.observe(self._on_traceback, names=["value"])
        with self._lock:  # events that arrive meanwhile wait, then render on top
            if not is_finished(self._task):
                cached = self._hub.watch(handle.task_id, self._on_task)
                for newer in (cached, handle.task):  # whatever happened before watch() took
                    if newer is not None and is_newer(self._task, newer):
                        self._task = newer
            self._render(self._task)
        if not is_finished(self._task):
            self._hub.ticker.add(self)
        handle.add_done_callback(self._on_settled)

    def _build(self) -> None:
        self.title = w.HTML(layout=w.Layout(flex="1 1 12em", min_width="8em", overflow="hidden"))
        self.status = w.HTML(layout=w.Layout(width="6.5em"))
        self.bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, layout=w.Layout(width="11em"))
        self.info = w.HTML(layout=w.Layout(flex="1 1 10em", overflow="hidden"))
        self.elapsed = w.HTML(layout=w.Layout(width="5.5em"))
        self.cancel_button = w.Button(
            description="Cancel",
            icon="stop",
            tooltip="Cancel this task",
            layout=w.Layout(width="auto"),
        )
        self.details = w.HTML(layout=w.Layout(flex="1 1 auto", overflow="hidden"))
        self.traceback_button = w.ToggleButton(
            description="Traceback", icon="list", layout=w.Layout(width="auto", display="none")
        )
        self.traceback = w.HTML(layout=w.Layout(display="none"))
        top = w.HBox(
            [self.status, self.title, self.bar, self.info, self.elapsed, self.cancel_button],
            layout=w.Layout(align_items="center"),
        )
        below = w.HBox([self.details, self.traceback_button], layout=w.Layout(align_items="center"))
        self.widget = w.VBox([top, below, self.traceback])

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # -- updates ----------------------------------------------------------------------------

    def _on_task(self, task: TaskDict) -> None:
        """From the subscription: transitions at once, progress throttled."""
        with self._lock:
            if not is_newer(self._task, task, ordered=True):
                return
            previous = self._task.get("status")
            self._task = task
        if task.get("status") != previous or is_finished(task):
            self._throttle.now(task)
        else:
            self._throttle.soon(task)
        if is_finished(task):
            self._hub.unwatch(self.handle.task_id, self._on_task)

    def _render(self, task: TaskDict) -> None:
        """Push a state to the models; what changes with a transition goes first."""
        with self._lock:
            status = str(task.get("status"))
            self.bar.bar_style = BAR_STYLE.get(status, "")
            self.bar.value = _bar_value(task)
            self.status.value = _status_html(status)
            self.info.value = html.escape(_info_text(task))
            self.elapsed.value = format_seconds(elapsed_seconds(task))
            self.cancel_button.layout.display = "none" if is_finished(task) else ""
            short = html.escape(task["task_id"][:8])
            desc = html.escape(str(task.get("description", "")))
            self.title.value = (
                f'<span title="{desc}">{desc}</span> '
                f'<span style="color:var(--jp-ui-font-color3,#9e9e9e)">{short}</span>'
            )
            if status == "failed":
                self._render_error(task.get("error") or {})

    def _render_error(self, error: TaskDict) -> None:
        kind = html.escape(str(error.get("type", "Error")))
        message = html.escape(str(error.get("message", "")))
        color = _STATUS_COLOR["failed"]
        self.details.value = f'<span style="color:{color}"><b>{kind}</b>: {message}</span>'
        tb = error.get("traceback")
        if tb:
            self.traceback.value = f'<pre style="font-size:90%">{html.escape(tb)}</pre>'
            self.traceback_button.layout.display = ""

    def tick(self, now: float) -> bool:
        """Refresh the elapsed time; False once the row no longer needs ticks."""
        with self._lock:
            task = self._task
            if is_finished(task):
                return False
            if task.get("status") == "running":
                self.elapsed.value = format_seconds(elapsed_seconds(task, now))
        return True

    def _on_settled(self, handle: TaskHandle) -> None:
        handle._client.pool.submit(self._show_result, handle)  # display never waits on HTTP

    def _show_result(self, handle: TaskHandle) -> None:
        """Once finished (and ``-o`` bound): the result preview, from the server's JSON."""
        if handle.status != "completed":
            return
        try:
            preview = handle.preview()
        except Exception:
            return
        text = html.escape(_short(str(preview.get("repr", "")), 200))
        kind = html.escape(str(preview.get("type", "")))
        bound = "".join(f" → <code>{html.escape(n)}</code>" for n in handle.bound_names)
        with self._lock:
            self.details.value = f"<code>{text}</code> <small>({kind})</small>{bound}"

    def _on_cancel(self, _button: Any) -> None:
        self.cancel_button.disabled = True
        try:
            self.handle.cancel()
        except Exception as exc:
            with self._lock:
                self.details.value = html.escape(f"cancel failed: {exc}")
        finally:
            self.cancel_button.disabled = False

    def _on_traceback(self, change: dict[str, Any]) -> None:
        self.traceback.layout.display = "" if change["new"] else "none"


def _bar_value(task: TaskDict) -> float:
    if task.get("status") == "completed":
        return 1.0
    progress = task.get("progress")
    if progress is None:
        return 1.0 if is_finished(task) else 0.0
    return min(1.0, max(0.0, float(progress)))


def _info_text(task: TaskDict) -> str:
    parts = []
    if task.get("progress") is not None:
        parts.append(f"{float(task['progress']):.0%}")
    if task.get("message"):
        parts.append(_short(str(task["message"]), 80))
    if task.get("attempt", 0) > 1:
        parts.append(f"attempt {task['attempt']}")
    return " · ".join(parts)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class GroupRow:
    """A sweep as one row: counts, one bar, Cancel all, and the failures with their errors."""

    MAX_FAILURES = 5

    def __init__(self, group: TaskGroup) -> None:
        self.group = group
        self._hub = group._client.hub
        self._lock = threading.RLock()
        self._index = {h.task_id: i for i, h in enumerate(group.handles)}
        self._tasks: dict[str, TaskDict] = {}
        self._started = time.time()
        self.title = w.HTML(
            value=html.escape(_group_title(group)),
            layout=w.Layout(flex="1 1 12em", overflow="hidden"),
        )
        self.bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, layout=w.Layout(width="14em"))
        self.counts = w.HTML(layout=w.Layout(flex="1 1 14em"))
        self.cancel_button = w.Button(
            description="Cancel all", icon="stop", layout=w.Layout(width="auto")
        )
        self.failures = w.HTML()
        self.cancel_button.on_click(lambda _b: self.group.cancel())
        self.widget = w.VBox(
            [
                w.HBox(
                    [self.title, self.bar, self.counts, self.cancel_button],
                    layout=w.Layout(align_items="center"),
                ),
                self.failures,
            ]
        )
        self._throttle = Throttle(self._hub, lambda _v: self._render())
        for handle in group.handles:
            task = self._tasks[handle.task_id] = handle.task  # decide on this one snapshot
            if not is_finished(task):
                cached = self._hub.watch(handle.task_id, self._on_task)
                for newer in (cached, handle.task):  # whatever happened before watch() took
                    if newer is not None:
                        self._merge(newer)
        self._render()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _merge(self, task: TaskDict) -> bool:
        with self._lock:
            current = self._tasks.get(task["task_id"])
            if not is_newer(current, task):
                return False
            self._tasks[task["task_id"]] = task
            return True

    def _on_task(self, task: TaskDict) -> None:
        if not self._merge(task):
            return
        if is_finished(task):
            self._hub.unwatch(task["task_id"], self._on_task)
        if all(is_finished(t) for t in self._tasks.values()):
            self._throttle.now(None)
        else:
            self._throttle.soon(None)

    def _render(self) -> None:
        with self._lock:
            tasks = list(self._tasks.values())
            counts: dict[str, int] = {}
            for task in tasks:
                counts[task["status"]] = counts.get(task["status"], 0) + 1
            total = len(tasks) or 1
            finished = sum(counts.get(s, 0) for s in ("completed", "failed", "cancelled"))
            running_part = sum(
                float(t.get("progress") or 0) for t in tasks if t["status"] == "running"
            )
            self.bar.value = min(1.0, (finished + running_part) / total)
            self.bar.bar_style = _group_style(counts, finished == len(tasks))
            self.counts.value = _counts_html(counts, len(tasks))
            self.cancel_button.layout.display = "none" if finished == len(tasks) else ""
            self.failures.value = self._failures_html(tasks)

    def _failures_html(self, tasks: list[TaskDict]) -> str:
        failed = [t for t in tasks if t["status"] == "failed"]
        if not failed:
            return ""
        failed.sort(key=lambda t: self._index.get(t["task_id"], 0))
        lines = []
        for task in failed[: self.MAX_FAILURES]:
            error = task.get("error") or {}
            index = self._index.get(task["task_id"], "?")
            kind = html.escape(str(error.get("type")))
            message = html.escape(_short(str(error.get("message", "")), 160))
            lines.append(f"[{index}] <b>{kind}</b>: {message}")
        if len(failed) > self.MAX_FAILURES:
            lines.append(f"… and {len(failed) - self.MAX_FAILURES} more")
        color = _STATUS_COLOR["failed"]
        return f'<div style="color:{color}">' + "<br>".join(lines) + "</div>"


def _group_title(group: TaskGroup) -> str:
    if not group.handles:
        return "no tasks"
    name = group.handles[0].description.split("(")[0].split(" [")[0]
    same = all(h.description.startswith(name) for h in group.handles)
    return f"{name} \u00d7 {len(group)}" if same else f"{len(group)} tasks"


def _group_style(counts: dict[str, int], all_done: bool) -> str:
    if counts.get("failed"):
        return "danger"
    if not all_done:
        return "info"
    return "warning" if counts.get("cancelled") else "success"


def _counts_html(counts: dict[str, int], total: int) -> str:
    done = counts.get("completed", 0)
    parts = [f"<b>{done}/{total}</b> done"]
    for status in ("failed", "cancelled", "running", "created"):
        if counts.get(status):
            parts.append(f"{_status_html(status)} {counts[status]}")
    return " · ".join(parts)


class Board:
    """Tasks as live rows, newest first; rows are added as new tasks appear."""

    def __init__(self, client: Client, query: ListQuery) -> None:
        self._client = client
        self._query = query
        self._lock = threading.RLock()
        self.rows: OrderedDict[str, TaskRow] = OrderedDict()
        for task in client._all(query, query.limit):
            self.rows[task["task_id"]] = TaskRow(client.handle(task))
        self.header = w.HTML()
        self.body = w.VBox([r.widget for r in self.rows.values()])
        self.widget = w.VBox([self.header, self.body])
        self._render_header()
        client.hub.listen(self._on_any)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _matches(self, task: TaskDict) -> bool:
        q = self._query
        return (
            (not q.statuses or task.get("status") in q.statuses)
            and (q.task_type is None or task.get("task_type") == q.task_type)
            and (q.group is None or task.get("group") == q.group)
            and (q.tag is None or q.tag in (task.get("tags") or []))
        )

    def _on_any(self, task: TaskDict) -> None:
        """A task the board has not shown yet goes on top, if it matches."""
        with self._lock:
            if task["task_id"] in self.rows or not self._matches(task):
                return
            row = TaskRow(self._client.handle(task))
            self.rows[task["task_id"]] = row
            self.rows.move_to_end(task["task_id"], last=False)
            while len(self.rows) > self._query.limit:
                self.rows.popitem(last=True)
            self.body.children = [r.widget for r in self.rows.values()]
            self._render_header()

    def _render_header(self) -> None:
        label = html.escape(self._client.backend.label)
        self.header.value = (
            f"<b>jupyter-tasks</b> <small>{label} · {len(self.rows)} shown, newest first</small>"
        )

    def close(self) -> None:
        """Stop adding rows."""
        self._client.hub.unlisten(self._on_any)
