"""A 200 MB argument and a 200 MB result: blobs and streamed results, not JSON bodies.

The server's resident memory is sampled throughout: it must stay far below the
payload's size, because the server streams both ways through files.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import cloudpickle
import psutil

import jupyter_tasks as jt
from jupyter_tasks.client import Client

from .conftest import HANG, TasksServer

MB = 1 << 20
SIZE = 200 * MB

# The task functions below travel by value, as a notebook's do.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@contextmanager
def peak_rss(pid: int) -> Iterator[list[int]]:
    """Sample a process's RSS until the block ends; yields [baseline, peak]."""
    proc = psutil.Process(pid)
    found = [proc.memory_info().rss, 0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            found[1] = max(found[1], proc.memory_info().rss)
            stop.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield found
    finally:
        stop.set()
        sampler.join(HANG)


def digest_of(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def make_bytes(size: int) -> bytes:
    return bytes(range(256)) * (size // 256)


def test_200_mb_argument_and_result_round_trip(client: Client, tasks_server: TasksServer) -> None:
    payload = make_bytes(SIZE)
    expected = hashlib.sha256(payload).hexdigest()
    with peak_rss(tasks_server.proc.pid) as rss:
        sent = jt.run(digest_of, payload)
        assert sent.result(timeout=HANG) == expected
        assert "blob_id" in sent.task["parameters"]  # not the JSON body
        del payload

        made = jt.run(make_bytes, SIZE)
        value = made.result(timeout=HANG)
        assert len(value) == SIZE and hashlib.sha256(value).hexdigest() == expected
        del value
    baseline, peak = rss
    assert peak - baseline < 64 * MB, f"server grew by {(peak - baseline) / MB:.0f} MB"
