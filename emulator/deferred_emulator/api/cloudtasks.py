"""The Cloud Tasks v2 REST API (a subset), so Google's own client works against the emulator."""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import Any

from aiohttp import web

from ..errors import EmulatorError, InvalidArgument, NotFound, help_link
from ..models import NewTask, QueueConfig, QueueState
from ..operations import Operation
from ..service import QUEUE_NAME_DOC, Emulator
from .common import emulator_of, json_response, page_size, read_json
from .operations_json import operation_to_json
from .queues_json import queue_changes, queue_to_json
from .stats import queue_stats
from .tasks_json import response_view, task_from_json, task_to_json
from .v2beta3 import mask_in, queue_in, queue_out

PREFIX = r"/{version:v2|v2beta3}/projects/{project}/locations/{location}"
#: Sent by deferred_client's emulator backend: its tasks are App Engine's, with App Engine's size limit.
DEFERRED_CLIENT_HEADER = "X-Deferred-Client"
IAM_METHODS = ("getIamPolicy", "setIamPolicy", "testIamPermissions")
#: The etag Google's IAM answers with for a policy that was never set.
EMPTY_POLICY_ETAG = "ACAB"
#: Queue name -> the IAM policy last set on it.
iam_policies_key = web.AppKey("iam_policies", dict[str, dict[str, Any]])


def parent_of(request: web.Request) -> str:
    """``projects/P/locations/L`` as the request named it."""
    return f"projects/{request.match_info['project']}/locations/{request.match_info['location']}"


def split_action(segment: str, allowed: tuple[str, ...]) -> tuple[str, str]:
    """``name:action`` into its parts; unknown actions are 404."""
    name, _, action = segment.partition(":")
    if action and action not in allowed:
        raise NotFound(f"Unknown method {action!r}.")
    return name, action


def encode_token(eta_us: int, task_id: int) -> str:
    """A ListTasks page token: where the next page starts."""
    return base64.urlsafe_b64encode(f"{eta_us}:{task_id}".encode()).decode()


