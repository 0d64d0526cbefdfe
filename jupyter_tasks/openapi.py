"""The OpenAPI 3.1 document of the ``/tasks`` API, built from ``models.py`` and the task types.

Generated rather than written by hand so that it cannot drift from the
models: request and response schemas come from the pydantic models, and each
allowed task type contributes its own ``TaskRequest`` variant whose
``parameters`` is that type's schema (a ``oneOf`` discriminated by
``task_type``), so generated clients and fuzzers produce valid requests.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from pydantic.json_schema import models_json_schema

from ._version import __version__
from .models import Task, TaskError, TaskRequest

REF = "#/components/schemas/{model}"
#: Upper bound of ``timeout_seconds`` (68 years): the store keeps it in a 64-bit column and
#: ``models.py`` sets none, so the HTTP layer refuses larger values with a 400.
TASK_ID_PARAM = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "description": "A task id: a UUID4 as 32 lower-case hex characters.",
    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
}

DESCRIPTION = """\
Background tasks for Jupyter: submit work, watch it run, fetch its result.

**Authentication.** Every route needs what the Jupyter server accepts (its
token in `Authorization: token <token>`, or a browser session with the
`X-XSRFToken` header on POST/DELETE), or the kernel token found in the
`JUPYTER_TASKS_TOKEN` variable of kernels started by this server (it opens
these routes only). A request without valid credentials gets **403**, never
401. Authorization actions on the `tasks` resource: `execute` for submit,
batch, blobs and rerun; `write` for cancel and delete; `read` for the rest.

**Errors** are JSON `{"message": "..."}`; a 400 names the wrong field
(`priority: ...`, `tasks[3].description: ...`), and so does a 404 for an id that
is not a task id (`task_id: ...`). A message quoting a very long input is shortened.
Paths in parameters must resolve inside the server's root directory (symlinks
followed). Requests whose `Host` is not the server's get 403; a browser session
from a foreign `Origin` gets 404.

**Types are strict**: `"5"`, `true` and `1.0` are not integers, and unknown
fields are refused. (JSON Schema cannot tell `1.0` from `1`; this server can.)

