"""Fixtures for the Tasks panel's browser tests.

A real ``jupyter lab`` runs in a subprocess (free port, a token, a temporary
root, config, data, workspace and settings directories), with the task
module the tests submit written into its root. Debian's Chromium is driven by
Python Playwright. Outside CI the tests skip when Chromium, Playwright or a
built labextension is missing; with ``CI=true`` they fail instead.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
BUILT_EXTENSION = REPO / "jupyter_tasks" / "labextension"
IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_TIMEOUT = 90.0

TASK_MODULE = '''\
"""Tasks the browser tests submit (python task type: "jt_browser_tasks:<name>")."""

import os
import time

from jupyter_tasks import set_progress


def steps(n=6, delay=0.6):
    """Report progress in ``n`` steps, ``delay`` seconds apart."""
    for i in range(n):
        time.sleep(delay)
        set_progress((i + 1) / n, f"step {i + 1}/{n}")
        print(f"finished step {i + 1} of {n}", flush=True)
    return {"steps": n}


def sleep_long(seconds=300):
    """Run until cancelled."""
    set_progress(0.05, "sleeping")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.1)
    return "woke up"


def _explode(message):
    raise ValueError(message)


def noop(gate=None):
    """Do nothing (once the file ``gate`` exists, when one is named)."""
    while gate is not None and not os.path.exists(gate):
        time.sleep(0.01)
    return None


def fail(message="boom"):
    """Fail with a ValueError and a traceback two frames deep."""
    print("about to fail", flush=True)
    _explode(message)
'''


def unavailable(reason: str) -> None:
    """Skip outside CI; in CI a missing prerequisite is a failure."""
    if IN_CI:
        pytest.fail(f"browser tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A running ``jupyter lab`` and a small REST client for its ``/tasks`` routes."""

    def __init__(self, url: str, token: str, root: Path) -> None:
        self.url = url
        self.token = token
        self.root = root

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Call ``{url}{path}``; returns (status, decoded JSON or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"token {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as err:
            raw = err.read()
            status = err.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def submit(self, **request: Any) -> dict[str, Any]:
        status, task = self.request("POST", "/tasks", request)
        assert status == 201, (status, task)
        return dict(task)

    def task(self, task_id: str) -> dict[str, Any]:
        status, task = self.request("GET", f"/tasks/{task_id}")
        assert status == 200, (status, task)
        return dict(task)

    def wait_status(self, task_id: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
        """Poll until the task reaches one of ``statuses``."""
        end = time.monotonic() + timeout
        while True:
            task = self.task(task_id)
            if task["status"] in statuses:
                return task
            if time.monotonic() > end:
                raise AssertionError(f"task {task_id} is {task['status']}, wanted {statuses}")
            time.sleep(0.2)


def _wait_http(url: str, token: str, proc: subprocess.Popen[bytes], timeout: float) -> int:
    """Poll ``url`` until it answers (any status but a refused connection)."""
    end = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}")
        req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)
        except OSError as err:
            last = err
            time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer in {timeout}s: {last}")


@pytest.fixture(autouse=True)
def jp_asyncio_loop() -> Iterator[None]:
    """No per-test asyncio loop here: Playwright's sync API runs its own in this thread."""
    yield None


@pytest.fixture(autouse=True)
def jp_server_cleanup() -> Iterator[None]:
    """No in-process ServerApp to clean up: the server is a subprocess."""
    yield None


