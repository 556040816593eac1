"""Inspection endpoints under /_emulator/v1/: tasks by state, failed tasks, attempts, payloads, entities.

A task is named either under its queue (``queues/{q}/tasks/{t}/...``) or alone (``tasks/{t}/...``,
optionally with ``?queue=q``); a bare name is looked up across queues.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aiohttp import web

from ..delivery import CUT_MARK
from ..errors import FailedPrecondition, InvalidArgument, TaskNotFound
from ..models import Attempt, Task, TaskState
from ..payload import describe_body
from ..service import check_queue_name, check_task_name
from .common import emulator_of, json_response, page_size, read_json
from .task_find import find_page, parse_filter, runs_of
from .tasks_json import task_to_json
from .timefmt import format_ts

PREFIX = "/_emulator/v1"
STATE_NAMES = {"waiting": TaskState.WAITING, "running": TaskState.RUNNING, "failed": TaskState.FAILED}
ORDERS = ("soonest", "newest")
#: How much of an answer ``responseExcerpt`` holds (``response`` has all that was kept).
EXCERPT_CHARS = 1024


def _queue_path(request: web.Request, queue: str) -> str:
    settings = emulator_of(request).settings
    return f"projects/{settings.project}/locations/{settings.location}/queues/{queue}"


async def _queue_id(request: web.Request, queue: str) -> str:
    """A queue id that exists: 400 when it cannot be one, 404 when there is none."""
    emulator = emulator_of(request)
    if queue not in emulator.queues:
        check_queue_name(queue)
    await emulator.get_queue(queue, create=False)
    return queue


async def find_task(request: web.Request) -> Task:
    """The task a path names: under its queue, with ``?queue=``, or alone across every queue."""
    emulator = emulator_of(request)
    name = request.match_info["task"]
    check_task_name(name)
    queue = request.match_info.get("queue") or request.query.get("queue")
    if queue:
        return await emulator.get_task(await _queue_id(request, queue), name)
    found = [t for q in sorted(emulator.queues) if (t := await emulator.store.get_task(q, name)) is not None]
    if not found:
        raise TaskNotFound(f"No task named {name!r} in any queue.")
    if len(found) > 1:
        queues = ", ".join(t.queue for t in found)
        raise InvalidArgument(f"Task {name!r} exists in several queues ({queues}): name one with ?queue=.")
    return found[0]


def _encode_token(eta_us: int, task_id: int) -> str:
    return base64.urlsafe_b64encode(f"{eta_us}:{task_id}".encode()).decode()


def _decode_token(token: str) -> tuple[int, int]:
    try:
        eta, task_id = base64.urlsafe_b64decode(token.encode()).decode().split(":")
        return int(eta), int(task_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidArgument("Invalid page token.") from exc


def _states(text: str) -> list[TaskState] | None:
    if not text or text == "all":
        return None
    states = []
    for part in text.split(","):
        state = STATE_NAMES.get(part.strip().lower())
        if state is None:
            raise InvalidArgument(f"Unknown task state {part!r}: use all, waiting, running or failed.")
        states.append(state)
    return states


def task_summary(task: Task, now_us: int, runs: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a task list shows of one task (``runs``: what its deferred call runs, from ``runs_of``)."""
    out: dict[str, Any] = {
        "name": task.name,
        "queue": task.queue,
        "state": task.state.name,
        "due": task.state is TaskState.WAITING and task.eta_us <= now_us,
        "scheduleTime": format_ts(task.eta_us),
        "createTime": format_ts(task.created_us),
        "method": task.method,
        "url": task.url,
        "target": task.kind.value,
        "size": len(task.body),
        "retryCount": task.retry_count,
        "executionCount": task.execution_count,
        "dispatchCount": task.dispatch_count,
        "responseCount": task.response_count,
    }
    if task.service:
        out["service"] = task.service
    if runs is not None:
        out["callable"] = runs["callable"]
        out["argsSummary"] = runs["argsSummary"]
        if runs.get("entityKey"):
            out["entityKey"] = runs["entityKey"]
    if task.last_dispatch_us is not None:
        out["lastAttempt"] = {
            "dispatchTime": format_ts(task.last_dispatch_us),
            "status": task.last_status or 0,
            "retryReason": task.retry_reason,
            "responseExcerpt": task.last_excerpt,
        }
    return out


def attempt_to_json(attempt: Attempt, whole: bool = True) -> dict[str, Any]:
    """One delivery attempt, with the app's whole answer as kept (up to 64 KiB), or only its first KiB."""
    cut = attempt.excerpt.endswith(CUT_MARK)
    response = attempt.excerpt[: -len(CUT_MARK)] if cut else attempt.excerpt
    out = {
        "number": attempt.number,
        "scheduleTime": format_ts(attempt.schedule_us),
        "dispatchTime": format_ts(attempt.dispatch_us),
        "responseTime": format_ts(attempt.response_us),
        "status": attempt.status,
        "latencyMs": round(attempt.latency_ms, 3),
        "retryReason": attempt.reason,
        "responseExcerpt": response[:EXCERPT_CHARS],
        "responseTruncated": cut or len(response) > EXCERPT_CHARS,
    }
    if whole:
        out["response"], out["responseTruncated"] = response, cut
    return out


