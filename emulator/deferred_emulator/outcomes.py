"""What an attempt's outcome does to its task (``settle``), and the summary ``drain`` answers with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .backoff import backoff_s, can_retry
from .clock import US
from .delivery import Outcome
from .models import Attempt, TargetKind, Task

#: How much of the last answer a task row keeps (its attempt keeps all of it, up to 64 KiB).
LAST_EXCERPT_CHARS = 1024


def settle(task: Task, outcome: Outcome, retry_default: Any, now: int) -> tuple[Task, Attempt, str, int]:
    """The task after an attempt, the attempt's record, and what happens next ("done", "retry", "failed").

    The last element is the next ETA for "retry"; the caller fills in tombstone times otherwise.
    """
    got_response = outcome.status > 0
    app_engine = task.kind is TargetKind.APP_ENGINE
    executed = got_response and (app_engine or outcome.status < 500)
    if got_response:
        previous, reason = outcome.status, ("App Error" if app_engine else "")
    elif app_engine:
        previous, reason = 0, "Instance Unavailable"
    else:
        previous, reason = (504 if outcome.timed_out else 0), ""
    attempt = Attempt(
        task_id=task.id,
        number=task.dispatch_count + 1,
        schedule_us=task.last_schedule_us or task.eta_us,
        dispatch_us=outcome.dispatch_us,
        response_us=outcome.response_us,
        status=outcome.status,
        reason="" if outcome.ok else (reason or "App Error"),
        excerpt=outcome.excerpt,
    )
    first = task.first_attempt_us if task.first_attempt_us is not None else outcome.dispatch_us
    updated = task.evolve(
        dispatch_count=task.dispatch_count + 1,
        response_count=task.response_count + (1 if got_response else 0),
        first_attempt_us=first,
        last_dispatch_us=outcome.dispatch_us,
        last_response_us=outcome.response_us,
        last_status=outcome.status,
        # The attempt keeps the whole answer; the task row, read by every list, its start.
        last_excerpt=outcome.excerpt[:LAST_EXCERPT_CHARS],
    )
    if outcome.ok:
        return updated, attempt, "done", 0
    updated = updated.evolve(
        retry_count=task.retry_count + 1,
        execution_count=task.execution_count + (1 if executed else 0),
        previous_response=previous,
        retry_reason=reason,
    )
    retry = task.retry or retry_default
    n = updated.retry_count
    if can_retry(retry, n, (now - first) / US):
        return updated, attempt, "retry", now + int(backoff_s(retry, n) * US)
    return updated, attempt, "failed", 0


def drain_report(seen: Sequence[tuple[Task, Outcome, str]], timed_out: bool) -> dict[str, Any]:
    """The summary ``drain`` answers with."""
    failures = [
        {
            "queue": task.queue,
            "task": task.name,
            "status": outcome.status,
            "response": outcome.excerpt[:500],
            "willRetry": verdict == "retry",
        }
        for task, outcome, verdict in seen
        if not outcome.ok
    ]
    return {
        "dispatched": len(seen),
        "succeeded": sum(1 for _, outcome, _ in seen if outcome.ok),
        "retried": sum(1 for *_, verdict in seen if verdict == "retry"),
        "failed": sum(1 for *_, verdict in seen if verdict == "failed"),
        "failures": failures,
        "timedOut": timed_out,
    }
