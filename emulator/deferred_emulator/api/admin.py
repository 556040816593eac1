"""The emulator's own endpoints under /_emulator/v1/: health, batches, entities, drain, clock, reset."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import __version__
from ..errors import InvalidArgument, PermissionDenied, Unsupported
from ..guard import media_type, read_body
from ..rates import rate_label
from ..throughput import FLOW_MINUTES
from .common import dispatcher_of, emulator_of, json_response, read_json
from .queues_json import queue_to_json
from .stats import queue_stats
from .tasks_json import response_view, task_from_json, task_to_json
from .timefmt import format_ts

PREFIX = "/_emulator/v1"


def _queue_path(request: web.Request, queue: str) -> str:
    settings = emulator_of(request).settings
    return f"projects/{settings.project}/locations/{settings.location}/queues/{queue}"


async def health(request: web.Request) -> web.Response:
    """Liveness, version and the task size limit clients plan around."""
    emulator = emulator_of(request)
    return json_response(
        {
            "ok": True,
            "version": __version__,
            "maxTaskSize": emulator.settings.max_task_size,
            "virtualClock": emulator.clock.virtual,
            "dispatch": emulator.settings.dispatch,
        }
    )


async def batch_add(request: web.Request) -> web.Response:
    """Add several tasks to any queues, all or none (transactional defer)."""
    emulator = emulator_of(request)
    data = await read_json(request, required=True)
    items = data.get("tasks")
    if not isinstance(items, list):
        raise InvalidArgument('Expected {"tasks": [{"queue": ..., "task": {...}}, ...]}.')
    now = emulator.now_us()
    news = []
    paths: dict[str, str] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidArgument(f"tasks[{i}] must be an object.")
        queue = item.get("queue") or "default"
        if not isinstance(queue, str):
            raise InvalidArgument(f"tasks[{i}].queue must be a string.")
        path = paths.get(queue) or paths.setdefault(queue, _queue_path(request, queue))
        news.append(task_from_json(item.get("task") or {}, queue, path, now))
    added = await emulator.add_tasks(news, emulator.app_engine_max_size)
    view = response_view(data.get("responseView"))
    deadline = emulator.settings.dispatch_deadline_s
    return json_response({"tasks": [task_to_json(t, paths[t.queue], view, deadline) for t in added]})


async def put_entity(request: web.Request) -> web.Response:
    """Store a large payload (raw body) and answer its key."""
    if media_type(request) != "application/octet-stream":
        raise Unsupported("Entities are raw bytes: send them as Content-Type: application/octet-stream.")
    key = await emulator_of(request).put_entity(await read_body(request))
    return json_response({"key": key})


async def get_entity(request: web.Request) -> web.Response:
    """A stored payload, raw."""
    body = await emulator_of(request).get_entity(request.match_info["key"])
    return web.Response(body=body, content_type="application/octet-stream")


async def delete_entity(request: web.Request) -> web.Response:
    """Delete a stored payload."""
    await emulator_of(request).delete_entity(request.match_info["key"])
    return json_response({})


async def drain(request: web.Request) -> web.Response:
    """Deliver every due task now and wait until none is due or in flight."""
    data = await read_json(request)
    queues = data.get("queues")
    if queues is not None and (not isinstance(queues, list) or not all(isinstance(q, str) for q in queues)):
        raise InvalidArgument('"queues" must be a list of queue ids.')
    timeout = data.get("timeout", 10)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
        raise InvalidArgument('"timeout" must be a number of seconds between 0 and 3600.')
    for queue in queues or []:
        await emulator_of(request).get_queue(queue, create=False)
    report = await dispatcher_of(request).drain(queues, float(timeout))
    return json_response(report)


async def clock(request: web.Request) -> web.Response:
    """The emulator's now."""
    emulator = emulator_of(request)
    now = emulator.now_us()
    return json_response({"now": format_ts(now), "nowUs": now, "virtual": emulator.clock.virtual})


