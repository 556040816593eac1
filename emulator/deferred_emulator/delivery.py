"""The HTTP request a task makes, and what came of it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from deferred_client.signing import sign

from .header_rules import is_hop_by_hop
from .models import QueueConfig, TargetKind, Task
from .plainhttp import EXCERPT_BYTES, RESPONSE_BYTES, Pool, request_head
from .settings import Settings

APP_ENGINE_USER_AGENT = "AppEngine-Google; (+http://code.google.com/appengine)"
CLOUD_TASKS_USER_AGENT = "Google-Cloud-Tasks"
#: The address App Engine's Task Queue requests come from.
TASK_QUEUE_IP = "0.1.0.2"
#: Headers the dispatcher sets itself; a task's own copies never reach the app.
RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        "X-AppEngine-QueueName",
        "X-AppEngine-TaskName",
        "X-AppEngine-TaskRetryCount",
        "X-AppEngine-TaskExecutionCount",
        "X-AppEngine-TaskETA",
        "X-AppEngine-TaskPreviousResponse",
        "X-AppEngine-TaskRetryReason",
        "X-AppEngine-Development-Payload",
        "X-AppEngine-User-IP",
        "X-AppEngine-Fake-Is-Admin",
        "X-CloudTasks-QueueName",
        "X-CloudTasks-TaskName",
        "X-CloudTasks-TaskRetryCount",
        "X-CloudTasks-TaskExecutionCount",
        "X-CloudTasks-TaskETA",
        "X-CloudTasks-TaskPreviousResponse",
        "X-CloudTasks-TaskRetryReason",
        "X-Deferred-Signature",
        "Content-Length",
        "Host",
        "User-Agent",
    )
)


#: Standard request header names in their usual spelling: a task's ``content-type`` goes out as
#: ``Content-Type``, as HTTP stacks write it (some receivers compare names case-sensitively).
STANDARD_HEADERS = {
    name.lower(): name
    for name in (
        "Accept",
        "Accept-Charset",
        "Accept-Encoding",
        "Accept-Language",
        "Authorization",
        "Cache-Control",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Location",
        "Content-MD5",
        "Content-Range",
        "Content-Type",
        "Cookie",
        "Date",
        "DNT",
        "Forwarded",
        "From",
        "If-Match",
        "If-Modified-Since",
        "If-None-Match",
        "If-Range",
        "If-Unmodified-Since",
        "Max-Forwards",
        "Origin",
        "Pragma",
        "Prefer",
        "Range",
        "Referer",
        "Via",
        "Warning",
        "X-Cloud-Trace-Context",
        "X-Forwarded-For",
        "X-Forwarded-Host",
        "X-Forwarded-Proto",
        "X-Requested-With",
    )
}


#: Ends a kept answer that was longer than RESPONSE_BYTES (the rest was not read).
CUT_MARK = "\n[… cut at 64 KiB]"


def response_text(body: bytes) -> str:
    """An answer as kept per attempt: decoded, and marked when it was cut at RESPONSE_BYTES."""
    if len(body) > RESPONSE_BYTES:
        return body[:RESPONSE_BYTES].decode("utf-8", "replace") + CUT_MARK
    return body.decode("utf-8", "replace")


@dataclass(frozen=True)
class Outcome:
    """What one delivery attempt got back."""

    #: HTTP status, or 0 when no response came (connection failure or deadline).
    status: int
    dispatch_us: int
    response_us: int
    #: The app's answer up to 64 KiB (``response_text``), or why none came.
    excerpt: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """2xx is success; anything else, redirects included, is a failure."""
        return 200 <= self.status < 300


def eta_header(eta_us: int) -> str:
    """Seconds since the epoch as a decimal, the way App Engine writes X-AppEngine-TaskETA."""
    return f"{eta_us // 1_000_000}.{eta_us % 1_000_000:06d}"


def target_url(task: Task, queue: QueueConfig | None, settings: Settings) -> str:
    """Where the task goes: its own URL, or the app (or ``--target`` service) plus its relative URI."""
    if task.kind is TargetKind.HTTP:
        return task.url
    service = (queue.target if queue and queue.target else None) or task.service or None
    if service and "." in service:
        # queue.yaml targets may be "version.service"
        service = service.rsplit(".", 1)[1]
    return settings.base_url_for(service) + task.url


def build_headers(task: Task, settings: Settings) -> dict[str, str]:
    """The headers of a delivery: the task's own minus the reserved ones (standard names in their usual
    spelling), then the task metadata."""
    headers = {}
    for name, value in task.headers.items():
        lower = name.lower()
        # Hop-by-hop headers are refused at create time; dropped here too for tasks stored before that rule.
        if lower not in RESERVED_HEADERS and not is_hop_by_hop(name):
            headers[STANDARD_HEADERS.get(lower, name)] = value
    if task.kind is TargetKind.APP_ENGINE:
        prefix = "X-AppEngine-"
        headers["User-Agent"] = APP_ENGINE_USER_AGENT
        # Task Queue requests come from 0.1.0.2 and App Engine's front end says so in this header;
        # appengine-python-standard copies it into REMOTE_ADDR, and its deferred handler checks it.
        headers["X-AppEngine-User-IP"] = TASK_QUEUE_IP
    else:
        prefix = "X-CloudTasks-"
        headers["User-Agent"] = CLOUD_TASKS_USER_AGENT
    headers[prefix + "QueueName"] = task.queue
    headers[prefix + "TaskName"] = task.name
    headers[prefix + "TaskRetryCount"] = str(task.retry_count)
    headers[prefix + "TaskExecutionCount"] = str(task.execution_count)
    headers[prefix + "TaskETA"] = eta_header(task.eta_us)
    if task.retry_count > 0:
        headers[prefix + "TaskPreviousResponse"] = str(task.previous_response or 0)
        headers[prefix + "TaskRetryReason"] = task.retry_reason
    # App Engine's default; HTTP targets get no Content-Type the task did not set.
    if task.body and task.kind is TargetKind.APP_ENGINE and "Content-Type" not in headers:
        headers["Content-Type"] = "application/octet-stream"
    if settings.secret:  # always set once the emulator has started (see Emulator.start)
        headers["X-Deferred-Signature"] = sign(settings.secret, task.queue, task.name, task.retry_count, task.body)
    return headers


async def deliver(
    session: aiohttp.ClientSession,
    task: Task,
    url: str,
    headers: dict[str, str],
    deadline_s: float,
    now_us: Callable[[], int],
    pool: Pool | None = None,
) -> Outcome:
    """Send one attempt and report the status (never raises for the app's failures).

    Plain-HTTP requests go through ``pool`` when one is given, the others through ``session``.
    """
    _now_us = now_us
    start = _now_us()
    try:
        async with asyncio.timeout(deadline_s):
            plain = request_head(task.method, url, headers, len(task.body)) if pool is not None else None
            if pool is not None and plain is not None:
                status, body = await pool.request(*plain, task.body)
                return Outcome(status, start, _now_us(), response_text(body))
            async with session.request(
                task.method,
                url,
                data=task.body if task.body or task.method in ("POST", "PUT") else None,
                headers=headers,
                allow_redirects=False,
                skip_auto_headers=("Accept", "Accept-Encoding"),
            ) as resp:
                return Outcome(resp.status, start, _now_us(), response_text(await read_capped(resp)))
    except TimeoutError:
        return Outcome(0, start, _now_us(), f"no response within the {deadline_s:g}s dispatch deadline", timed_out=True)
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return Outcome(0, start, _now_us(), f"{type(exc).__name__}: {exc}"[:EXCERPT_BYTES])


async def read_capped(resp: aiohttp.ClientResponse) -> bytes:
    """The answer's body up to RESPONSE_BYTES + 1 bytes; a longer one is not read further."""
    chunks: list[bytes] = []
    size = 0
    while size <= RESPONSE_BYTES:
        chunk = await resp.content.read(RESPONSE_BYTES + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
