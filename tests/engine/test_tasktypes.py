"""Task types: the registry, submit-time validation, and the built-ins run in real workers."""

from __future__ import annotations

import base64
import fractions
import logging
import pickle
import sys
import uuid
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import jupyter_tasks.tasktypes as tasktypes
from jupyter_tasks.errors import InvalidParameters, UnknownTaskType
from jupyter_tasks.executors.base import Outcome, RunSpec
from jupyter_tasks.executors.local import LocalExecutor
from jupyter_tasks.tasktypes import SubmitContext, TaskTypeRegistry, load_default_registry
from jupyter_tasks.tasktypes.callable import CallableTask
from jupyter_tasks.tasktypes.python import PythonTask
from jupyter_tasks.tasktypes.shell import ShellTask

MakeSpec = Callable[..., RunSpec]
MakeExecutor = Callable[..., LocalExecutor]
TaskDirs = Any  # conftest.TaskDirs: root, logs, results, blobs
BUILT_INS = ["callable", "python", "shell"]


def noop(fraction: float | None, message: str | None) -> None:
    """A progress callback for tests that do not look at progress."""


def result(outcome: Outcome) -> Any:
    assert outcome.ok, outcome.error
    if outcome.result_inline is not None:
        return pickle.loads(outcome.result_inline)
    assert outcome.result_file is not None
    return pickle.loads(Path(outcome.result_file).read_bytes())


