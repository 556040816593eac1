"""``GET /_emulator/v1/attempts``: the latest attempts, and a long poll for the next ones (``tail`` follows it)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ..attemptfeed import FeedEntry
from ..errors import InvalidArgument
from ..payload import call_summary
from ..throughput import VERDICTS
from .common import dispatcher_of, emulator_of, json_response, runtime_key
from .timefmt import format_ts

PREFIX = "/_emulator/v1"
#: Longest a request may wait for a new attempt (well under the CLI's 15 s read timeout).
MAX_WAIT_S = 10.0
OUTCOMES = dict(zip(VERDICTS, ("succeeded", "retry", "failed")))


def _number(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise InvalidArgument(f"{name} must be a number, not {text!r}.") from None
    if not low <= value <= high:
        raise InvalidArgument(f"{name} must be between {low:g} and {high:g}.")
    return value


def entry_to_json(entry: FeedEntry) -> dict[str, Any]:
    """One attempt as followers read it: when, which task, what it runs, and what came of it."""
    out: dict[str, Any] = {
        "seq": entry.seq,
        "dispatchTime": format_ts(entry.dispatch_us),
        "queue": entry.queue,
        "task": entry.task,
        "number": entry.number,
        "status": entry.status,
        "latencyMs": round((entry.response_us - entry.dispatch_us) / 1000, 3),
        "retryReason": entry.reason,
        "outcome": OUTCOMES.get(entry.verdict, entry.verdict),
        "method": entry.method,
        "url": entry.url,
    }
    runs = call_summary(entry.body) if entry.body else None
    if runs is not None:
        out["callable"], out["argsSummary"] = runs["callable"], runs["argsSummary"]
    return out


async def recent_attempts(request: web.Request) -> web.Response:
    """The latest attempts (``?last=N``), or those after the cursor ``since``, waiting up to ``wait`` s for one."""
    emulator = emulator_of(request)
    feed = dispatcher_of(request).feed
    queue = request.query.get("queue") or None
    if queue is not None:
        await emulator.get_queue(queue, create=False)
    limit = int(_number(request, "limit", 200, 1, 1000))
    if "since" not in request.query:
        last = int(_number(request, "last", 20, 0, 1000))
        entries = feed.latest(last, queue)
        return json_response(
            {
                "attempts": [entry_to_json(e) for e in entries],
                "next": feed.last_seq,
                "now": format_ts(emulator.now_us()),
            }
        )
    since = int(_number(request, "since", 0, 0, 2**53))
    wait = _number(request, "wait", 0, 0, MAX_WAIT_S)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    entries, cursor, missed = feed.since(since, queue, limit)
    # Attempts of other queues wake the wait too: look again until one of ours came or time is up.
    while not entries and wait > 0:
        remaining = deadline - loop.time()
        if remaining <= 0 or not await feed.wait(remaining):
            break
        entries, cursor, missed = feed.since(since, queue, limit)
    out: dict[str, Any] = {"attempts": [entry_to_json(e) for e in entries], "next": cursor}
    if missed:
        out["missed"] = missed
    out["now"] = format_ts(emulator.now_us())
    return json_response(out)


async def release_followers(app: web.Application) -> None:
    """On shutdown: answer every waiting follower now rather than hold the server's exit."""
    runtime = app[runtime_key]
    dispatcher = getattr(runtime, "dispatcher", None)
    if dispatcher is not None:
        dispatcher.feed.close()


def routes() -> list[web.RouteDef]:
    """The attempts route."""
    return [web.get(PREFIX + "/attempts", recent_attempts)]
