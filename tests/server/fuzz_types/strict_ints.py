"""schemathesis hooks for two things the OpenAPI document cannot express.

* JSON Schema counts ``10.0`` as an integer; this API's contract does not
  (``1.0`` is refused like ``"5"``).  Positive cases are sent with the plain
  spelling instead of being reported as rejected.
* A full queue answers 503 with ``Retry-After`` on purpose (back-pressure,
  documented); the fuzzer's batches of up to 10,000 tasks fill it.  That one
  answer is not counted as a server error; every other 5xx still is.
"""

from __future__ import annotations

from typing import Any

import schemathesis


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    return _plain(body)


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    headers = {k.lower(): v for k, v in response.headers.items()}
    backpressure = response.status_code == 503 and "retry-after" in headers
    return not (backpressure and "queue is full" in response.text)