def payload(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bytes:
    return bytes(cloudpickle.dumps((fn, args, kwargs)))


@pytest.fixture
def submit(task_dirs: TaskDirs) -> SubmitContext:
    return SubmitContext(root_dir=str(task_dirs.root), blob_dir=str(task_dirs.blobs))


def refused(task: Any, parameters: dict[str, Any], ctx: SubmitContext) -> str | None:
    """The field ``validate`` names, with the error's text checked to say something."""
    with pytest.raises(InvalidParameters) as info:
        task.validate(parameters, ctx)
    assert str(info.value.args[0])
    return info.value.field


# -- the registry ---------------------------------------------------------------------------


def test_registry_loads_the_built_ins_from_entry_points() -> None:
    registry = load_default_registry()
    assert set(BUILT_INS) <= set(registry.names())
    assert isinstance(registry.get("python"), PythonTask)
    assert isinstance(registry.get("shell"), ShellTask)
    assert isinstance(registry.get("callable"), CallableTask)
    assert "python" in registry


def test_unknown_type_lists_the_allowed_ones() -> None:
    registry = TaskTypeRegistry(allowed=["python", "shell"])
    assert registry.names() == ["python", "shell"]
    with pytest.raises(UnknownTaskType) as info:
        registry.get("callable")
    assert info.value.known == ["python", "shell"]
    assert "python, shell" in str(info.value)


def test_broken_entry_points_are_skipped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    group = tasktypes.ENTRY_POINT_GROUP
    broken = [
        EntryPoint(name="missing", value="no_such_module_here:Task", group=group),
        EntryPoint(name="not_a_type", value="os:getcwd", group=group),
    ]
    real = list(entry_points(group=group))
    monkeypatch.setattr(tasktypes, "entry_points", lambda group: [*broken, *real])
    with caplog.at_level(logging.ERROR, logger="jupyter_tasks.tasktypes"):
        registry = TaskTypeRegistry()
    assert registry.names() == sorted(ep.name for ep in real)
    assert set(BUILT_INS) <= set(registry.names())
    assert "missing" in caplog.text and "not_a_type" in caplog.text


def test_describe_publishes_schemas_with_descriptions() -> None:
    described = {item["name"]: item for item in load_default_registry(BUILT_INS).describe()}
    assert sorted(described) == BUILT_INS
    for item in described.values():
        assert item["description"]
        properties = item["parameters_schema"]["properties"]
        assert all(prop.get("description") for prop in properties.values())
    assert described["python"]["parameters_schema"]["required"] == ["callable"]
    assert described["python"]["parameters_schema"]["additionalProperties"] is False


def test_schemas_are_handed_out_as_copies() -> None:
    registry = load_default_registry(BUILT_INS)
    first = registry.describe()
    first[0]["parameters_schema"]["properties"].clear()  # a caller that edits its copy
    again = registry.describe()
    assert again[0]["parameters_schema"]["properties"]
    assert again == load_default_registry(BUILT_INS).describe()


# -- validation at submit time --------------------------------------------------------------


def test_python_parameters(submit: SubmitContext, task_dirs: TaskDirs) -> None:
    task = PythonTask()
    (task_dirs.root / "sub").mkdir()
    task.validate({"callable": "pkg.mod:Class.method", "args": [1], "cwd": "sub"}, submit)
    task.validate({"callable": "no_such_module_is_imported:f"}, submit)
    for bad in ["pkg.mod", "pkg:", ":f", "pkg.mod:f()", "1pkg:f", "pkg..mod:f", "a:b:c"]:
        assert refused(task, {"callable": bad}, submit) == "parameters.callable"
    assert refused(task, {}, submit) == "parameters.callable"
    assert refused(task, {"callable": "m:f", "args": "x"}, submit) == "parameters.args"
    assert refused(task, {"callable": "m:f", "kwargs": []}, submit) == "parameters.kwargs"
    assert refused(task, {"callable": "m:f", "colable": 1}, submit) == "parameters.colable"
    assert refused(task, {"callable": "m:f", "cwd": "../elsewhere"}, submit) == "parameters.cwd"
    assert refused(task, {"callable": "m:f", "cwd": "/"}, submit) == "parameters.cwd"
    assert refused(task, {"callable": "m:f", "cwd": "missing"}, submit) == "parameters.cwd"


def test_shell_parameters(submit: SubmitContext) -> None:
    task = ShellTask()
    task.validate({"command": "echo 'a b' c", "env": {"A": "1"}}, submit)
    task.validate({"command": ["echo", "a b"]}, submit)
    for bad in ["", "   ", [], [""], "echo 'unbalanced", 5]:
        assert refused(task, {"command": bad}, submit) == "parameters.command"
    assert refused(task, {"command": "ls", "env": {"A=B": "1"}}, submit) == "parameters.env"
    assert refused(task, {"command": "ls", "env": {"A": 1}}, submit) == "parameters.env.A"
    assert refused(task, {"command": "ls", "cwd": "../x"}, submit) == "parameters.cwd"
    assert refused(task, {"command": "ls", "shell": True}, submit) == "parameters.shell"


def test_callable_parameters(submit: SubmitContext, task_dirs: TaskDirs) -> None:
    task = CallableTask()
    good = base64.b64encode(b"pickle").decode()
    blob_id = uuid.uuid4().hex
    (task_dirs.blobs / blob_id).write_bytes(b"pickle")
    task.validate({"pickle_b64": good}, submit)
    task.validate({"blob_id": blob_id, "python": sys.executable}, submit)
    assert refused(task, {}, submit) == "parameters"
    assert refused(task, {"pickle_b64": good, "blob_id": blob_id}, submit) == "parameters"
    assert refused(task, {"pickle_b64": "not base64!"}, submit) == "parameters.pickle_b64"
    assert refused(task, {"blob_id": "../../etc/passwd"}, submit) == "parameters.blob_id"
    assert refused(task, {"blob_id": uuid.uuid4().hex}, submit) == "parameters.blob_id"
    for python in ["/no/such/python", "python3", str(task_dirs.blobs / blob_id)]:
        assert refused(task, {"pickle_b64": good, "python": python}, submit) == "parameters.python"
    assert task.interpreter({"pickle_b64": good}) == sys.executable
    assert task.interpreter({"pickle_b64": good, "python": "/x/python"}) == "/x/python"


# -- running the built-ins ------------------------------------------------------------------


async def test_python_task_with_kwargs_cwd_and_a_method(
    make_executor: MakeExecutor, make_spec: MakeSpec, task_dirs: TaskDirs
) -> None:
    (task_dirs.root / "sub").mkdir()
    (task_dirs.root / "boxes.py").write_text(
        "import fractions\n\n"
        "class Box:\n"
        "    @staticmethod\n"
        "    def make(x, *, y=0):\n"
        "        return fractions.Fraction(x, y)\n"
    )
    executor = make_executor()
    await executor.start()
    run = executor.run
    spec = make_spec("python", {"callable": "boxes:Box.make", "args": [1], "kwargs": {"y": 3}})
    outcome = await run(spec, noop)
    assert result(outcome) == fractions.Fraction(1, 3)
    assert outcome.preview == {"type": "fractions.Fraction", "repr": "Fraction(1, 3)"}
    in_sub = await run(make_spec("python", {"callable": "os:getcwd", "cwd": "sub"}), noop)
    assert result(in_sub) == str((task_dirs.root / "sub").resolve())
    back = await run(make_spec("python", {"callable": "os:getcwd"}), noop)
    assert result(back) == str(task_dirs.root.resolve())


async def test_python_task_that_cannot_be_imported(
    make_executor: MakeExecutor, make_spec: MakeSpec
) -> None:
    executor = make_executor()
    await executor.start()
    outcome = await executor.run(make_spec("python", {"callable": "nosuchmod:f"}), noop)
    assert outcome.error is not None
    assert outcome.error.type == "ModuleNotFoundError"


async def test_shell_task_output_goes_to_the_log(
    make_executor: MakeExecutor, make_spec: MakeSpec
) -> None:
    executor = make_executor()
    await executor.start()
    code = "import sys; print('out', repr(sys.stdin.read())); print('err', file=sys.stderr)"
    spec = make_spec("shell", {"command": [sys.executable, "-c", code]})
    outcome = await executor.run(spec, noop)
    assert outcome.preview == {
        "type": "dict",
        "repr": "{'returncode': 0}",
        "value": {"returncode": 0},
    }
    assert result(outcome) == {"returncode": 0}
    assert Path(spec.log_path).read_text().splitlines() == ["out ''", "err"]


async def test_shell_task_string_command_env_and_cwd(
    make_executor: MakeExecutor, make_spec: MakeSpec, task_dirs: TaskDirs
) -> None:
    (task_dirs.root / "sub").mkdir()
    executor = make_executor()
    await executor.start()
    parameters = {"command": 'sh -c \'echo "$GREETING" from "$(pwd)"\'', "env": {"GREETING": "hi"}}
    spec = make_spec("shell", {**parameters, "cwd": "sub"})
    assert result(await executor.run(spec, noop)) == {"returncode": 0}
    where = (task_dirs.root / "sub").resolve()
    assert Path(spec.log_path).read_text() == f"hi from {where}\n"


async def test_shell_non_zero_exit(make_executor: MakeExecutor, make_spec: MakeSpec) -> None:
    executor = make_executor()
    await executor.start()
    outcome = await executor.run(make_spec("shell", {"command": "sh -c 'exit 4'"}), noop)
    assert outcome.error is not None
    assert outcome.error.type == "NonZeroExit"
    assert "exited with code 4" in outcome.error.message
    assert "sh -c 'exit 4'" in outcome.error.message


async def test_callable_task_from_pickle_and_from_blob(
    make_executor: MakeExecutor, make_spec: MakeSpec, task_dirs: TaskDirs
) -> None:
    executor = make_executor()
    await executor.start()
    inline = base64.b64encode(payload(lambda x, y=0: x * 10 + y, 4, y=2)).decode()
    outcome = await executor.run(make_spec("callable", {"pickle_b64": inline}), noop)
    assert result(outcome) == 42
    assert outcome.preview == {"type": "int", "repr": "42", "value": 42}

    class Local:  # not importable by name: the result needs cloudpickle
        def __init__(self, items: list[int]) -> None:
            self.items = items

    blob_id = uuid.uuid4().hex
    (task_dirs.blobs / blob_id).write_bytes(payload(lambda n: Local(list(range(n))), 3))
    outcome = await executor.run(make_spec("callable", {"blob_id": blob_id}), noop)
    assert result(outcome).items == [0, 1, 2]
    assert outcome.preview is not None
    assert outcome.preview["type"].endswith("Local")


async def test_callable_payload_of_the_wrong_shape(
    make_executor: MakeExecutor, make_spec: MakeSpec
) -> None:
    executor = make_executor()
    await executor.start()
    inline = base64.b64encode(cloudpickle.dumps([1, 2])).decode()
    outcome = await executor.run(make_spec("callable", {"pickle_b64": inline}), noop)
    assert outcome.error is not None
    assert outcome.error.type == "TypeError"


async def test_results_preview_json_values_only_when_plain(
    make_executor: MakeExecutor, make_spec: MakeSpec
) -> None:
    executor = make_executor()
    await executor.start()

    async def preview(value: Any) -> dict[str, Any]:
        inline = base64.b64encode(payload(lambda: value)).decode()
        outcome = await executor.run(make_spec("callable", {"pickle_b64": inline}), noop)
        assert outcome.preview is not None
        return outcome.preview

    assert await preview({"a": [1, 2.5, None]}) == {
        "type": "dict",
        "repr": "{'a': [1, 2.5, None]}",
        "value": {"a": [1, 2.5, None]},
    }
    assert "value" not in await preview(float("nan"))
    assert "value" not in await preview({1, 2})
    long = await preview("x" * 100_000)
    assert "value" not in long and len(long["repr"]) <= 1000
    assert (await preview(None))["value"] is None
