"""The Dask executor driven directly (no orchestrator), its frames, its log sink and the factory."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import pickle
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

pytest.importorskip("distributed")

from support import run_spec

from jupyter_tasks.executors._dasklog import LOST, LogSink
from jupyter_tasks.executors._daskslots import Slots
from jupyter_tasks.executors._dasktask import decode_frame, encode_frame
from jupyter_tasks.executors.base import RunSpec, TaskKilled
from jupyter_tasks.executors.dask import INLINE_BLOB_MAX, DaskExecutor
from jupyter_tasks.executors.factory import ExecutorConfigError, make_executor
from jupyter_tasks.executors.local import LocalExecutor
from jupyter_tasks.orchestrator import EngineConfig

HANG = 120.0


def noprogress(fraction: float | None, message: str | None) -> None:
    """Progress is not looked at here."""


def by_value(source: str, name: str) -> Any:
    """A function cloudpickle sends by value (no module the worker would have to import)."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(source, namespace)
    return namespace[name]


@pytest.fixture
def make_spec(tmp_path: Path, root: Path) -> Callable[..., RunSpec]:
    for name in ("logs", "results", "blobs"):
        (tmp_path / name).mkdir()
    return lambda task_type, parameters, **fields: run_spec(
        root, tmp_path, task_type, parameters, **fields
    )


@pytest.fixture
def executor(
    cli_cluster: Any, jp_asyncio_loop: asyncio.AbstractEventLoop
) -> Iterator[DaskExecutor]:
    dask = DaskExecutor(cli_cluster.address, threads=1, kill_grace_seconds=1.0)

    async def start() -> None:
        await dask.start()
        while not dask.health().healthy:
            await asyncio.sleep(0.02)

    jp_asyncio_loop.run_until_complete(asyncio.wait_for(start(), HANG))
    yield dask
    jp_asyncio_loop.run_until_complete(dask.stop())


def result_of(outcome: Any) -> Any:
    """Tests may unpickle: these results are plain values made by the tests themselves."""
    assert outcome.ok, outcome.error
    data = outcome.result_inline
    if data is None:
        data = Path(outcome.result_file).read_bytes()
    return pickle.loads(data)


async def test_a_missing_root_fails_clearly(
    executor: DaskExecutor, make_spec: Callable[..., RunSpec], cli_cluster: Any
) -> None:
    spec = make_spec("python", {"callable": "taskmods:where"}, root_dir="/nonexistent/root")
    outcome = await executor.run(spec, noprogress)
    assert not outcome.ok and outcome.error is not None
    assert outcome.error.type == "RootDirMissing"
    (address,) = cli_cluster.worker_pids
    assert "/nonexistent/root" in outcome.error.message and address in outcome.error.message


async def test_callable_runs_anywhere_with_the_workers_python(
    executor: DaskExecutor, make_spec: Callable[..., RunSpec], cli_cluster: Any
) -> None:
    where = by_value(
        "def where(tag):\n"
        "    import os, sys, psutil\n"
        "    above = [parent.pid for parent in psutil.Process().parents()]\n"
        "    return tag, os.getcwd(), sys.executable, above\n",
        "where",
    )
    payload = base64.b64encode(cloudpickle.dumps((where, ("hi",), {}))).decode()
    spec = make_spec(
        "callable",
        {"pickle_b64": payload, "python": "/nonexistent/python"},
        interpreter="/nonexistent/python",
        root_dir="/nonexistent/root",
    )
    outcome = await executor.run(spec, noprogress)
    tag, cwd, python, above = result_of(outcome)
    assert tag == "hi" and python == sys.executable
    assert set(above) & set(cli_cluster.worker_pids.values())  # under the Dask worker
    assert not cwd.startswith("/nonexistent")  # a scratch directory on the worker
    log = Path(spec.log_path).read_text()
    assert "/nonexistent/python does not exist on Dask worker" in log


@pytest.mark.parametrize("size", [10, INLINE_BLOB_MAX + 10])
async def test_callable_blobs_travel_to_the_worker(
    size: int, executor: DaskExecutor, make_spec: Callable[..., RunSpec]
) -> None:
    length = by_value("def length(data):\n    return len(data)\n", "length")
    blob_id = uuid.uuid4().hex
    spec = make_spec("callable", {"blob_id": blob_id})
    Path(spec.blob_dir, blob_id).write_bytes(cloudpickle.dumps((length, (b"x" * size,), {})))
    assert result_of(await executor.run(spec, noprogress)) == size


async def test_a_kill_before_the_task_starts_keeps_it_from_running(
    executor: DaskExecutor, make_spec: Callable[..., RunSpec], tmp_path: Path
) -> None:
    gate, order = tmp_path / "gate", tmp_path / "order"
    first = make_spec("python", {"callable": "taskmods:record", "args": [str(order), "first",
                                                                           str(gate)]})  # fmt: skip
    queued = make_spec("python", {"callable": "taskmods:record", "args": [str(order), "queued"]})
    last = make_spec("python", {"callable": "taskmods:record", "args": [str(order), "last"]})
    running = asyncio.ensure_future(executor.run(first, noprogress))
    while not (executor._jobs.get(first.task_id) and executor._jobs[first.task_id].started):
        await asyncio.sleep(0.02)
    waiting = asyncio.ensure_future(executor.run(queued, noprogress))
    await asyncio.sleep(0)  # let it be submitted behind the first (the worker has one thread)
    await asyncio.wait_for(executor.kill(queued.task_id), HANG)
    with pytest.raises(TaskKilled):
        await asyncio.wait_for(waiting, HANG)
    gate.write_text("go")
    assert result_of(await asyncio.wait_for(running, HANG)) == "first"
    assert result_of(await asyncio.wait_for(executor.run(last, noprogress), HANG)) == "last"
    assert order.read_text().split() == ["first", "last"]