**Event stream** (not an HTTP route, so not listed below): a WebSocket at
`GET /tasks/events`, authenticated like the HTTP routes (`read`). Query:
`task_id` (repeatable), `group` and `status` (repeatable: a task status, or
`deleted`; only events with one of these statuses) filter it. First message
`{"event": "snapshot", "tasks": [Task, ...]}` (tasks not finished yet), then
`{"event": "transition" | "progress" | "deleted", "seq": n, "task_id",
"status", "progress", "message", "task": Task}` with `seq` increasing.
Transitions are sent at once; progress is coalesced per task (latest wins).
A subscriber that falls behind is closed with code **4001**; reconnect to get
a fresh snapshot. Code 1001 means the server is stopping.
"""


def build_openapi(
    types: list[dict[str, Any]], base_url: str = "/", max_batch: int = 10_000
) -> dict[str, Any]:
    """The document for a server that allows ``types`` (as ``GET /tasks/types`` lists them)."""
    schemas = _model_schemas()
    schemas.update(_shared_schemas(max_batch))
    variants = _request_variants(schemas, types)
    if variants:
        schemas["TaskRequest"] = {
            "oneOf": [{"$ref": ref} for ref in variants.values()],
            "discriminator": {"propertyName": "task_type", "mapping": variants},
            "description": "A task request; `parameters` depend on `task_type`.",
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "jupyter-tasks", "version": __version__, "description": DESCRIPTION},
        "servers": [{"url": base_url.rstrip("/") or "/"}],
        "security": [{"token": []}],
        "paths": _paths(),
        "components": {
            "schemas": schemas,
            "responses": _responses(),
            "securitySchemes": {
                "token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "`token <server token>` or `token <JUPYTER_TASKS_TOKEN>`.",
                }
            },
        },
    }


# -- schemas ----------------------------------------------------------------------------------


def _model_schemas() -> dict[str, Any]:
    _, top = models_json_schema(
        [(TaskRequest, "validation"), (Task, "serialization"), (TaskError, "serialization")],
        ref_template=REF,
    )
    defs: dict[str, Any] = top.get("$defs", {})
    return defs


def _shared_schemas(max_batch: int) -> dict[str, Any]:
    task_ref = {"$ref": REF.format(model="Task")}
    return {
        "Error": _object({"message": {"type": "string"}}, ["message"], extra=True),
        "TaskList": _object(
            {
                "tasks": {"type": "array", "items": task_ref},
                "next": {
                    "type": ["string", "null"],
                    "description": "Cursor of the next page, or null on the last.",
                },
            },
            ["tasks", "next"],
        ),
        "BatchRequest": _object(
            {
                "tasks": {
                    "type": "array",
                    "items": {"$ref": REF.format(model="TaskRequest")},
                    "minItems": 1,
                    "maxItems": max_batch,
                }
            },
            ["tasks"],
        ),
        "BatchResponse": _object({"tasks": {"type": "array", "items": task_ref}}, ["tasks"]),
        "Blob": _object(
            {"blob_id": {"type": "string"}, "size": {"type": "integer", "minimum": 0}},
            ["blob_id"],
            extra=True,
        ),
        "TaskTypeList": _object(
            {
                "types": {
                    "type": "array",
                    "items": _object(
                        {
                            "name": {"type": "string"},
                            "description": {"type": "string"},
                            "parameters_schema": {"type": "object"},
                        },
                        ["name", "description", "parameters_schema"],
                        extra=True,
                    ),
                }
            },
            ["types"],
        ),
        "Health": _object(
            {
                "healthy": {"type": "boolean"},
                "accepting": {"type": "boolean", "description": "false while the queue is full"},
                "queued": {"type": "integer", "minimum": 0},
                "running": {"type": "integer", "minimum": 0},
                "workers": {"type": "integer", "minimum": 0},
                "detail": {"type": "string", "description": "why it is not working (503 only)"},
            },
            ["healthy", "accepting", "queued", "running", "workers"],
            extra=True,
        ),
        "ResultPreview": _object(
            {
                "type": {"type": "string", "description": "The result's type name."},
                "repr": {"type": "string", "description": "Its repr(), truncated."},
                "value": {"description": "The value itself, when it is JSON-serialisable."},
            },
            ["type", "repr"],
            extra=True,
        ),
    }


def _object(props: dict[str, Any], required: list[str], extra: bool = False) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": extra,
    }


def _request_variants(schemas: dict[str, Any], types: list[dict[str, Any]]) -> dict[str, str]:
    """One ``TaskRequest_<type>`` schema per task type; returns {type name: its $ref}."""
    base = schemas["TaskRequest"]
    variants: dict[str, str] = {}
    for entry in types:
        name = str(entry["name"])
        key = "TaskRequest_" + _schema_key(name)
        params = _hoist(copy.deepcopy(entry.get("parameters_schema") or {}), key, schemas)
        variant = copy.deepcopy(base)
        variant["title"] = f"TaskRequest ({name})"
        variant["properties"]["task_type"] = {"type": "string", "const": name}
        variant["properties"]["parameters"] = params
        if params.get("required"):  # else parameters may be left out: they default to {}
            variant["required"] = sorted(set(variant.get("required", [])) | {"parameters"})
        schemas[key] = variant
        variants[name] = REF.format(model=key)
    return variants


def _hoist(schema: dict[str, Any], prefix: str, schemas: dict[str, Any]) -> dict[str, Any]:
    """Move a type's ``$defs`` into components (prefixed) and point its ``$ref``s there."""
    defs = schema.pop("$defs", {})
    renames = {name: f"{prefix}_{_schema_key(name)}" for name in defs}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: rewrite(v) for k, v in node.items()}
            ref = out.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                out["$ref"] = REF.format(model=renames.get(ref[8:], ref[8:]))
            return out
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    for name, definition in defs.items():
        schemas[renames[name]] = rewrite(definition)
    result: dict[str, Any] = rewrite(schema)
    return result


def _schema_key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


# -- paths ------------------------------------------------------------------------------------


def _ref(model: str) -> dict[str, Any]:
    return {"$ref": REF.format(model=model)}


def _json(model: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): {"$ref": f"#/components/responses/E{code}"} for code in (403, *codes)}


def _responses() -> dict[str, Any]:
    texts = {
        400: "Invalid request; the message names the field.",
        403: "Not authenticated (no or wrong token, missing XSRF header) or not authorized.",
        404: "No such task (or the id is not 32 lower-case hex characters).",
        409: "The task is not in a state that allows this.",
        413: "The request body is larger than its limit.",
    }
    out: dict[str, Any] = {f"E{code}": _json("Error", text) for code, text in texts.items()}
    out["E503"] = _json("Error", "The queue is full (retry after Retry-After seconds).")
    out["E503"]["headers"] = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}
    return out


def _json_body(model: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(model)}}}


def _links() -> dict[str, Any]:
    task_id = {"task_id": "$response.body#/task_id"}
    ops = {
        "GetTask": "getTask",
        "CancelTask": "cancelTask",
        "RerunTask": "rerunTask",
        "DeleteTask": "deleteTask",
        "GetResult": "getResult",
        "GetLogs": "getLogs",
    }
    return {name: {"operationId": op, "parameters": task_id} for name, op in ops.items()}


def _created(description: str) -> dict[str, Any]:
    created = _json("Task", description)
    created["headers"] = {"Location": {"schema": {"type": "string"}}}
    created["links"] = _links()
    return created


