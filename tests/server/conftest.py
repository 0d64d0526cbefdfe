"""Fixtures for the server extension: an in-process server (pytest-jupyter) and real ones.

In-process tests use ``jp_fetch``/``jp_ws_fetch`` on the server's own loop.
Tests whose client blocks (uploads measured with psutil, schemathesis, a
restart) run the server as a subprocess instead: ``ServerProcess``. The fixtures
(``api``, ``tasks_app``, ``server_process``...) live in the top ``conftest.py`` and
the helpers in ``support.py``, shared with the other suites; the server tests import
the helpers from here.
"""

from __future__ import annotations

from support import HANG as HANG
from support import Api as Api
from support import ServerProcess as ServerProcess
from support import error_of as error_of
from support import python_task as python_task
from support import wait_done_ws as wait_done_ws
from support import wait_finished as wait_finished
