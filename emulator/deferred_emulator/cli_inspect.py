"""Inspection commands: read and steer a running emulator over HTTP, print aligned tables."""

from __future__ import annotations

import json
import os
import shlex
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

import click

V1 = "/_emulator/v1"
DEFAULT_URL = "http://127.0.0.1:8123"
HOST_ENV = "DEFERRED_EMULATOR_HOST"
EMULATOR_HELP = f"Emulator base URL  [default: from {HOST_ENV} (host:port), else {DEFAULT_URL}]"
QUEUE_HELP = "Queue holding the task (default: look it up across queues)."
TIMEOUT_S = 15.0
NAME_FILTER_HELP = "Only tasks whose name starts with PREFIX."
CALLABLE_FILTER_HELP = "Only deferred calls whose callable contains TEXT (such as send_welcome or myapp.mail)."

F = TypeVar("F", bound=Callable[..., Any])


class InspectError(click.ClickException):
    """A failed command: one line, exit status 2."""

    exit_code = 2


class Unreachable(InspectError):
    """Raised when nothing answers at the emulator's address."""


class Missing(InspectError):
    """Raised when the emulator answers 404: the command says what was missing, the same way everywhere."""


def no_queue(queue: str) -> Missing:
    """Every command's words for a queue that does not exist."""
    return Missing(f"no queue named {queue!r}")


def no_task(name: str, queue: str | None) -> Missing:
    """Every command's words for a task that does not exist."""
    return Missing(f"no task named {name!r}" + (f" in queue {queue!r}" if queue else " in any queue"))


def emulator_url(option: str | None, environ: dict[str, str] | None = None) -> str:
    """The emulator's base URL: ``--emulator``, else DEFERRED_EMULATOR_HOST, else the default."""
    env = os.environ if environ is None else environ
    value = option or env.get(HOST_ENV) or DEFAULT_URL
    if "://" not in value:
        value = "http://" + value
    return value.rstrip("/")


