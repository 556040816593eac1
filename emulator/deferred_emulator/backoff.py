"""App Engine's retry decision and backoff, as pure functions."""

from __future__ import annotations

import math

from .models import RetryConfig

#: The longest wait between attempts: 30 days, the furthest ahead production lets a task be scheduled.
#: The API refuses longer backoffs; this also bounds one read from an older database.
MAX_BACKOFF_S = 30 * 24 * 3600.0


def backoff_s(retry: RetryConfig, n: int) -> float:
    """Seconds to wait after the n-th failure (n >= 1): doubling, then linear, then capped."""
    n = max(1, n)
    doublings = min(n - 1, retry.max_doublings)
    try:
        delay = math.ldexp(retry.min_backoff_s, doublings) * (n - doublings)
    except OverflowError:  # past any float: the cap applies
        delay = math.inf
    wait = min(retry.max_backoff_s, delay, MAX_BACKOFF_S)
    # NaN (from a hand-edited database) compares false with everything: waits of its own are clamped too.
    if wait != wait:
        return MAX_BACKOFF_S
    return float(max(0.0, wait))


def can_retry(retry: RetryConfig, n: int, age_s: float) -> bool:
    """Whether the n-th retry may happen, ``age_s`` after the first attempt.

    With both limits set, App Engine gives up only when both are exceeded.
    """
    has_limit = retry.retry_limit is not None
    has_age = retry.age_limit_s is not None
    within_limit = has_limit and retry.retry_limit is not None and retry.retry_limit >= n
    within_age = has_age and retry.age_limit_s is not None and retry.age_limit_s >= age_s
    if has_limit and has_age:
        return within_limit or within_age
    if has_limit:
        return within_limit
    if has_age:
        return within_age
    return True