async def _page(
    request: web.Request, queue: str, states: list[TaskState] | None, newest: bool
) -> tuple[list[tuple[Task, dict[str, Any] | None]], dict[str, Any]]:
    """A page of tasks with what they run, and its JSON (without the tasks' own entries, which callers fill in)."""
    emulator = emulator_of(request)
    size = page_size(request, 50, 1000)
    token = request.query.get("pageToken")
    after = _decode_token(token) if token else None
    flt = parse_filter(request.query.get("filter", ""))
    rows, next_after = await find_page(emulator, queue, states, size, after, newest, flt)
    out: dict[str, Any] = {"queue": queue, "now": format_ts(emulator.now_us())}
    if flt:
        out["filter"] = {"name": flt.name, "callable": flt.callable}
    if next_after is not None:
        out["nextPageToken"] = _encode_token(*next_after)
    return rows, out


async def list_tasks(request: web.Request) -> web.Response:
    """A page of a queue's tasks, filtered by state, name prefix and callable, soonest or newest first."""
    queue = await _queue_id(request, request.match_info["queue"])
    order = request.query.get("order", "soonest")
    if order not in ORDERS:
        raise InvalidArgument(f"Unknown order {order!r}: use soonest or newest.")
    rows, out = await _page(request, queue, _states(request.query.get("state", "")), order == "newest")
    now = emulator_of(request).now_us()
    out["tasks"] = [task_summary(t, now, runs) for t, runs in rows]
    return json_response(out)


async def list_failed(request: web.Request) -> web.Response:
    """A page of the tasks that ran out of retries, each with its attempt history."""
    emulator = emulator_of(request)
    queue = await _queue_id(request, request.match_info["queue"])
    rows, out = await _page(request, queue, [TaskState.FAILED], request.query.get("order") == "newest")
    now = emulator.now_us()
    out["tasks"] = []
    for task, runs in rows:
        entry = task_summary(task, now, runs)
        # A page holds many tasks: their answers' first KiB each (the task's attempts endpoint has them whole).
        entry["attempts"] = [attempt_to_json(a, whole=False) for a in await emulator.store.attempts(task.id)]
        out["tasks"].append(entry)
    return json_response(out)


async def retry_failed(request: web.Request) -> web.Response:
    """Put failed tasks back in line: all of them, ``{"tasks": [names]}`` or ``{"task": name}``."""
    emulator = emulator_of(request)
    queue = await _queue_id(request, request.match_info["queue"])
    data = await read_json(request)
    names = data.get("tasks")
    if "task" in data:
        names = [data["task"]]
    if names is None:
        return json_response({"retried": await emulator.retry_failed(queue)})
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidArgument('"tasks" must be a list of task names.')
    for name in names:
        check_task_name(name)
        task = await emulator.get_task(queue, name)
        if task.state is not TaskState.FAILED:
            raise FailedPrecondition(f"Task {name!r} has not failed (it is {task.state.name}).")
    retried = 0
    for name in dict.fromkeys(names):
        retried += await emulator.retry_failed(queue, name)
    return json_response({"retried": retried})


async def get_task(request: web.Request) -> web.Response:
    """One task: a summary, and its Cloud Tasks resource with headers."""
    emulator = emulator_of(request)
    task = await find_task(request)
    out = task_summary(task, emulator.now_us(), await runs_of(emulator, task))
    out["resource"] = task_to_json(
        task, _queue_path(request, task.queue), "BASIC", emulator.settings.dispatch_deadline_s
    )
    return json_response(out)


async def task_attempts(request: web.Request) -> web.Response:
    """Every recorded attempt of a task."""
    emulator = emulator_of(request)
    task = await find_task(request)
    attempts = await emulator.store.attempts(task.id)
    return json_response({"queue": task.queue, "task": task.name, "attempts": [attempt_to_json(a) for a in attempts]})


async def task_payload(request: web.Request) -> web.Response:
    """A safe description of a task's body (deferred pickles are read, never unpickled)."""
    emulator = emulator_of(request)
    task = await find_task(request)
    out: dict[str, Any] = {"queue": task.queue, "task": task.name}
    ctype = next((v for k, v in task.headers.items() if k.lower() == "content-type"), None)
    if ctype:
        out["contentType"] = ctype
    out.update(describe_body(task.body))
    key = out.get("entityKey")
    if isinstance(key, str):
        body = await emulator.store.get_entity(key)
        out["entity"] = {"key": key, "missing": True} if body is None else {"key": key, **describe_body(body)}
    return json_response(out)


async def list_entities(request: web.Request) -> web.Response:
    """Stored large payloads, newest first."""
    emulator = emulator_of(request)
    rows = await emulator.store.list_entities(page_size(request, 100, 1000))
    entities = [
        {"key": key, "size": size, "createTime": format_ts(created), "taskId": task_id}
        for key, size, created, task_id in rows
    ]
    return json_response({"entities": entities})


def routes() -> list[web.RouteDef]:
    """The inspection routes."""
    task_forms = (PREFIX + "/queues/{queue}/tasks/{task}", PREFIX + "/tasks/{task}")
    out = [
        web.get(PREFIX + "/queues/{queue}/tasks", list_tasks),
        web.get(PREFIX + "/queues/{queue}/failed", list_failed),
        web.post(PREFIX + "/queues/{queue}/failed:retry", retry_failed),
        web.get(PREFIX + "/entities", list_entities),
    ]
    for base in task_forms:
        out += [
            web.get(base, get_task),
            web.get(base + "/attempts", task_attempts),
            web.get(base + "/payload", task_payload),
        ]
    return out