def test_frames_round_trip_and_refuse_garbage() -> None:
    frame = encode_frame({"status": "done", "reply": {"ok": True}}, b"\x80pickle", b"log")
    header, result, log = decode_frame(frame)
    assert header["status"] == "done" and result == b"\x80pickle" and log == b"log"
    for bad in (b"", b"nonsense", frame[:-1], frame + b"x", {"status": "done"}):
        with pytest.raises(ValueError):
            decode_frame(bad)


async def test_the_log_sink_orders_chunks_and_marks_lost_ones(tmp_path: Path) -> None:
    sink = LogSink(str(tmp_path / "logs" / "task.log"))
    sink.append(1, b"two ")
    sink.append(0, b"one ")
    sink.append(0, b"again ")  # a duplicate is ignored
    sink.append(3, b"four ")  # chunk 2 never arrives
    await sink.finish(4, b"tail")
    text = (tmp_path / "logs" / "task.log").read_bytes()
    assert text == b"one two four " + LOST + b"tail"
    sink.append(4, b"late")  # after the end: dropped
    await sink.close()
    assert (tmp_path / "logs" / "task.log").read_bytes() == text


def test_the_factory_builds_executors_from_names(tmp_path: Path) -> None:
    config = EngineConfig(db_path=str(tmp_path / "t.db"), max_workers=3, kill_grace_seconds=1.5)
    local = make_executor("local", config)
    assert isinstance(local, LocalExecutor) and local.max_workers == 3
    for name in ("dask", "jupyter_tasks.executors.dask:DaskExecutor",
                 "jupyter_tasks.executors.dask.DaskExecutor"):  # fmt: skip
        dask = make_executor(name, config, "tcp://10.0.0.5:8786")
        assert isinstance(dask, DaskExecutor)
        assert dask.address == "tcp://10.0.0.5:8786" and dask.threads == 3
        assert dask.kill_grace_seconds == 1.5
    assert isinstance(make_executor("dask", config, None), DaskExecutor)
    for bad in ("nope", "no.such.module:Thing", "jupyter_tasks.executors.base:RunSpec",
                "jupyter_tasks.executors.local:LocalExecutor"):  # fmt: skip
        with pytest.raises(ExecutorConfigError):
            make_executor(bad, config)
    assert os.environ.get("JUPYTER_TASKS_DASK_WORKER") is None


@dataclasses.dataclass(frozen=True)
class PrioritySpec(RunSpec):
    """A spec carrying the task's priority, as the executor reads it when present."""

    priority: int = 1


async def test_priorities_map_to_dask_priorities(
    executor: DaskExecutor, make_spec: Callable[..., RunSpec], tmp_path: Path
) -> None:
    gate, order = tmp_path / "gate", tmp_path / "order"

    def spec(name: str, priority: int, *extra: str) -> RunSpec:
        base = make_spec("python", {"callable": "taskmods:record",
                                    "args": [str(order), name, *extra]})  # fmt: skip
        return PrioritySpec(**{**_fields(base), "priority": priority})

    first = spec("first", 1, str(gate))
    running = [asyncio.ensure_future(executor.run(first, noprogress))]
    while not (executor._jobs.get(first.task_id) and executor._jobs[first.task_id].started):
        await asyncio.sleep(0.02)
    for name, priority in [("low1", 1), ("low2", 1), ("low3", 1), ("high", 10)]:
        running.append(asyncio.ensure_future(executor.run(spec(name, priority), noprogress)))
        await asyncio.sleep(0)  # submitted in this order
    gate.write_text("go")
    for outcome in await asyncio.wait_for(asyncio.gather(*running), HANG):
        assert outcome.ok, outcome.error
    assert order.read_text().split() == ["first", "high", "low1", "low2", "low3"]


async def test_slots_go_to_the_highest_priority_then_the_oldest() -> None:
    slots = Slots()
    arrivals = [("low1", 1), ("mid", 5), ("low2", 1), ("high", 10), ("gone", 10)]
    claims = {name: slots.claim(prio, order) for order, (name, prio) in enumerate(arrivals)}
    assert slots.waiting == 5 and not any(claim.done() for claim in claims.values())
    slots.withdraw(claims.pop("gone"))  # a killed task gives its place up
    granted: list[str] = []

    def grant_next() -> None:
        for name, claim in claims.items():
            if claim.done() and name not in granted:
                granted.append(name)

    slots.set_capacity(1)  # a worker joined
    grant_next()
    assert granted == ["high"] and slots.used == 1
    for _ in range(3):
        slots.release()
        grant_next()
    assert granted == ["high", "mid", "low1", "low2"] and slots.waiting == 0
    slots.withdraw(claims["low2"])  # a granted claim given up frees its slot
    assert slots.used == 0
    slots.set_capacity(0)  # the cluster went away: nothing more is granted
    late = slots.claim(1, 99)
    assert not late.done()
    slots.set_capacity(2)
    assert late.done() and slots.used == 1


def _fields(spec: RunSpec) -> dict[str, Any]:
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
