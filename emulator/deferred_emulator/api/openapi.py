"""The OpenAPI 3 document of the whole HTTP API, served at ``GET /_emulator/v1/openapi.json``.

Operations are described here by hand; the document lists those the running app actually routes,
plus a plain entry for any route not described yet, so it never misses an endpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .. import __version__
from ..guard import RAW_BODY_PATHS
from .common import json_response
from .console import FILES as CONSOLE_FILES
from .openapi_inspection import INSPECTION_SCHEMAS
from .openapi_schemas import SCHEMAS, Schema, ref

V2 = "/v2/projects/{project}/locations/{location}"
EXT = "/_emulator/v1"
PATH_PARAM_RE = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


@dataclass(frozen=True)
class Op:
    """One documented operation."""

    method: str
    path: str
    summary: str
    #: component schema of the JSON body, if the operation takes one.
    body: str | None = None
    body_required: bool = False
    #: the body is raw bytes (application/octet-stream).
    raw_body: bool = False
    #: component schema of the 200 answer; None: raw bytes.
    answer: str | None = "Empty"
    query: tuple[tuple[str, Schema], ...] = ()
    tag: str = "emulator"
    #: media type of a non-JSON answer.
    answer_type: str = "application/octet-stream"

    @property
    def route(self) -> str:
        """The aiohttp route pattern serving this operation (``name:action`` is one path segment there)."""
        path = self.path.replace("/v2/", "/{version}/", 1)
        return re.sub(r"\}:[A-Za-z]+$", "}", path)


PAGE = (("pageSize", {"type": "integer", "minimum": 0}), ("pageToken", {"type": "string"}))
VIEW_Q = (("responseView", {"type": "string", "enum": ["VIEW_UNSPECIFIED", "BASIC", "FULL"]}),)
CT = "cloud tasks v2"
INSPECT = "inspection"
STATE_Q = ("state", {"type": "string", "example": "waiting,failed", "description": "all, or states joined by commas."})
ORDER_Q = ("order", {"type": "string", "enum": ["soonest", "newest"]})
QUEUE_Q = (("queue", {"type": "string", "description": "The task's queue, when its name is in several."}),)
FILTER_Q = (
    "filter",
    {
        "type": "string",
        "example": "name:report- callable:myapp.mail.send",
        "description": "name:PREFIX (task names starting with it) and/or callable:TEXT (deferred calls whose"
        " callable path contains it), separated by spaces; values may be quoted.",
    },
)

OPERATIONS: tuple[Op, ...] = (
    Op("GET", "/v2/projects/{project}/locations", "List locations.", answer="ListLocationsResponse", tag=CT),
    Op("GET", V2, "Get a location (any location is answered).", answer="Location", tag=CT),
    Op("GET", V2 + "/queues", "List queues.", answer="ListQueuesResponse", query=PAGE, tag=CT),
    Op("POST", V2 + "/queues", "Create a queue.", body="Queue", body_required=True, answer="Queue", tag=CT),
    Op("GET", V2 + "/queues/{queue}", "Get a queue.", answer="Queue", tag=CT),
    Op(
        "PATCH",
        V2 + "/queues/{queue}",
        "Update a queue (only the fields under updateMask, when given).",
        body="Queue",
        body_required=True,
        answer="Queue",
        query=(("updateMask", {"type": "string"}),),
        tag=CT,
    ),
    Op("DELETE", V2 + "/queues/{queue}", "Delete a queue and its tasks.", tag=CT),
    Op("POST", V2 + "/queues/{queue}:pause", "Pause a queue.", body="Empty", answer="Queue", tag=CT),
    Op("POST", V2 + "/queues/{queue}:resume", "Resume a queue.", body="Empty", answer="Queue", tag=CT),
    Op("POST", V2 + "/queues/{queue}:purge", "Delete every task of a queue.", body="Empty", answer="Queue", tag=CT),
    Op("POST", V2 + "/queues/{queue}:getIamPolicy", "A queue's IAM policy.", body="Empty", answer="Policy", tag=CT),
    Op(
        "POST",
        V2 + "/queues/{queue}:setIamPolicy",
        "Set a queue's IAM policy (kept in memory; nothing is enforced).",
        body="SetIamPolicyRequest",
        answer="Policy",
        tag=CT,
    ),
    Op(
        "POST",
        V2 + "/queues/{queue}:testIamPermissions",
        "Which of the given permissions the caller has: all of them, locally.",
        body="TestIamPermissionsRequest",
        answer="TestIamPermissionsResponse",
        tag=CT,
    ),
    Op(
        "GET",
        V2 + "/queues/{queue}/tasks",
        "List tasks, by schedule time.",
        answer="ListTasksResponse",
        query=PAGE + VIEW_Q,
        tag=CT,
    ),
    Op(
        "POST",
        V2 + "/queues/{queue}/tasks",
        "Create a task.",
        body="CreateTaskRequest",
        body_required=True,
        answer="Task",
        tag=CT,
    ),
    Op(
        "POST",
        V2 + "/queues/{queue}/tasks:batchCreate",
        "Create up to 100 tasks; each failed request is reported by index in the operation's metadata.",
        body="BatchCreateTasksRequest",
        body_required=True,
        answer="Operation",
        tag=CT,
    ),
    Op(
        "POST",
        V2 + "/queues/{queue}/tasks:batchDelete",
        "Delete up to 1,000 tasks; each failed name is reported by index in the operation's metadata.",
        body="BatchDeleteTasksRequest",
        body_required=True,
        answer="Operation",
        tag=CT,
    ),
    Op("GET", V2 + "/operations/{operation}", "A batch's operation (done).", answer="Operation", tag=CT),
    Op("GET", V2 + "/queues/{queue}/tasks/{task}", "Get a task.", answer="Task", query=VIEW_Q, tag=CT),
    Op("DELETE", V2 + "/queues/{queue}/tasks/{task}", "Delete a task (its name is tombstoned).", tag=CT),
    Op(
        "POST", V2 + "/queues/{queue}/tasks/{task}:run", "Run a task now.", body="RunTaskRequest", answer="Task", tag=CT
    ),
    Op("GET", EXT + "/health", "Liveness, version and the task size limit.", answer="Health"),
    Op("GET", EXT + "/secret", "The secret deliveries are signed with (for local programs).", answer="DeliverySecret"),
    Op(
        "POST",
        EXT + "/tasks:batchAdd",
        "Add several tasks to any queues, all or none.",
        body="BatchAddRequest",
        body_required=True,
        answer="BatchAddResponse",
    ),
    Op("POST", EXT + "/entities", "Store a large payload.", raw_body=True, body_required=True, answer="EntityKey"),
    Op("GET", EXT + "/entities/{key}", "A stored payload.", answer=None),
    Op("DELETE", EXT + "/entities/{key}", "Delete a stored payload."),
    Op("POST", EXT + "/drain", "Deliver every due task now and wait.", body="DrainRequest", answer="DrainReport"),
    Op("GET", EXT + "/clock", "The emulator's time.", answer="Clock"),
    Op(
        "POST",
        EXT + "/clock:advance",
        "Move the virtual clock forward (--virtual-clock).",
        body="ClockAdvanceRequest",
        body_required=True,
        answer="Clock",
    ),
    Op(
        "POST",
        EXT + "/reset",
        "Delete all tasks, tombstones, entities and operations, and the OIDC signing key; keep the queues.",
        body="Empty",
    ),
    Op(
        "GET",
        "/.well-known/openid-configuration",
        "The OIDC issuer of HTTP tasks' tokens: its issuer URL and jwks_uri.",
        answer="OpenIdConfiguration",
        tag="oidc",
    ),
    Op("GET", "/oauth2/v3/certs", "The issuer's signing key as a JWK Set.", answer="JwkSet", tag="oidc"),
    Op(
        "GET",
        "/oauth2/v1/certs",
        "The issuer's signing key as {kid: PEM certificate}, the form of Google's oauth2/v1/certs.",
        answer="PemCertificates",
        tag="oidc",
    ),
    Op("GET", EXT + "/stats", "Per-queue counts and last-minute throughput.", answer="Stats"),
    Op(
        "GET",
        EXT + "/flow",
        "Per queue, attempts dispatched, succeeded, retried and failed in each of the last 60 minutes.",
        answer="Flow",
        query=(("queue", {"type": "string", "description": "Only this queue."}),),
        tag=INSPECT,
    ),
    Op(
        "GET",
        EXT + "/attempts",
        "The latest attempts (last), or those after a cursor (since), waiting up to `wait` seconds for one.",
        answer="RecentAttempts",
        query=(
            ("last", {"type": "integer", "minimum": 0, "maximum": 1000, "description": "Without since: how many."}),
            ("since", {"type": "integer", "minimum": 0, "description": "The `next` of the previous answer."}),
            ("wait", {"type": "number", "minimum": 0, "maximum": 10, "description": "Seconds to wait for one."}),
            ("queue", {"type": "string", "description": "Only this queue's attempts."}),
            ("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
        ),
        tag=INSPECT,
    ),
    Op("GET", EXT + "/openapi.json", "This document.", answer="Empty"),
    Op(
        "GET",
        EXT + "/queues/{queue}/tasks",
        "A page of a queue's tasks, by state, name prefix and callable, soonest or newest first.",
        answer="TaskPage",
        query=(STATE_Q, ORDER_Q, FILTER_Q, *PAGE),
        tag=INSPECT,
    ),
    Op(
        "GET",
        EXT + "/queues/{queue}/failed",
        "A page of the tasks that ran out of retries, with their attempts.",
        answer="FailedTaskPage",
        query=(ORDER_Q, FILTER_Q, *PAGE),
        tag=INSPECT,
    ),
    Op(
        "POST",
        EXT + "/queues/{queue}/failed:retry",
        "Put failed tasks back in line (all, or those named).",
        body="RetryFailedRequest",
        answer="RetryFailedResponse",
        tag=INSPECT,
    ),
    *(
        op
        for base, query in ((EXT + "/queues/{queue}/tasks/{task}", ()), (EXT + "/tasks/{task}", QUEUE_Q))
        for op in (
            Op(
                "GET",
                base,
                "One task: its summary and its Cloud Tasks resource.",
                answer="TaskDetail",
                query=query,
                tag=INSPECT,
            ),
            Op(
                "GET",
                base + "/attempts",
                "Every recorded attempt of a task.",
                answer="TaskAttempts",
                query=query,
                tag=INSPECT,
            ),
            Op(
                "GET",
                base + "/payload",
                "What a task's body holds, never unpickled.",
                answer="TaskPayload",
                query=query,
                tag=INSPECT,
            ),
        )
    ),
    Op(
        "GET",
        EXT + "/entities",
        "Stored large payloads, newest first.",
        answer="EntityList",
        query=PAGE[:1],
        tag=INSPECT,
    ),
    Op("GET", EXT + "/routing", "Where App Engine tasks are delivered.", answer="Routing"),
    Op(
        "PATCH",
        EXT + "/routing",
        "Change the app URL and/or the per-service targets while running.",
        body="Routing",
        body_required=True,
        answer="Routing",
    ),
    *(
        Op("GET", path, f"The web console's {name}.", answer=None, answer_type=media, tag="console")
        for path, (name, media) in CONSOLE_FILES.items()
    ),
    Op(
        "POST",
        "/rpc_http",
        "App Engine API server (taskqueue, and datastore_v3 for deferred payloads): protocol buffers.",
        raw_body=True,
        body_required=True,
        answer=None,
        tag="app engine",
    ),
)


def _content(schema_name: str | None, media: str = "application/octet-stream") -> dict[str, Any]:
    if schema_name is None:
        return {media: {"schema": {"type": "string", "format": "binary"}}}
    return {"application/json": {"schema": ref(schema_name)}}


def operation(op: Op) -> dict[str, Any]:
    """The OpenAPI Operation object of ``op``."""
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in PATH_PARAM_RE.findall(op.path)
    ]
    params += [{"name": name, "in": "query", "required": False, "schema": schema} for name, schema in op.query]
    out: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{op.method.lower()} {op.path}",
        "tags": [op.tag],
        "responses": {
            "200": {"description": "OK", "content": _content(op.answer, op.answer_type)},
            "default": {"description": "An error, as Google's APIs write them.", "content": _content("Error")},
        },
    }
    if params:
        out["parameters"] = params
    if op.raw_body or op.body:
        out["requestBody"] = {"required": op.body_required, "content": _content(None if op.raw_body else op.body)}
    return out


def _routed(app: web.Application) -> set[tuple[str, str]]:
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }


def _serves(routed: set[tuple[str, str]], op: Op) -> bool:
    return (op.method, op.route) in routed or ("*", op.route) in routed


def _undescribed(method: str, pattern: str) -> Op:
    path = pattern.replace("/{version}/", "/v2/", 1) if pattern.startswith("/{version}/") else pattern
    path = PATH_PARAM_RE.sub(lambda m: "{" + m.group(1) + "}", path)
    body = method in ("POST", "PUT", "PATCH")
    raw = path in RAW_BODY_PATHS
    return Op(method, path, "Undocumented endpoint.", body="Empty" if body and not raw else None, raw_body=body and raw)


def build_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document for the routes of ``app``."""
    routed = _routed(app)
    ops = [op for op in OPERATIONS if _serves(routed, op)]
    covered = {(op.method, op.route) for op in ops} | {("*", op.route) for op in ops}
    for method, pattern in sorted(routed - covered):
        if method != "*":
            ops.append(_undescribed(method, pattern))
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(op.path, {})[op.method.lower()] = operation(op)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "deferred-emulator",
            "version": __version__,
            "description": "Cloud Tasks v2 REST (a subset, under /v2/ and /v2beta3/), the emulator's extensions"
            " under /_emulator/v1/, and the App Engine API server at /rpc_http.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": {**SCHEMAS, **INSPECTION_SCHEMAS}},
    }


async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI document of this app's routes."""
    return json_response(build_document(request.app))


def routes() -> list[web.RouteDef]:
    """The document's route."""
    return [web.get(EXT + "/openapi.json", openapi_json)]
