"""``deferred-emulator tail``: attempts as they happen, one line each, until Ctrl-C."""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

import click

from .cli_inspect import (
    V1,
    Emulator,
    Missing,
    Unreachable,
    emulator_url,
    no_queue,
    parse_time,
    runs_text,
    with_emulator,
)

#: How long one request waits on the emulator for the next attempt (its answer comes sooner when one happens).
WAIT_S = 10
#: Shortest time between two requests: a busy emulator answers every request at once, so this caps them at 4/s.
MIN_INTERVAL_S = 0.25
#: How often an emulator that went away is looked for again.
RETRY_S = 1.0
OUTCOME_TEXT = {"succeeded": "ok", "retry": "will retry", "failed": "gave up"}


def attempt_line(a: dict[str, Any]) -> str:
    """One attempt: time, queue, task, what it runs, status, latency, and the retry reason with what follows."""
    when = parse_time(a["dispatchTime"])
    clock = "-"
    if when is not None:
        local = when.astimezone()
        clock = local.strftime("%H:%M:%S.%f")[:-3] + " " + (local.tzname() or local.strftime("%z"))
    status = str(a["status"]) if a["status"] else "none"
    outcome = OUTCOME_TEXT.get(a["outcome"], a["outcome"])
    reason = f"{a['retryReason']}, {outcome}" if a["retryReason"] else outcome
    parts = [
        clock,
        a["queue"],
        f"{a['task']}#{a['number']}",
        runs_text(a, 48),
        status,
        f"{a['latencyMs']:.1f}ms",
        reason,
    ]
    return "  ".join(parts)


def follow(api: Emulator, queue: str | None, last: int) -> None:
    """Print the last ``last`` attempts, then every new one as it comes, until interrupted."""
    scope = {"queue": queue} if queue else {}
    try:
        data = api.call("GET", f"{V1}/attempts?" + urllib.parse.urlencode({**scope, "last": last}))
    except Missing:
        raise no_queue(str(queue)) from None
    for attempt in data["attempts"]:
        click.echo(attempt_line(attempt))
    cursor = int(data["next"])
    away = False
    while True:
        started = time.monotonic()
        query = urllib.parse.urlencode({**scope, "since": cursor, "wait": WAIT_S})
        try:
            data = api.call("GET", f"{V1}/attempts?{query}")
        except Unreachable as exc:
            # The emulator is restarting (or stopped): say so once, and keep trying until it is back.
            if not away:
                click.echo(f"({exc.message}; waiting for it)")
                away = True
            time.sleep(RETRY_S)
            continue
        if away:
            click.echo("(the emulator is back; attempts made while it was away may be missing)")
            away = False
        elif int(data["next"]) < cursor:
            click.echo("(the emulator restarted: following its new attempts)")
        if data.get("missed"):
            click.echo(f"({data['missed']} attempts went by unshown: the emulator keeps only the latest)")
        for attempt in data["attempts"]:
            click.echo(attempt_line(attempt))
        cursor = int(data["next"])
        pause = MIN_INTERVAL_S - (time.monotonic() - started)
        if pause > 0:
            time.sleep(pause)


@click.command()
@click.argument("queue", required=False)
@click.option("--last", type=click.IntRange(0, 1000), default=0, show_default=True, help="Show the last N first.")
@with_emulator
@click.pass_context
def tail(ctx: click.Context, queue: str | None, last: int, emulator: str | None) -> None:
    """Print delivery attempts as they happen (all queues, or QUEUE's), one line each, until Ctrl-C."""
    api = Emulator(emulator_url(emulator))
    try:
        follow(api, queue, last)
    except KeyboardInterrupt:
        # Ctrl-C is how tail ends: no traceback, no "Aborted!", the shell's usual status for it.
        ctx.exit(130)