def _paths() -> dict[str, Any]:
    list_params = [
        {
            "name": "status",
            "in": "query",
            "description": "Only tasks in these statuses (repeatable).",
            "schema": {"type": "array", "items": _ref("TaskStatus")},
            "style": "form",
            "explode": True,
        },
        {"name": "task_type", "in": "query", "schema": {"type": "string"}},
        {"name": "group", "in": "query", "schema": {"type": "string"}},
        {"name": "tag", "in": "query", "schema": {"type": "string"}},
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
        },
        {
            "name": "cursor",
            "in": "query",
            "description": "The `next` of the previous page (opaque); empty for the first page.",
            "schema": {"type": "string", "pattern": "^[0-9]{0,18}$"},
        },
    ]
    octets = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    upload = {
        "application/octet-stream": {
            "schema": {**octets["application/octet-stream"]["schema"], "minLength": 1}
        }
    }
    return {
        "/tasks": {
            "post": {
                "operationId": "submitTask",
                "summary": "Submit a task (action: execute).",
                "requestBody": _json_body("TaskRequest"),
                "responses": {
                    "201": _created("Created; durable before this answer."),
                    **_errors(400, 413, 503),
                },
            },
            "get": {
                "operationId": "listTasks",
                "summary": "List tasks, newest first (action: read).",
                "parameters": list_params,
                "responses": {"200": _json("TaskList", "A page of tasks."), **_errors(400)},
            },
        },
        "/tasks/batch": {
            "post": {
                "operationId": "submitBatch",
                "summary": "Submit up to 10,000 tasks: all or nothing, one group (execute).",
                "requestBody": _json_body("BatchRequest"),
                "responses": {
                    "201": _json("BatchResponse", "Created, in request order."),
                    **_errors(400, 413, 503),
                },
            },
        },
        "/tasks/blobs": {
            "post": {
                "operationId": "uploadBlob",
                "summary": "Upload raw bytes, streamed to disk (action: execute).",
                "requestBody": {"required": True, "content": upload},
                "responses": {"201": _json("Blob", "Stored."), **_errors(400, 413)},
            },
        },
        "/tasks/types": {
            "get": {
                "operationId": "listTypes",
                "summary": "The task types this server allows (action: read).",
                "responses": {"200": _json("TaskTypeList", "Allowed types."), **_errors()},
            },
        },
        "/tasks/health": {
            "get": {
                "operationId": "health",
                "summary": "Engine health (action: read).",
                "responses": {
                    "200": _json("Health", "Working (accepting is false when the queue is full)."),
                    "503": _json(
                        "Health",
                        "Not working: workers dead, or the store takes no writes (a full disk,"
                        " a read-only database); the reason is in detail.",
                    ),
                    **_errors(),
                },
            },
        },
        "/tasks/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document (action: read).",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_errors(),
                },
            },
        },
        "/tasks/{task_id}": {
            "parameters": [TASK_ID_PARAM],
            "get": {
                "operationId": "getTask",
                "summary": "One task (action: read).",
                "responses": {"200": _json("Task", "The task."), **_errors(404)},
            },
            "delete": {
                "operationId": "deleteTask",
                "summary": "Forget a finished task, its result, logs and blobs (action: write).",
                "responses": {"204": {"description": "Forgotten."}, **_errors(404, 409)},
            },
        },
        "/tasks/{task_id}/cancel": {
            "parameters": [TASK_ID_PARAM],
            "post": {
                "operationId": "cancelTask",
                "summary": "Cancel a task that has not finished (action: write).",
                "responses": {"200": _json("Task", "Cancelled."), **_errors(404, 409)},
            },
        },
        "/tasks/{task_id}/rerun": {
            "parameters": [TASK_ID_PARAM],
            "post": {
                "operationId": "rerunTask",
                "summary": "Submit the same request again as a new task (action: execute).",
                "responses": {
                    "201": _created("The new task."),
                    **_errors(400, 404, 503),
                },
            },
        },
        "/tasks/{task_id}/result": {
            "parameters": [TASK_ID_PARAM],
            "get": {
                "operationId": "getResult",
                "summary": "The result: a JSON preview, or the pickle with "
                "Accept: application/octet-stream (action: read).",
                "responses": {
                    "200": {
                        "description": "The result.",
                        "content": {
                            "application/json": {"schema": _ref("ResultPreview")},
                            **octets,
                        },
                    },
                    **_errors(404, 409),
                },
            },
        },
        "/tasks/{task_id}/logs": {
            "parameters": [TASK_ID_PARAM],
            "get": {
                "operationId": "getLogs",
                "summary": "The task's output from byte `offset` (action: read).",
                "parameters": [
                    {
                        "name": "offset",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 0,
                            "maximum": 10**18 - 1,
                            "default": 0,
                        },
                    }
                ],
                "responses": {
                    "200": {
                        "description": "Log text; the next offset is in X-Next-Offset.",
                        "headers": {"X-Next-Offset": {"schema": {"type": "integer", "minimum": 0}}},
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 404),
                },
            },
        },
    }
