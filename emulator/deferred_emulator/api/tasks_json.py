"""Cloud Tasks v2 Task JSON: reading a client's task, writing a stored one."""

from __future__ import annotations

import base64
import binascii
import sys
from functools import lru_cache
from typing import Any

from ..delivery import APP_ENGINE_USER_AGENT, CLOUD_TASKS_USER_AGENT
from ..errors import InvalidArgument
from ..models import NewTask, TargetKind, Task, TaskState
from .httptarget_json import auth_from_json, auth_to_json
from .queues_json import retry_from_json, retry_to_json
from .timefmt import format_duration, format_ts, pacific, parse_duration, parse_ts

HTTP_METHODS = ["HTTP_METHOD_UNSPECIFIED", "POST", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"]
VIEWS = ["VIEW_UNSPECIFIED", "BASIC", "FULL"]
#: HTTP status to google.rpc code, for lastAttempt.responseStatus.
RPC_CODES = {
    200: ("OK", 0),
    400: ("INVALID_ARGUMENT", 3),
    401: ("UNAUTHENTICATED", 16),
    403: ("PERMISSION_DENIED", 7),
    404: ("NOT_FOUND", 5),
    409: ("ABORTED", 10),
    412: ("FAILED_PRECONDITION", 9),
    416: ("OUT_OF_RANGE", 11),
    429: ("RESOURCE_EXHAUSTED", 8),
    499: ("CANCELLED", 1),
    500: ("INTERNAL", 13),
    501: ("UNIMPLEMENTED", 12),
    503: ("UNAVAILABLE", 14),
    504: ("DEADLINE_EXCEEDED", 4),
}
#: TaskState to the extension field's text (a dict: an enum's ``name`` is a property, and slow).
STATE_NAMES = {state: state.name for state in TaskState}
#: How far ahead a task may be scheduled (720h).
MAX_SCHEDULE_S = 30 * 24 * 3600
APP_ENGINE_DEADLINE = (15.0, 24 * 3600 + 15.0, "[15s, 24h15s]")
HTTP_DEADLINE = (15.0, 1800.0, "[15s, 30m]")


def enum_name(value: object, names: list[str], field: str) -> str:
    """An enum given by name or number (Google's REST client sends numbers)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return names[value]
    if isinstance(value, str) and value.upper() in names:
        return value.upper()
    raise InvalidArgument(f"Invalid value for {field}: {value!r}.")


def response_view(value: object) -> str:
    """BASIC unless FULL was asked for."""
    if value in (None, ""):
        return "BASIC"
    name = enum_name(value, VIEWS, "responseView")
    return "FULL" if name == "FULL" else "BASIC"


if sys.version_info >= (3, 11):

    def _b64decode(text: str) -> bytes:
        # What b64decode(validate=True) runs, without its wrapping: a body is decoded per task.
        return binascii.a2b_base64(text, strict_mode=True)

else:  # pragma: no cover - Python 3.10

    def _b64decode(text: str) -> bytes:
        return base64.b64decode(text, validate=True)


def decode_body(value: object, field: str) -> bytes:
    """Base64 (standard or URL-safe) to bytes."""
    if value is None or value == "":
        return b""
    if not isinstance(value, str):
        raise InvalidArgument(f"Invalid value for {field}: expected base64 text.")
    text = value.replace("-", "+").replace("_", "/")
    if len(text) % 4:
        text += "=" * (-len(text) % 4)
    try:
        return _b64decode(text)
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgument(f"Invalid value for {field}: not valid base64 ({exc}).") from exc


def _headers(value: object, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidArgument(f"Invalid value for {field}: expected a map of strings.")
    return dict(value)


def _object(value: object, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"Invalid value for {field}: expected an object.")
    return value


def _method(req: dict[str, Any], field: str) -> str:
    method = req.get("httpMethod")
    if method is None or method == "POST":  # the common case, without the enum lookup
        return "POST"
    name = enum_name(method or "POST", HTTP_METHODS, field)
    return "POST" if name == "HTTP_METHOD_UNSPECIFIED" else name


def _app_engine(req: dict[str, Any], queue: str) -> NewTask:
    method = _method(req, "appEngineHttpRequest.httpMethod")
    uri = req.get("relativeUri") or "/"
    if not isinstance(uri, str) or not uri.startswith("/") or len(uri) > 2083:
        raise InvalidArgument("AppEngineHttpRequest.relativeUri must start with '/' and be at most 2083 characters.")
    body = decode_body(req.get("body"), "appEngineHttpRequest.body")
    if body and method not in ("POST", "PUT"):
        raise InvalidArgument("AppEngineHttpRequest.body can only be set for POST and PUT requests.")
    headers = _headers(req.get("headers"), "appEngineHttpRequest.headers")
    new = NewTask(queue, "", 0, TargetKind.APP_ENGINE, method, uri, headers, body)
    routing = req.get("appEngineRouting")
    if routing is not None:
        routing = _object(routing, "appEngineHttpRequest.appEngineRouting")
        new.service = str(routing.get("service") or "")
        new.version = str(routing.get("version") or "")
        new.instance = str(routing.get("instance") or "")
        new.host = str(routing.get("host") or "")
    return new


def _http(req: dict[str, Any], queue: str) -> NewTask:
    url = req.get("url")
    if not url:
        raise InvalidArgument("HttpRequest.url is required.")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise InvalidArgument("HttpTarget.url must start with 'http://' or 'https://'.")
    method = _method(req, "httpRequest.httpMethod")
    body = decode_body(req.get("body"), "httpRequest.body")
    if body and method not in ("POST", "PUT", "PATCH"):
        raise InvalidArgument("HttpRequest.body can only be set for POST, PUT and PATCH requests.")
    headers = _headers(req.get("headers"), "httpRequest.headers")
    new = NewTask(queue, "", 0, TargetKind.HTTP, method, url, headers, body)
    if "oidcToken" in req or "oauthToken" in req:
        new.auth = auth_from_json(req, "HttpRequest")
    return new


def _deadline(value: object, kind: TargetKind) -> float | None:
    if value is None or value == "":
        return None
    seconds = parse_duration(value, "Task.dispatchDeadline")
    if seconds == 0:
        return None
    low, high, text = APP_ENGINE_DEADLINE if kind is TargetKind.APP_ENGINE else HTTP_DEADLINE
    if not low <= seconds <= high:
        raise InvalidArgument(f"Task.dispatchDeadline must be between {text}.")
    return seconds


def _eta(task: dict[str, Any], now_us: int) -> int:
    countdown_value = task.get("countdown")
    if countdown_value is not None and countdown_value != "":
        # Extension: seconds from the emulator's now, so countdowns follow --virtual-clock; it wins over
        # the scheduleTime the client computed with its own clock.
        countdown = parse_duration(countdown_value, "Task.countdown")
        if countdown > MAX_SCHEDULE_S:
            raise InvalidArgument(
                "The Task.countdown is too far in the future. Schedule time must be no more than 720h in the future."
            )
        if countdown < -MAX_SCHEDULE_S:
            raise InvalidArgument("Task.countdown must be within 720h of now.")
        return now_us + int(countdown * 1_000_000)
    if task.get("scheduleTime"):
        eta = parse_ts(task["scheduleTime"], "Task.scheduleTime")
        if eta > now_us + MAX_SCHEDULE_S * 1_000_000:
            raise InvalidArgument(
                f"The Task.scheduleTime, {pacific(eta)}, is too far in the future. Schedule time must be no more"
                " than 720h in the future."
            )
        return eta
    return now_us


def task_from_json(data: object, queue: str, queue_path: str, now_us: int) -> NewTask:
    """A NewTask from the ``task`` object of a CreateTask request."""
    task = _object(data, "task")
    name = task.get("name") or ""
    short = ""
    if name:
        if not isinstance(name, str):
            raise InvalidArgument("Invalid value for Task.name.")
        prefix, _, short = name.rpartition("/tasks/")
        if not prefix:
            short = name  # a bare id is accepted for convenience
        elif prefix != queue_path:
            raise InvalidArgument(
                f"The queue name from request ('{queue_path}') must be the same as the queue name in the named"
                f" task ('{prefix}')."
            )
    if "appEngineHttpRequest" in task and "httpRequest" in task:
        raise InvalidArgument("A task has exactly one of appEngineHttpRequest and httpRequest.")
    if "httpRequest" in task:
        new = _http(_object(task["httpRequest"], "httpRequest"), queue)
    else:
        new = _app_engine(_object(task.get("appEngineHttpRequest"), "appEngineHttpRequest"), queue)
    new.name = short
    new.eta_us = _eta(task, now_us)
    if task.get("retryConfig"):
        new.retry = retry_from_json(_object(task["retryConfig"], "Task.retryConfig"), "Task.retryConfig")
    if "dispatchDeadline" in task:
        new.deadline_s = _deadline(task["dispatchDeadline"], new.kind)
    return new


def _status(status: int) -> dict[str, Any]:
    name, code = RPC_CODES.get(status, ("UNKNOWN", 2) if status < 500 else ("INTERNAL", 13))
    if 200 <= status < 300:
        name, code = "OK", 0
    if status == 0:
        return {"code": 14, "message": "UNAVAILABLE(14): no response from the target"}
    return {"code": code, "message": f"{name}({code}): HTTP status code {status}"}


def _shown_headers(task: Task) -> dict[str, str]:
    """Headers as production shows them at rest: plus User-Agent, and for App Engine Content-Length/Type."""
    if not task.headers:
        # Most tasks set no headers, and many share a body length: those shown headers are cached, and
        # shared (nothing changes a task's JSON once built; it is only ever serialized).
        return _default_headers(task.kind, len(task.body))
    return _with_defaults(task.headers, task.kind, len(task.body))


@lru_cache(maxsize=1024)
def _default_headers(kind: TargetKind, body_length: int) -> dict[str, str]:
    return _with_defaults({}, kind, body_length)


def _with_defaults(given: dict[str, str], kind: TargetKind, body_length: int) -> dict[str, str]:
    headers = dict(given)
    lower = {k.lower() for k in headers}
    if kind is TargetKind.APP_ENGINE:
        headers.setdefault("User-Agent", APP_ENGINE_USER_AGENT)
        if body_length:
            if "content-length" not in lower:
                headers["Content-Length"] = str(body_length)
            if "content-type" not in lower:
                headers["Content-Type"] = "application/octet-stream"
    elif "user-agent" not in lower:
        headers["User-Agent"] = CLOUD_TASKS_USER_AGENT
    return dict(sorted(headers.items()))


def task_to_json(task: Task, queue_path: str, view: str = "BASIC", default_deadline_s: float = 600.0) -> dict[str, Any]:
    """The Cloud Tasks JSON of a stored task, plus the emulator's ``state`` and counters."""
    request: dict[str, Any] = {"httpMethod": task.method, "headers": _shown_headers(task)}
    if view == "FULL" and task.body:
        request["body"] = base64.b64encode(task.body).decode()
    out: dict[str, Any] = {"name": f"{queue_path}/tasks/{task.name}"}
    if task.kind is TargetKind.APP_ENGINE:
        request["relativeUri"] = task.url
        if task.service or task.version or task.instance or task.host:
            request["appEngineRouting"] = {
                k: v
                for k, v in (
                    ("service", task.service),
                    ("version", task.version),
                    ("instance", task.instance),
                    ("host", task.host),
                )
                if v
            }
        out["appEngineHttpRequest"] = request
    else:
        request["url"] = task.url
        if task.auth is not None:
            request.update(auth_to_json(task.auth))
        out["httpRequest"] = request
    out["scheduleTime"] = format_ts(task.eta_us)
    out["createTime"] = format_ts(task.created_us)
    out["dispatchDeadline"] = format_duration(task.deadline_s or default_deadline_s)
    out["dispatchCount"] = task.dispatch_count
    out["responseCount"] = task.response_count
    if task.first_attempt_us is not None:
        out["firstAttempt"] = {"dispatchTime": format_ts(task.first_attempt_us)}
    if task.last_dispatch_us is not None:
        last: dict[str, Any] = {"dispatchTime": format_ts(task.last_dispatch_us)}
        if task.last_schedule_us is not None:
            last["scheduleTime"] = format_ts(task.last_schedule_us)
        if task.last_response_us is not None and task.last_status:
            last["responseTime"] = format_ts(task.last_response_us)
        last["responseStatus"] = _status(task.last_status or 0)
        out["lastAttempt"] = last
    out["view"] = view
    if task.retry is not None:
        out["retryConfig"] = retry_to_json(task.retry)
    # Extensions (Google's client ignores fields it does not know).
    out["state"] = STATE_NAMES[task.state]
    out["retryCount"] = task.retry_count
    out["executionCount"] = task.execution_count
    if task.state is TaskState.FAILED:
        out["lastResponse"] = {"status": task.last_status, "excerpt": task.last_excerpt}
    return out
