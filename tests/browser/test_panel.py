"""The Tasks panel in a real JupyterLab and a real Chromium.

Every wait is on a DOM or server condition, bounded; no fixed sleeps.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"

PANEL = "#jupyter-tasks-panel"
TAB = '.jp-SideBar.jp-mod-left li[data-id="jupyter-tasks-panel"]'


def open_panel(page: Any) -> Any:
    """Open the Tasks sidebar (if closed) and return the panel locator."""
    panel = page.locator(PANEL)
    if not panel.is_visible():
        page.locator(TAB).click()
    panel.wait_for(state="visible")
    page.locator(f"{PANEL} .jp-TasksConnection.jp-mod-live").wait_for()
    return panel


def row(page: Any, task_id: str) -> Any:
    return page.locator(f'{PANEL} .jp-TasksRow[data-task-id="{task_id}"]')


def wait_row_status(page: Any, task_id: str, status: str, timeout: float = 60_000) -> None:
    page.locator(
        f'{PANEL} .jp-TasksRow[data-task-id="{task_id}"][data-status="{status}"]'
    ).wait_for(timeout=timeout)


def progress_of(page: Any, task_id: str) -> int | None:
    value = row(page, task_id).locator('[role="progressbar"]').get_attribute("aria-valuenow")
    return None if value is None else int(value)


def unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex[:6]}"


def test_panel_opens_with_status_item(lab: Any, lab_server: Any) -> None:
    panel = open_panel(lab)
    assert panel.locator(".jp-TasksToolbar-title").inner_text().lower() == "tasks"
    assert panel.get_by_role("button", name="Submit a task").is_visible()
    status_item = lab.locator(".jp-TasksStatus")
    status_item.wait_for()
    assert "running" in status_item.inner_text()
    # The status item opens the panel after it was closed.
    lab.locator(TAB).click()
    panel.wait_for(state="hidden")
    status_item.click()
    panel.wait_for(state="visible")


def test_rest_task_shows_progress_and_completes(lab: Any, lab_server: Any) -> None:
    open_panel(lab)
    description = unique("Progress in steps")
    task = lab_server.submit(
        task_type="python",
        description=description,
        parameters={"callable": "jt_browser_tasks:steps", "kwargs": {"n": 6, "delay": 0.6}},
        tags=["browser"],
    )
    task_id = task["task_id"]
    row(lab, task_id).wait_for()
    assert description in row(lab, task_id).inner_text()
    # The bar moves: some progress strictly between 0 and 100, then more, then done.
    bar = f'{PANEL} .jp-TasksRow[data-task-id="{task_id}"] [role="progressbar"]'
    lab.wait_for_function(
        """sel => {
            const v = Number(document.querySelector(sel)?.getAttribute('aria-valuenow'));
            return v > 0 && v < 100;
        }""",
        arg=bar,
        timeout=60_000,
    )
    first = progress_of(lab, task_id)
    assert first is not None and 0 < first < 100
    lab.wait_for_function(
        """([sel, first]) => {
            const v = Number(document.querySelector(sel)?.getAttribute('aria-valuenow'));
            return v > first;
        }""",
        arg=[bar, first],
        timeout=60_000,
    )
    ARTIFACTS.mkdir(exist_ok=True)
    lab.locator(PANEL).screenshot(path=str(ARTIFACTS / "panel-progress.png"))
    wait_row_status(lab, task_id, "completed")
    assert progress_of(lab, task_id) == 100
    assert lab_server.task(task_id)["status"] == "completed"


def test_cancel_from_row(lab: Any, lab_server: Any) -> None:
    open_panel(lab)
    task = lab_server.submit(
        task_type="python",
        description=unique("Long sleep to cancel"),
        parameters={"callable": "jt_browser_tasks:sleep_long"},
    )
    task_id = task["task_id"]
    wait_row_status(lab, task_id, "running")
    the_row = row(lab, task_id)
    the_row.hover()
    the_row.get_by_role("button", name="Cancel task").click()
    wait_row_status(lab, task_id, "cancelled", timeout=30_000)
    assert lab_server.wait_status(task_id, {"cancelled"}, timeout=30)["status"] == "cancelled"


def test_submit_dialog_creates_task_and_shows_server_validation(lab: Any, lab_server: Any) -> None:
    panel = open_panel(lab)
    dialog = lab.locator(".jp-TasksSubmitDialog")

    def open_dialog() -> None:
        panel.get_by_role("button", name="Submit a task").click()
        dialog.wait_for()
        lab.locator("#jp-tasks-type option[value='python']").wait_for(state="attached")
        dialog.locator("#jp-tasks-type").select_option("python")

    # A good request: the dialog closes and the task shows up in the list.
    description = unique("Submitted from the dialog")
    open_dialog()
    dialog.locator("#jp-tasks-param-callable").wait_for()
    ARTIFACTS.mkdir(exist_ok=True)
    dialog.screenshot(path=str(ARTIFACTS / "submit-dialog-form.png"))
    dialog.locator("#jp-tasks-description").fill(description)
    dialog.get_by_label("JSON").check()
    dialog.get_by_label("Parameters as JSON").fill(
        '{"callable": "jt_browser_tasks:steps", "kwargs": {"n": 2, "delay": 0.1}}'
    )
    dialog.locator("#jp-tasks-priority").fill("7")
    dialog.locator("#jp-tasks-tags").fill("dialog, browser")
    dialog.get_by_role("button", name="Submit task").click()
    dialog.wait_for(state="detached")
    created = panel.locator(".jp-TasksRow", has_text=description)
    created.wait_for()
    task_id = created.get_attribute("data-task-id")
    assert task_id
    server_task = lab_server.task(task_id)
    assert server_task["priority"] == 7
    assert server_task["tags"] == ["dialog", "browser"]
    assert server_task["parameters"]["callable"] == "jt_browser_tasks:steps"

    # Parameters the server refuses: its message shows inline, the dialog stays.
    bad = {"callable": "jt_browser_tasks:steps", "no_such_parameter": 1}
    status, body = lab_server.request(
        "POST", "/tasks", {"task_type": "python", "description": "probe", "parameters": bad}
    )
    assert status == 400, (status, body)
    open_dialog()
    dialog.locator("#jp-tasks-description").fill(unique("Bad parameters"))
    dialog.get_by_label("JSON").check()
    dialog.get_by_label("Parameters as JSON").fill(
        '{"callable": "jt_browser_tasks:steps", "no_such_parameter": 1}'
    )
    dialog.get_by_role("button", name="Submit task").click()
    error = dialog.locator(".jp-TasksForm-error")
    error.wait_for()
    assert error.inner_text().strip() == body["message"]
    ARTIFACTS.mkdir(exist_ok=True)
    dialog.screenshot(path=str(ARTIFACTS / "submit-dialog-validation.png"))

    # JSON that does not parse never reaches the server.
    dialog.get_by_label("Parameters as JSON").fill('{"callable": ')
    dialog.get_by_role("button", name="Submit task").click()
    lab.wait_for_function(
        """() => document.querySelector('.jp-TasksSubmitDialog .jp-TasksForm-error')
                    ?.textContent.includes('not valid JSON')"""
    )
    dialog.get_by_role("button", name="Cancel").click()
    dialog.wait_for(state="detached")


def test_failure_notification_and_traceback(lab: Any, lab_server: Any) -> None:
    open_panel(lab)
    description = unique("Doomed task")
    task = lab_server.submit(
        task_type="python",
        description=description,
        parameters={"callable": "jt_browser_tasks:fail", "kwargs": {"message": "kaboom"}},
    )
    task_id = task["task_id"]
    toast = lab.locator(".jp-Notification-Toast-error", has_text=description)
    toast.wait_for(timeout=60_000)
    assert "ValueError" in toast.inner_text()
    toast.get_by_role("button", name="Show").click()
    details = lab.locator(f"{PANEL} .jp-TasksDetails")
    details.wait_for()
    traceback = details.locator(".jp-TasksDetails-traceback")
    traceback.wait_for()
    text = traceback.inner_text()
    assert "Traceback" in text and "ValueError: kaboom" in text and "_explode" in text
    assert "kaboom" in details.locator(".jp-TasksDetails-errorLine").inner_text()
    # The log has what the task printed before failing.
    lab.wait_for_function(
        """() => document.querySelector('.jp-TasksDetails-log')
                    ?.textContent.includes('about to fail')""",
        timeout=30_000,
    )
    ARTIFACTS.mkdir(exist_ok=True)
    lab.locator(PANEL).screenshot(path=str(ARTIFACTS / "panel-details-traceback.png"))
    assert lab_server.task(task_id)["status"] == "failed"
    details.get_by_role("button", name="Back to the task list").click()
    row(lab, task_id).wait_for()


def test_overview_screenshot(lab: Any, lab_server: Any) -> None:
    """A panel with groups and every status; saved for the README on request."""
    open_panel(lab)
    step = {"callable": "jt_browser_tasks:steps", "kwargs": {"n": 3, "delay": 0.2}}
    status, batch = lab_server.request(
        "POST",
        "/tasks/batch",
        {
            "tasks": [
                {
                    "task_type": "python",
                    "description": f"Sweep lr=0.0{i}",
                    "parameters": step,
                    "tags": ["sweep"],
                }
                for i in range(1, 5)
            ]
        },
    )
    assert status == 201, (status, batch)
    group = batch["tasks"][0]["group"]
    done = lab_server.submit(
        task_type="shell", description="Export report", parameters={"command": "echo done"}
    )
    failed = lab_server.submit(
        task_type="python",
        description="Fetch remote data",
        parameters={"callable": "jt_browser_tasks:fail"},
    )
    running = lab_server.submit(
        task_type="python",
        description="Train model",
        priority=8,
        parameters={"callable": "jt_browser_tasks:steps", "kwargs": {"n": 40, "delay": 0.5}},
        tags=["gpu"],
    )
    for task in batch["tasks"] + [done]:
        lab_server.wait_status(task["task_id"], {"completed"})
    lab_server.wait_status(failed["task_id"], {"failed"})
    wait_row_status(lab, running["task_id"], "running")
    lab.wait_for_function(
        """sel => Number(document.querySelector(sel)?.getAttribute('aria-valuenow')) >= 30""",
        arg=f'{PANEL} .jp-TasksRow[data-task-id="{running["task_id"]}"] [role="progressbar"]',
        timeout=60_000,
    )
    lab.locator(f'{PANEL} .jp-TasksGroupRow[data-group="{group}"]').click()
    lab.keyboard.press("ArrowRight")
    lab.locator(f'{PANEL} .jp-TasksGroupRow[data-group="{group}"][aria-expanded="true"]').wait_for()
    # Dismiss toasts so they do not cover the picture.
    lab.evaluate("() => document.querySelectorAll('.Toastify__toast').forEach(t => t.remove())")
    ARTIFACTS.mkdir(exist_ok=True)
    clip = {"x": 0, "y": 0, "width": 760, "height": 560}
    lab.screenshot(path=str(ARTIFACTS / "panel-overview.png"), clip=clip)
    if os.environ.get("JUPYTER_TASKS_UPDATE_SCREENSHOT") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        lab.screenshot(path=str(REPO / "docs" / "panel.png"), clip=clip)
    lab.evaluate(
        """() => window.jupyterapp.commands.execute(
                'apputils:change-theme', {theme: 'JupyterLab Dark'})"""
    )
    lab.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
    lab.screenshot(path=str(ARTIFACTS / "panel-overview-dark.png"), clip=clip)
    lab.evaluate(
        """() => window.jupyterapp.commands.execute(
                'apputils:change-theme', {theme: 'JupyterLab Light'})"""
    )
    lab.wait_for_function("() => document.body.dataset.jpThemeLight === 'true'", timeout=30_000)
    lab_server.request("POST", f"/tasks/{running['task_id']}/cancel")


def test_hundreds_of_rows_stay_windowed(lab: Any, lab_server: Any) -> None:
    """A 300-task batch: one aggregate row; expanded, only the visible rows are in the DOM."""
    open_panel(lab)
    count = 300
    # The tasks end when the test says so, after the keyboard part: no row changes under it.
    gate = lab_server.root / f"gate-{uuid.uuid4().hex}"
    status, batch = lab_server.request(
        "POST",
        "/tasks/batch",
        {
            "tasks": [
                {
                    "task_type": "python",
                    "description": f"Many #{i:03d}",
                    "parameters": {
                        "callable": "jt_browser_tasks:noop",
                        "kwargs": {"gate": str(gate)},
                    },
                }
                for i in range(count)
            ]
        },
    )
    assert status == 201, (status, batch)
    group = batch["tasks"][0]["group"]
    group_row = lab.locator(f'{PANEL} .jp-TasksGroupRow[data-group="{group}"]')
    # The batch's events arrive one by one: wait until the row counts them all.
    lab.wait_for_function(
        """([sel, n]) => document.querySelector(sel)?.textContent.includes(`${n} tasks`)""",
        arg=[f'{PANEL} .jp-TasksGroupRow[data-group="{group}"]', count],
        timeout=60_000,
    )
    group_row.click()
    lab.keyboard.press("ArrowRight")
    lab.locator(f'{PANEL} .jp-TasksGroupRow[data-group="{group}"][aria-expanded="true"]').wait_for()
    rendered = lab.locator(f"{PANEL} .jp-TasksRow").count()
    assert 0 < rendered < 60, f"{rendered} rows in the DOM for {count + 1} rows"
    # Keyboard: End focuses the last row, which is rendered on demand.
    lab.keyboard.press("End")
    lab.wait_for_function(
        """() => {
            const el = document.activeElement;
            return el?.getAttribute('role') === 'treeitem'
                && el.getAttribute('aria-posinset') === el.getAttribute('aria-setsize');
        }""",
        timeout=60_000,
    )
    assert lab.locator(f"{PANEL} .jp-TasksRow").count() < 60
    lab.keyboard.press("Home")
    lab.wait_for_function(
        "group => document.activeElement?.dataset.group === group", arg=group, timeout=60_000
    )
    gate.write_text("go")
    # Every task of the batch finishes and the aggregate row says so.
    lab.wait_for_function(
        """([sel, n]) => document.querySelector(sel)?.textContent.includes(`${n} done`)""",
        arg=[f'{PANEL} .jp-TasksGroupRow[data-group="{group}"]', count],
        timeout=240_000,
    )
    # One notification for the whole group, none per task.
    lab.locator(".Toastify__toast", has_text=f"Group of {count} tasks finished").wait_for()
    assert lab.locator(".Toastify__toast", has_text="Many #").count() == 0


def test_polling_fallback_when_the_socket_fails(new_page: Any, lab_server: Any) -> None:
    """With /tasks/events refused, the panel falls back to polling GET /tasks."""

    def refuse_socket(page: Any) -> None:
        page.route_web_socket("**/tasks/events*", lambda ws: ws.close())

    url = f"{lab_server.url}/lab?reset&token={lab_server.token}"
    with new_page(url, "test_polling_fallback", refuse_socket) as page:
        page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=90_000)
        page.locator(TAB).click()
        page.locator(f"{PANEL} .jp-TasksConnection.jp-mod-polling").wait_for(timeout=60_000)
        task = lab_server.submit(
            task_type="python",
            description=unique("Seen by polling"),
            parameters={"callable": "jt_browser_tasks:steps", "kwargs": {"n": 1, "delay": 0.1}},
        )
        wait_row_status(page, task["task_id"], "completed", timeout=60_000)


def test_panel_in_notebook_7(new_page: Any, notebook_server: Any) -> None:
    """Notebook 7 has no JupyterLab shell: the panel goes to its left area."""
    url = f"{notebook_server.url}/tree?token={notebook_server.token}"
    with new_page(url, "test_panel_in_notebook_7") as page:
        page.wait_for_function(
            "() => window.jupyterapp?.commands?.hasCommand('jupyter-tasks:open')",
            timeout=90_000,
        )
        page.evaluate("() => window.jupyterapp.commands.execute('jupyter-tasks:open')")
        page.locator(f"{PANEL} .jp-TasksConnection.jp-mod-live").wait_for()
        task = notebook_server.submit(
            task_type="python",
            description=unique("From Notebook 7"),
            parameters={"callable": "jt_browser_tasks:steps", "kwargs": {"n": 2, "delay": 0.1}},
        )
        wait_row_status(page, task["task_id"], "completed")


def test_notifications_setting_failures_only(new_page: Any, lab_server: Any) -> None:
    """With "failures only", a completed task raises no notification and a failed one does."""
    path = "/lab/api/settings/jupyter-tasks:plugin"

    def set_mode(mode: str) -> None:
        status, body = lab_server.request("PUT", path, {"raw": json.dumps({"notifications": mode})})
        assert status == 204, (status, body)

    set_mode("failures")
    try:
        url = f"{lab_server.url}/lab?reset&token={lab_server.token}"
        with new_page(url, "test_notifications_setting_failures_only") as page:
            page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=90_000)
            open_panel(page)
            quiet = unique("Quiet success")
            ok = lab_server.submit(
                task_type="python",
                description=quiet,
                parameters={"callable": "jt_browser_tasks:noop"},
            )
            # The panel has applied the transition, so the notifier has decided.
            wait_row_status(page, ok["task_id"], "completed")
            loud = unique("Loud failure")
            lab_server.submit(
                task_type="python",
                description=loud,
                parameters={"callable": "jt_browser_tasks:fail"},
            )
            page.locator(".jp-Notification-Toast-error", has_text=loud).wait_for(timeout=60_000)
            assert page.locator(".Toastify__toast", has_text=quiet).count() == 0
    finally:
        set_mode("all")