def _wait_healthy(url: str, token: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for ``GET /tasks/health`` to answer 200 (it answers 503 while the engine starts)."""
    end = time.monotonic() + timeout
    status = _wait_http(url, token, proc, timeout)
    while status != 200:
        if status == 404:
            unavailable("the tasks server extension is not loaded (GET /tasks/health is 404)")
        if time.monotonic() > end:
            raise TimeoutError(f"GET /tasks/health still answers {status} after {timeout}s")
        time.sleep(0.25)
        status = _wait_http(url, token, proc, timeout)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium")
    if not path:
        unavailable("Debian's chromium is not installed (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        unavailable("Python Playwright is not installed (pip install playwright)")
    return str(path)


@contextlib.contextmanager
def running_server(base: Path, app: str) -> Iterator[Server]:
    """Run ``python -m <app>`` (jupyterlab or notebook) with the tasks extension, then stop it."""
    root, config, data, runtime, workspaces, settings, paths = (
        base / name
        for name in ("root", "config", "data", "runtime", "workspaces", "settings", "path")
    )
    for directory in (root, config, data, runtime, workspaces, settings, paths):
        directory.mkdir()
    (root / "jt_browser_tasks.py").write_text(TASK_MODULE)
    (config / "jupyter_server_config.json").write_text(
        json.dumps(
            {
                "ServerApp": {"jpserver_extensions": {"jupyter_tasks": True}},
                "TasksApp": {"max_workers": 2},
            }
        )
    )
    news = settings / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))

    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(config),
        JUPYTER_DATA_DIR=str(data),
        JUPYTER_RUNTIME_DIR=str(runtime),
        JUPYTER_PLATFORM_DIRS="1",
    )
    # Serve the panel built from this checkout ahead of any installed copy.
    if (BUILT_EXTENSION / "package.json").exists():
        (paths / "labextensions").mkdir()
        (paths / "labextensions" / "jupyter-tasks").symlink_to(BUILT_EXTENSION)
        env["JUPYTER_PATH"] = os.pathsep.join(
            p for p in (str(paths), env.get("JUPYTER_PATH", "")) if p
        )

    port = free_port()
    token = secrets.token_hex(16)
    app_class = "LabApp" if app == "jupyterlab" else "JupyterNotebookApp"
    cmd = [
        sys.executable,
        "-m",
        app,
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--allow-root",
        f"--{app_class}.workspaces_dir={workspaces}",
        f"--{app_class}.user_settings_dir={settings}",
        f"--{app_class}.expose_app_in_browser=True",
    ]
    log_path = base / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_http(f"{url}/api/status", token, proc, SERVER_START_TIMEOUT)
            _wait_healthy(f"{url}/tasks/health", token, proc, 60)
            yield Server(url, token, root)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            ARTIFACTS.mkdir(exist_ok=True)
            shutil.copyfile(log_path, ARTIFACTS / f"{app}-server.log")


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A ``jupyter lab`` subprocess with the tasks server extension and this repo's panel."""
    with running_server(tmp_path_factory.mktemp("lab"), "jupyterlab") as server:
        yield server


@pytest.fixture(scope="module")
def notebook_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A ``jupyter notebook`` (Notebook 7) subprocess; skipped when Notebook is not installed."""
    if importlib.util.find_spec("notebook") is None:
        pytest.skip("Notebook 7 is not installed (pip install 'notebook>=7')")
    with running_server(tmp_path_factory.mktemp("notebook"), "notebook") as server:
        yield server


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def open_page(
    browser: Any, url: str, name: str, before: Callable[[Any], None] | None = None
) -> Iterator[Any]:
    """A fresh browser context on ``url``; a screenshot named ``name`` is saved at the end."""
    if not BUILT_EXTENSION.exists() and not _installed_extension():
        unavailable("the labextension is neither built (jlpm build:prod) nor installed")
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"{exc.message}\n{exc.stack}"))
    if before is not None:
        before(page)
    try:
        page.goto(url)
        yield page
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        try:
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
        finally:
            context.close()
    ours = [e for e in errors if "jupyter-tasks" in e]
    assert not ours, f"uncaught errors in the panel's code: {ours}"


def wait_for_lab(page: Any) -> None:
    """Wait until JupyterLab has started and the Tasks tab is in the left sidebar."""
    page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=90_000)
    page.locator('.jp-SideBar.jp-mod-left li[data-id="jupyter-tasks-panel"]').wait_for()
    # Once restored, JupyterLab opens the Launcher and moves the focus into it: wait for
    # that, or it may take the focus from the panel in the middle of a test.
    page.wait_for_function(
        "() => document.activeElement?.closest('.jp-Launcher') != null", timeout=90_000
    )


@pytest.fixture
def lab(browser: Any, lab_server: Server, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A page with JupyterLab loaded; a screenshot is saved when the test ends."""
    url = f"{lab_server.url}/lab?reset&token={lab_server.token}"
    with open_page(browser, url, request.node.name) as page:
        wait_for_lab(page)
        yield page


def _installed_extension() -> bool:
    from jupyter_core.paths import jupyter_path

    return any(Path(p, "jupyter-tasks").exists() for p in jupyter_path("labextensions"))


@pytest.fixture
def new_page(browser: Any) -> Callable[..., contextlib.AbstractContextManager[Any]]:
    """Open extra pages: ``with new_page(url, name, before=None) as page: ...``."""

    def make(
        url: str, name: str, before: Callable[[Any], None] | None = None
    ) -> contextlib.AbstractContextManager[Any]:
        return open_page(browser, url, name, before)

    return make