class Emulator:
    """A tiny blocking HTTP client for one emulator."""

    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the API; the decoded JSON, or InspectError with the emulator's message."""
        data = None
        headers = {"Accept": "application/json"}
        if method != "GET":
            # State-changing requests always carry a JSON body (the emulator refuses anything else).
            data = json.dumps(body or {}).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise (Missing if exc.code == 404 else InspectError)(_error_text(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(f"cannot reach the emulator at {self.base} ({reason}); is it running?") from None
        except ValueError:
            raise InspectError(f"{self.base} answered something that is not JSON; is it the emulator?") from None

    def find_task(self, name: str, queue: str | None) -> dict[str, Any]:
        """One task's JSON, looked up across queues unless ``queue`` is given."""
        query = "?" + urllib.parse.urlencode({"queue": queue}) if queue else ""
        try:
            return dict(self.call("GET", f"{V1}/tasks/{_segment(name)}{query}"))
        except Missing:
            if queue:
                self.queue_name(queue)  # a missing queue says so
            raise no_task(name, queue) from None

    def queue_call(self, queue: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """A call about one queue, whose 404 is that queue's absence."""
        try:
            return self.call(method, path, body)
        except Missing:
            raise no_queue(queue) from None

    def queue_name(self, queue: str) -> str:
        """The queue's full resource name (``projects/P/locations/L/queues/Q``)."""
        for entry in self.call("GET", f"{V1}/stats")["queues"]:
            if entry["id"] == queue:
                return str(entry["name"])
        raise no_queue(queue)


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        message = json.loads(exc.read())["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = exc.reason
    return f"{exc.code}: {message}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; the columns in ``right`` (numbers) are right-aligned."""
    cells = [[str(c) for c in headers]] + [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 timestamp from the API."""
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def relative(text: str | None, now: datetime) -> str:
    """``in 5m``, ``12s ago``, ``now``: a timestamp against the emulator's own now."""
    when = parse_time(text)
    if when is None:
        return "-"
    seconds = (when - now).total_seconds()
    if abs(seconds) < 1:
        return "now"
    amount = span_text(abs(seconds))
    return f"in {amount}" if seconds > 0 else f"{amount} ago"


def span_text(seconds: float) -> str:
    """A duration in its two largest units, never rounded up: ``1h 59m``, ``5m``, ``2d 3h``, ``42s``."""
    whole = int(seconds)
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    for i, (unit, size) in enumerate(units):
        if whole >= size or unit == "s":
            first, rest = divmod(whole, size)
            if unit == "s":
                return f"{first}{unit}"
            small, small_size = units[i + 1]
            second = rest // small_size
            return f"{first}{unit} {second}{small}" if second else f"{first}{unit}"
    return "0s"


def local_time(text: str | None) -> str:
    """A timestamp in local time, to the millisecond, with its zone."""
    when = parse_time(text)
    if when is None:
        return "-"
    local = when.astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " " + (local.tzname() or local.strftime("%z"))


def runs_text(task: dict[str, Any], width: int = 60) -> str:
    """What a task runs: its deferred call in short (``pkg.fn(42, urgent=True)``), else method and URL."""
    if task.get("callable"):
        text = f"{task['callable']}({task.get('argsSummary', '')})"
    else:
        text = f"{task['method']} {task['url']}"
    return text if len(text) <= width else text[: width - 1] + "…"


def state_label(task: dict[str, Any]) -> str:
    """WAITING, DUE (waiting and its ETA has come), IN FLIGHT or FAILED."""
    if task["due"]:
        return "DUE"
    return "IN FLIGHT" if task["state"] == "RUNNING" else str(task["state"])


def with_emulator(func: F) -> F:
    """Add ``--emulator URL``."""
    return click.option("--emulator", "emulator", metavar="URL", default=None, help=EMULATOR_HELP)(func)


def with_queue(func: F) -> F:
    """Add ``--queue``."""
    return click.option("--queue", "-q", default=None, help=QUEUE_HELP)(func)


@click.command()
@with_emulator
def queues(emulator: str | None) -> None:
    """List queues with their state, rate and counts."""
    api = Emulator(emulator_url(emulator))
    data = api.call("GET", f"{V1}/stats")
    now = parse_time(data.get("now")) or datetime.now(timezone.utc)
    rows = []
    for q in data["queues"]:
        s, limits = q.get("stats", {}), q["rateLimits"]
        oldest = s.get("oldestEstimatedArrivalTime")
        rows.append(
            [
                q["id"],
                q["state"],
                q.get("rate") or f"{limits['maxDispatchesPerSecond']:g}/s",
                limits["maxBurstSize"],
                s.get("waiting", 0),
                s.get("due", 0),
                s.get("inFlight", 0),
                s.get("failed", 0),
                s.get("succeededLastMinute", 0),
                s.get("failedLastMinute", 0),
                relative(oldest, now) if oldest else "-",
            ]
        )
    headers = ["QUEUE", "STATE", "RATE", "BUCKET", "WAITING", "DUE", "IN FLIGHT", "FAILED", "OK/MIN", "ERR/MIN"]
    click.echo(table([*headers, "OLDEST ETA"], rows, right=range(2, 11)))


@click.command()
@click.argument("queue")
@click.option("--state", default="all", type=click.Choice(["all", "waiting", "running", "failed"]), show_default=True)
@click.option("--newest", is_flag=True, help="Latest ETA first (default: soonest first).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--name", "name_prefix", default="", metavar="PREFIX", help="Only tasks whose name starts with PREFIX.")
@click.option(
    "--callable", "callable_", default="", metavar="TEXT", help="Only deferred calls whose callable contains TEXT."
)
@with_emulator
def tasks(
    queue: str, state: str, newest: bool, limit: int, name_prefix: str, callable_: str, emulator: str | None
) -> None:
    """List a queue's tasks: what each runs, its state and ETA."""
    api = Emulator(emulator_url(emulator))
    params: dict[str, Any] = {"state": state, "order": "newest" if newest else "soonest", "pageSize": limit}
    terms = [f"{key}:{shlex.quote(value)}" for key, value in (("name", name_prefix), ("callable", callable_)) if value]
    if terms:
        params["filter"] = " ".join(terms)
    data = api.queue_call(queue, "GET", f"{V1}/queues/{_segment(queue)}/tasks?{urllib.parse.urlencode(params)}")
    now = parse_time(data.get("now")) or datetime.now(timezone.utc)
    rows = []
    for t in data["tasks"]:
        last = t.get("lastAttempt") or {}
        eta = "-" if t["state"] == "FAILED" else relative(t["scheduleTime"], now)
        rows.append([t["name"], state_label(t), eta, t["retryCount"], last.get("status", "-"), t["size"], runs_text(t)])
    if not rows:
        which = "" if state == "all" else state + " "
        matching = f" matching {params['filter']}" if terms else ""
        more = " (more may follow: the search stopped early; use --limit)" if data.get("nextPageToken") else ""
        click.echo(f"no {which}tasks in queue {queue}{matching}{more}")
        return
    click.echo(table(["TASK", "STATE", "ETA", "RETRIES", "LAST", "BYTES", "RUNS"], rows, right=(3, 4, 5)))
    if data.get("nextPageToken"):
        click.echo(f"(first {limit} shown; use --limit for more)")


@click.command()
@click.argument("name")
@with_queue
@with_emulator
def task(name: str, queue: str | None, emulator: str | None) -> None:
    """Show a task: schedule, headers, payload and every attempt."""
    api = Emulator(emulator_url(emulator))
    t = api.find_task(name, queue)
    scoped = f"{V1}/queues/{_segment(t['queue'])}/tasks/{_segment(name)}"
    payload = api.call("GET", scoped + "/payload")
    attempts = api.call("GET", scoped + "/attempts")["attempts"]
    resource = t["resource"]
    request = resource.get("appEngineHttpRequest") or resource.get("httpRequest") or {}
    fields = [
        ("task", t["name"]),
        ("queue", t["queue"]),
        ("state", state_label(t)),
        ("eta", local_time(t["scheduleTime"])),
        ("created", local_time(t["createTime"])),
        ("request", f"{t['method']} {t['url']}"),
        ("retries", t["retryCount"]),
        ("payload", describe_payload(payload)),
    ]
    click.echo("\n".join(f"{key:<9} {value}" for key, value in fields))
    click.echo("headers")
    for key, value in request.get("headers", {}).items():
        click.echo(f"  {key}: {value}")
    if not attempts:
        click.echo("attempts  none recorded")
        return
    click.echo("attempts")
    rows = [
        [a["number"], local_time(a["dispatchTime"]), a["status"] or "-", f"{a['latencyMs']:.1f}", a["retryReason"]]
        + [first_line(a.get("response", a["responseExcerpt"]))[:60]]
        for a in attempts
    ]
    text = table(["#", "DISPATCHED", "STATUS", "MS", "REASON", "RESPONSE"], rows, right=(0, 2, 3))
    click.echo("\n".join("  " + line for line in text.splitlines()))
    answer = attempts[-1].get("response", "")
    if answer.strip() and answer.strip() != first_line(answer):
        # A traceback, or any answer of several lines, is printed whole: its first line rarely says what broke.
        cut = " (the first 64 KiB)" if attempts[-1].get("responseTruncated") else ""
        click.echo(f"last answer{cut}")
        click.echo("\n".join("  " + line for line in answer.rstrip("\n").splitlines()))


def first_line(text: str) -> str:
    """The first line of an answer that is not blank."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def describe_payload(payload: dict[str, Any]) -> str:
    """One line for a payload description."""
    size = f"{payload['size']} bytes"
    if payload.get("call"):
        entity = payload.get("entity") or {}
        inner = f" -> {entity['call']}" if entity.get("call") else ""
        return f"{payload['call']}{inner}  ({size}, deferred)"
    if payload.get("excerpt") is not None:
        more = "…" if payload.get("truncated") else ""
        return f"{payload['excerpt'][:100]}{more}  ({size}, {payload['format']})"
    return f"{payload.get('value', '')}  ({size}, {payload['format']})".strip()


@click.command()
@click.argument("name")
@with_queue
@with_emulator
def run(name: str, queue: str | None, emulator: str | None) -> None:
    """Deliver a task now, whatever its ETA."""
    api = Emulator(emulator_url(emulator))
    t = api.find_task(name, queue)
    api.call("POST", f"/v2/{t['resource']['name']}:run")
    click.echo(f"running task {name} of queue {t['queue']}")


@click.command()
@click.argument("name")
@with_queue
@with_emulator
def delete(name: str, queue: str | None, emulator: str | None) -> None:
    """Delete a task."""
    api = Emulator(emulator_url(emulator))
    t = api.find_task(name, queue)
    api.call("DELETE", f"/v2/{t['resource']['name']}")
    click.echo(f"deleted task {name} of queue {t['queue']}")


def _queue_action(action: str, done: str) -> click.Command:
    @click.argument("queue")
    @with_emulator
    def command(queue: str, emulator: str | None) -> None:
        api = Emulator(emulator_url(emulator))
        answer = api.call("POST", f"/v2/{api.queue_name(queue)}:{action}")
        rate = (answer.get("rateLimits") or {}).get("maxDispatchesPerSecond")
        if action == "resume" and rate == 0:
            # Resumed, yet nothing would move: say so rather than a bare "resumed".
            click.echo(
                f"resumed queue {queue}, but its rate is 0 (rate: 0 in queue.yaml, or maxDispatchesPerSecond 0):"
                " nothing will be delivered until the rate is raised"
            )
            return
        click.echo(f"{done} queue {queue}")

    helps = {
        "pause": "Pause a queue: it keeps and accepts tasks but delivers none.",
        "resume": "Resume a paused queue.",
        "purge": "Delete every task of a queue.",
    }
    command.__doc__ = helps[action]
    return click.command(action)(command)


@click.command("retry-failed")
@click.argument("queue")
@click.option("--task", "names", multiple=True, help="Retry only this failed task (repeatable).")
@with_emulator
def retry_failed(queue: str, names: tuple[str, ...], emulator: str | None) -> None:
    """Put a queue's failed tasks back in line, due now."""
    api = Emulator(emulator_url(emulator))
    body = {"tasks": list(names)} if names else {}
    try:
        count = api.call("POST", f"{V1}/queues/{_segment(queue)}/failed:retry", body)["retried"]
    except Missing:
        api.queue_name(queue)  # a missing queue says so
        shown = ", ".join(repr(n) for n in names)
        raise Missing(f"no failed task named {shown} in queue {queue!r}") from None
    click.echo(f"retrying {count} failed task{'' if count == 1 else 's'} of queue {queue}")


#: What ``cli.py`` adds to its group.
COMMANDS = [
    queues,
    tasks,
    task,
    run,
    delete,
    _queue_action("purge", "purged"),
    _queue_action("pause", "paused"),
    _queue_action("resume", "resumed"),
    retry_failed,
]