async def clock_advance(request: web.Request) -> web.Response:
    """Move a virtual clock forward."""
    emulator = emulator_of(request)
    if not emulator.clock.virtual:
        raise InvalidArgument("The clock can be advanced only when the emulator runs with --virtual-clock.")
    data = await read_json(request, required=True)
    seconds = data.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= 400 * 86400:
        raise InvalidArgument('"seconds" must be a number of seconds between 0 and 400 days.')
    now = emulator.clock.advance(float(seconds))
    dispatcher_of(request).wake()
    return json_response({"now": format_ts(now), "nowUs": now, "virtual": True})


async def reset(request: web.Request) -> web.Response:
    """Delete all tasks (failed ones too), tombstones and entities; keep the queues."""
    await read_json(request)
    dispatcher = dispatcher_of(request)
    # Deliveries under way would record outcomes (and tombstones) for tasks that no longer exist.
    await dispatcher.cancel_all()
    await emulator_of(request).reset()
    await dispatcher.cancel_all()
    return json_response({})


async def stats(request: web.Request) -> web.Response:
    """Per-queue counts and last-minute throughput."""
    emulator = emulator_of(request)
    settings = emulator.settings
    parent = f"projects/{settings.project}/locations/{settings.location}"
    per_queue = await queue_stats(request)
    queues: list[dict[str, Any]] = []
    for name, queue in sorted(emulator.queues.items()):
        entry = queue_to_json(queue, parent, per_queue.get(name))
        entry["id"] = name
        entry["rate"] = rate_label(queue)
        queues.append(entry)
    return json_response({"queues": queues, "now": format_ts(emulator.now_us())})


async def flow(request: web.Request) -> web.Response:
    """Per queue, attempts dispatched, succeeded, retried and failed (gave up) in each of the last 60 minutes."""
    emulator = emulator_of(request)
    wanted = request.query.get("queue")
    if wanted is not None:
        await emulator.get_queue(wanted, create=False)
    minutes = dispatcher_of(request).throughput.per_minute()
    zeros = [0] * FLOW_MINUTES
    queues: dict[str, dict[str, list[int]]] = {}
    for name in sorted(emulator.queues):
        if wanted is not None and name != wanted:
            continue
        series = minutes.get(name, {})
        done, retry, failed = (series.get(v, zeros) for v in ("done", "retry", "failed"))
        queues[name] = {
            "dispatched": [a + b + c for a, b, c in zip(done, retry, failed)],
            "succeeded": done,
            "retried": retry,
            "failed": failed,
        }
    now = format_ts(emulator.now_us())
    return json_response({"now": now, "minutes": FLOW_MINUTES, "queues": queues})


async def delivery_secret(request: web.Request) -> web.Response:
    """The secret deliveries are signed with, for the app's handlers; never for a web page."""
    # The guard has checked Host (no DNS rebinding). A page's fetch carries Origin or Sec-Fetch-Site;
    # without CORS it could not read the answer anyway, but it gets none at all.
    fetch_site = request.headers.get("Sec-Fetch-Site", "none").lower()
    if "Origin" in request.headers or fetch_site != "none":
        raise PermissionDenied("The signing secret is for programs on this machine, not for web pages.")
    secret = emulator_of(request).settings.secret or ""
    response = json_response({"secret": secret})
    response.headers["Cache-Control"] = "no-store"
    return response


def routes() -> list[web.RouteDef]:
    """The extension routes."""
    return [
        web.get(PREFIX + "/health", health),
        web.get(PREFIX + "/secret", delivery_secret),
        web.post(PREFIX + "/tasks:batchAdd", batch_add),
        web.post(PREFIX + "/entities", put_entity),
        web.get(PREFIX + "/entities/{key}", get_entity),
        web.delete(PREFIX + "/entities/{key}", delete_entity),
        web.post(PREFIX + "/drain", drain),
        web.get(PREFIX + "/clock", clock),
        web.post(PREFIX + "/clock:advance", clock_advance),
        web.post(PREFIX + "/reset", reset),
        web.get(PREFIX + "/stats", stats),
        web.get(PREFIX + "/flow", flow),
    ]
