"""The JSON the server writes: orjson, and the standard library for what orjson refuses.

Under a burst of tasks, encoding JSON (events, answers, the workers' requests, the
rows' columns) took about a sixth of the server's CPU; orjson does the same work
several times faster.  It refuses some values a task may carry (integers beyond 64
bits, lone surrogates, nesting deeper than 254): those go through ``json``, as
everything did before.  Reading stays with ``json``, which keeps big integers exact
where orjson would turn them into floats.  Workers do not use this module: they may
run in an interpreter without orjson.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """Compact JSON as UTF-8.

    orjson writes NaN and infinities as null: the values it is given hold none (task
    parameters refuse them, see ``models.TaskRequest``; previews are written with json).
    """
    try:
        return orjson.dumps(value, default=default)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(value, default=default, separators=(",", ":"), allow_nan=False).encode()


def dumps_text(value: Any) -> str:
    """``dumps`` as a str (SQLite's TEXT columns)."""
    return dumps(value).decode()