def decode_token(token: str) -> tuple[int, int]:
    """The position a ListTasks page token names (InvalidArgument if it is not one)."""
    try:
        eta, task_id = base64.urlsafe_b64decode(token.encode()).decode().split(":")
        return int(eta), int(task_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidArgument("Invalid page token.") from exc


def queues_page(
    emulator: Emulator, parent: str, token: str | None, size: int, stats: dict[str, dict[str, Any]], version: str
) -> dict[str, Any]:
    """A ListQueues answer: the queues after ``token``, in name order."""
    names = sorted(emulator.queues)
    if token:
        try:
            after = base64.urlsafe_b64decode(token.encode() + b"==").decode("utf-8", "replace")
        except (ValueError, binascii.Error) as exc:
            raise InvalidArgument("Invalid page token.") from exc
        names = [n for n in names if n > after]
    out: dict[str, Any] = {
        "queues": [queue_out(queue_to_json(emulator.queues[n], parent, stats.get(n)), version) for n in names[:size]]
    }
    if len(names) > size:
        out["nextPageToken"] = base64.urlsafe_b64encode(names[size - 1].encode()).decode()
    return out


async def list_queues(request: web.Request) -> web.Response:
    """ListQueues."""
    size = page_size(request, 100, 9800)
    token, version = request.query.get("pageToken"), request.match_info["version"]
    page = queues_page(emulator_of(request), parent_of(request), token, size, await queue_stats(request), version)
    return json_response(page)


def new_queue_id(data: dict[str, Any], parent: str) -> str:
    """The id of the queue a CreateQueue body names, checked against the parent it is created under."""
    name = data.get("name")
    if not isinstance(name, str) or "/queues/" not in name or not name.startswith("projects/"):
        raise InvalidArgument(
            'Queue name must be formatted: "projects/<PROJECT_ID>/locations/<LOCATION_ID>/queues/<QUEUE_ID>".',
            [help_link("Definition of queue name", QUEUE_NAME_DOC)],
        )
    prefix, _, queue_id = name.rpartition("/queues/")
    if prefix != parent:
        raise InvalidArgument(f"{name} must begin with {parent}.")
    return queue_id


async def create_queue(request: web.Request) -> web.Response:
    """CreateQueue: the body is the Queue itself."""
    emulator = emulator_of(request)
    parent = parent_of(request)
    version = request.match_info["version"]
    data = queue_in(await read_json(request, required=True), version)
    base = QueueConfig(new_queue_id(data, parent))
    queue = await emulator.create_queue(base.with_changes(**queue_changes(data, base)))
    return json_response(queue_out(queue_to_json(queue, parent), version))


async def queue_resource(request: web.Request) -> web.Response:
    """GetQueue, UpdateQueue, DeleteQueue and the :pause/:resume/:purge methods."""
    emulator = emulator_of(request)
    parent = parent_of(request)
    name, action = split_action(request.match_info["queue"], ("pause", "resume", "purge", *IAM_METHODS))
    version = request.match_info["version"]
    if request.method == "POST":
        if not action:
            raise NotFound("Unknown method.")
        if action in IAM_METHODS:
            return json_response(await iam_method(request, name, action))
        await read_json(request)
        if action == "purge":
            queue = await emulator.purge(name)
        else:
            queue = await emulator.set_state(name, QueueState.PAUSED if action == "pause" else QueueState.RUNNING)
        return json_response(queue_out(queue_to_json(queue, parent), version))
    if action:
        raise NotFound(f"Unknown method {action!r}.")
    if request.method == "GET":
        queue = await emulator.get_queue(name, create=False)
        stats = await queue_stats(request)
        return json_response(queue_out(queue_to_json(queue, parent, stats.get(name)), version))
    if request.method == "DELETE":
        await emulator.delete_queue(name)
        request.app[iam_policies_key].pop(name, None)
        return json_response({})
    data = queue_in(await read_json(request, required=True), version)
    mask_text = request.query.get("updateMask")
    mask = mask_in([m.strip() for m in mask_text.split(",") if m.strip()] if mask_text else None, version)
    queue = await emulator.get_queue(name, create=False)
    queue = await emulator.put_queue(queue.with_changes(**queue_changes(data, queue, mask)))
    return json_response(queue_out(queue_to_json(queue, parent), version))


async def create_task(emulator: Emulator, queue_path: str, data: dict[str, Any], from_deferred: bool) -> dict[str, Any]:
    """CreateTask: the task a request body describes, added to the queue at ``queue_path``; the answer's JSON.

    ``from_deferred``: the request came from the deferred client, App Engine's deferred library, whose
    tasks keep App Engine's size limit.
    """
    queue = queue_path.rpartition("/")[2]
    new = task_from_json(data.get("task"), queue, queue_path, emulator.now_us())
    task = await emulator.add_task(new, emulator.app_engine_max_size if from_deferred else None)
    view = response_view(data.get("responseView"))
    return task_to_json(task, queue_path, view, emulator.settings.dispatch_deadline_s)


async def tasks_collection(request: web.Request) -> web.Response:
    """ListTasks and CreateTask."""
    emulator = emulator_of(request)
    parent = parent_of(request)
    queue = request.match_info["queue"]
    queue_path = f"{parent}/queues/{queue}"
    deadline = emulator.settings.dispatch_deadline_s
    if request.method == "POST":
        data = await read_json(request, required=True)
        from_deferred = bool(request.headers.get(DEFERRED_CLIENT_HEADER))
        return json_response(await create_task(emulator, queue_path, data, from_deferred))
    view = response_view(request.query.get("responseView") and _maybe_int(request.query["responseView"]))
    size = page_size(request)
    token = request.query.get("pageToken")
    tasks = await emulator.list_tasks(queue, limit=size + 1, after=decode_token(token) if token else None)
    out: dict[str, Any] = {"tasks": [task_to_json(t, queue_path, view, deadline) for t in tasks[:size]]}
    if len(tasks) > size:
        last = tasks[size - 1]
        out["nextPageToken"] = encode_token(last.eta_us, last.id)
    return json_response(out)


def _maybe_int(value: str) -> str | int:
    return int(value) if value.isdigit() else value


async def task_resource(request: web.Request) -> web.Response:
    """GetTask, DeleteTask and RunTask."""
    emulator = emulator_of(request)
    queue = request.match_info["queue"]
    queue_path = f"{parent_of(request)}/queues/{queue}"
    name, action = split_action(request.match_info["task"], ("run",))
    deadline = emulator.settings.dispatch_deadline_s
    if request.method == "POST":
        if action != "run":
            raise NotFound("Unknown method.")
        data = await read_json(request)
        task = await emulator.run_task(queue, name)
        return json_response(task_to_json(task, queue_path, response_view(data.get("responseView")), deadline))
    if action:
        raise NotFound(f"Unknown method {action!r}.")
    if request.method == "DELETE":
        await emulator.delete_task(queue, name)
        return json_response({})
    task = await emulator.get_task(queue, name)
    view = response_view(_maybe_int(request.query.get("responseView", "")) or None)
    return json_response(task_to_json(task, queue_path, view, deadline))


def _request_id(data: dict[str, Any]) -> str:
    value = data.get("requestId") or ""
    if not isinstance(value, str) or len(value) > 500 or "/" in value:
        raise InvalidArgument("Invalid value for requestId.")
    return value


async def batch_create_operation(emulator: Emulator, parent: str, queue: str, data: dict[str, Any]) -> Operation:
    """BatchCreateTasks: a done Operation; a request that fails is in its metadata's ``failedRequests``."""
    queue_path = f"{parent}/queues/{queue}"
    requests = data.get("requests") or []
    if not isinstance(requests, list) or not all(isinstance(r, dict) for r in requests):
        raise InvalidArgument("Invalid value for requests: expected a list of CreateTaskRequest objects.")
    if any(r.get("parent") not in (None, "", queue_path) for r in requests):
        raise InvalidArgument(f"Every CreateTaskRequest.parent must be the batch's parent, {queue_path}.")
    items: list[NewTask | EmulatorError] = []
    views: list[str] = []
    now = emulator.now_us()
    for one in requests:
        try:
            views.append(response_view(one.get("responseView")))
            items.append(task_from_json(one.get("task"), queue, queue_path, now))
        except EmulatorError as exc:
            views.append("BASIC")
            items.append(exc)
    return await emulator.operations.batch_create(queue, items, views, _request_id(data))


async def batch_delete_operation(emulator: Emulator, parent: str, queue: str, data: dict[str, Any]) -> Operation:
    """BatchDeleteTasks: a done Operation; a name that cannot be deleted is in ``failedRequests``."""
    prefix = f"{parent}/queues/{queue}/tasks/"
    names = data.get("names") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidArgument("Invalid value for names: expected a list of task names.")
    items: list[str | EmulatorError] = [
        n.removeprefix(prefix)
        if n.startswith(prefix) and "/" not in n.removeprefix(prefix)
        else InvalidArgument(f"Task name {n!r} is not a task of {parent}/queues/{queue}.")
        for n in names
    ]
    return await emulator.operations.batch_delete(queue, items, _request_id(data))


async def batch_create(request: web.Request) -> web.Response:
    """BatchCreateTasks."""
    emulator = emulator_of(request)
    parent = parent_of(request)
    data = await read_json(request, required=True)
    op = await batch_create_operation(emulator, parent, request.match_info["queue"], data)
    version = request.match_info["version"]
    return json_response(operation_to_json(op, parent, version, emulator.settings.dispatch_deadline_s))


async def batch_delete(request: web.Request) -> web.Response:
    """BatchDeleteTasks."""
    emulator = emulator_of(request)
    parent = parent_of(request)
    data = await read_json(request, required=True)
    op = await batch_delete_operation(emulator, parent, request.match_info["queue"], data)
    version = request.match_info["version"]
    return json_response(operation_to_json(op, parent, version, emulator.settings.dispatch_deadline_s))


async def get_operation(request: web.Request) -> web.Response:
    """GetOperation: a batch's operation, done since it was created."""
    emulator = emulator_of(request)
    op = emulator.operations.get(request.match_info["operation"])
    version = request.match_info["version"]
    return json_response(operation_to_json(op, parent_of(request), version, emulator.settings.dispatch_deadline_s))


async def get_location(request: web.Request) -> web.Response:
    """GetLocation: the emulator answers for any location."""
    return json_response(location_json(request.match_info["project"], request.match_info["location"]))


def location_json(project: str, location: str) -> dict[str, Any]:
    """A Location: the emulator answers for any."""
    return {"name": f"projects/{project}/locations/{location}", "locationId": location}


async def iam_method(request: web.Request, queue: str, method: str) -> dict[str, Any]:
    """getIamPolicy, setIamPolicy, testIamPermissions on a queue.

    Nothing is enforced locally, so every permission asked about is granted; a policy set is kept
    (in memory) and read back, so code that manages its queues' policies runs unchanged.
    """
    data = await read_json(request)
    return await iam_answer(emulator_of(request), request.app[iam_policies_key], queue, method, data)


async def iam_answer(
    emulator: Emulator, policies: dict[str, dict[str, Any]], queue: str, method: str, data: dict[str, Any]
) -> dict[str, Any]:
    """What an IAM method answers for ``queue``, given its request body."""
    await emulator.get_queue(queue, create=False)
    if method == "testIamPermissions":
        permissions = data.get("permissions") or []
        if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
            raise InvalidArgument("Invalid value for permissions: expected a list of strings.")
        return {"permissions": permissions}
    if method == "setIamPolicy":
        policy = data.get("policy")
        if not isinstance(policy, dict):
            raise InvalidArgument("Invalid value for policy: expected an object.")
        policies[queue] = {**policy, "etag": base64.b64encode(secrets.token_bytes(6)).decode()}
    return policies.get(queue) or {"etag": EMPTY_POLICY_ETAG}


async def list_locations(request: web.Request) -> web.Response:
    """ListLocations: the location the emulator names its queues under by default."""
    location = emulator_of(request).settings.location
    return json_response({"locations": [location_json(request.match_info["project"], location)]})


def routes() -> list[web.RouteDef]:
    """The Cloud Tasks routes."""
    return [
        web.get(r"/{version:v2|v2beta3}/projects/{project}/locations", list_locations),
        web.get(PREFIX, get_location),
        web.get(PREFIX + "/queues", list_queues),
        web.post(PREFIX + "/queues", create_queue),
        web.route("*", PREFIX + "/queues/{queue}", queue_resource),
        web.post(PREFIX + "/queues/{queue}/tasks:batchCreate", batch_create),
        web.post(PREFIX + "/queues/{queue}/tasks:batchDelete", batch_delete),
        web.get(PREFIX + "/operations/{operation}", get_operation),
        web.route("GET", PREFIX + "/queues/{queue}/tasks", tasks_collection),
        web.route("POST", PREFIX + "/queues/{queue}/tasks", tasks_collection),
        web.route("*", PREFIX + "/queues/{queue}/tasks/{task}", task_resource),
    ]
