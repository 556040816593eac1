"""Cloud Tasks v2 Queue JSON and its validation rules (texts as production answers)."""

from __future__ import annotations

import math
from typing import Any

from ..errors import InvalidArgument
from ..models import (
    DEFAULT_MAX_BACKOFF_S,
    DEFAULT_MAX_DOUBLINGS,
    DEFAULT_MIN_BACKOFF_S,
    QueueConfig,
    QueueState,
    RetryConfig,
)
from .httptarget_json import http_target_from_json, http_target_to_json
from .timefmt import format_duration, format_ts, parse_duration

STATES = ["STATE_UNSPECIFIED", "RUNNING", "PAUSED", "DISABLED"]
MAX_RATE = 500.0
MAX_CONCURRENT = 5000
#: Backoffs: at most the furthest ahead a task may be scheduled (720h). Production documents no bound;
#: a longer wait could only push a retry past what a task may be scheduled for.
MAX_BACKOFF_S = 720 * 3600
#: maxAttempts and maxDoublings are int32 in the API.
MAX_INT32 = 2**31 - 1


def _number(value: object, field: str) -> float:
    try:
        number = float(str(value)) if isinstance(value, bool) or not isinstance(value, (int, float)) else float(value)
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument(f"Invalid value for {field}: {value!r} is not a number.") from exc
    if not math.isfinite(number):
        raise InvalidArgument(f"Invalid value for {field}: {value!r} is not a finite number.")
    return number


def retry_from_json(data: dict[str, Any], where: str = "RetryConfig") -> RetryConfig:
    """App Engine retry parameters from a Cloud Tasks RetryConfig (absent fields keep the defaults)."""
    limit: int | None = None
    if data.get("maxAttempts") not in (None, ""):
        attempts = int(_number(data["maxAttempts"], f"{where}.maxAttempts"))
        if attempts < -1:
            raise InvalidArgument("RetryConfig.maxAttempts must be greater or equal to -1.")
        if attempts > MAX_INT32:
            raise InvalidArgument(f"RetryConfig.maxAttempts must be less than or equal to {MAX_INT32}.")
        # maxAttempts counts the first attempt; -1 (and 0, "unset") mean no limit.
        limit = attempts - 1 if attempts > 0 else None
    age: float | None = None
    if data.get("maxRetryDuration") not in (None, ""):
        age = parse_duration(data["maxRetryDuration"], f"{where}.maxRetryDuration")
        if age < 0:
            raise InvalidArgument("RetryConfig.maxRetryDuration cannot be negative.")
        age = age or None
    min_b = _backoff(data, "minBackoff", where, DEFAULT_MIN_BACKOFF_S)
    max_b = _backoff(data, "maxBackoff", where, DEFAULT_MAX_BACKOFF_S)
    if min_b > max_b:
        raise InvalidArgument("RetryConfig.minBackoff must be less than or equal to RetryConfig.maxBackoff.")
    doublings = DEFAULT_MAX_DOUBLINGS
    if data.get("maxDoublings") not in (None, ""):
        doublings = int(_number(data["maxDoublings"], f"{where}.maxDoublings"))
        if doublings < 0:
            raise InvalidArgument("RetryConfig.maxDoublings cannot be negative.")
        if doublings > MAX_INT32:
            raise InvalidArgument(f"RetryConfig.maxDoublings must be less than or equal to {MAX_INT32}.")
    return RetryConfig(limit, age, min_b, max_b, doublings)


def _backoff(data: dict[str, Any], key: str, where: str, default: float) -> float:
    if data.get(key) in (None, ""):
        return default
    seconds = parse_duration(data[key], f"{where}.{key}")
    if seconds < 0:
        raise InvalidArgument(f"RetryConfig.{key} cannot be negative.")
    if seconds > MAX_BACKOFF_S:
        raise InvalidArgument(f"RetryConfig.{key} must be less than or equal to 720h ({MAX_BACKOFF_S}s).")
    return seconds


def retry_to_json(retry: RetryConfig) -> dict[str, Any]:
    """A Cloud Tasks RetryConfig (maxAttempts -1 means unlimited)."""
    return {
        "maxAttempts": -1 if retry.retry_limit is None else retry.retry_limit + 1,
        "maxRetryDuration": format_duration(retry.age_limit_s or 0),
        "minBackoff": format_duration(retry.min_backoff_s),
        "maxBackoff": format_duration(retry.max_backoff_s),
        "maxDoublings": retry.max_doublings,
    }


def rate_limits_from_json(data: dict[str, Any], base: QueueConfig) -> dict[str, Any]:
    """Rate settings from a Cloud Tasks RateLimits, validated as production does."""
    changes: dict[str, Any] = {}
    if data.get("maxDispatchesPerSecond") is not None:
        rate = _number(data["maxDispatchesPerSecond"], "RateLimits.maxDispatchesPerSecond")
        if rate < 0:
            raise InvalidArgument("RateLimits.maxDispatchesPerSecond cannot be negative.")
        if rate > MAX_RATE:
            raise InvalidArgument("RateLimits.maxDispatchesPerSecond must be less than or equal to 500.")
        changes["rate_per_s"] = rate
    if data.get("maxConcurrentDispatches") is not None:
        conc = int(_number(data["maxConcurrentDispatches"], "RateLimits.maxConcurrentDispatches"))
        if conc < 0:
            raise InvalidArgument("RateLimits.maxConcurrentDispatches cannot be negative.")
        if conc > MAX_CONCURRENT:
            raise InvalidArgument("RateLimits.maxConcurrentDispatches must be less than or equal to 5000.")
        changes["max_concurrent"] = conc or None
    # maxBurstSize is output only: production ignores it (even -1), and so does the emulator. A queue's
    # bucket comes from queue.yaml's bucket_size, as in production.
    return changes


def queue_changes(data: dict[str, Any], base: QueueConfig, mask: list[str] | None = None) -> dict[str, Any]:
    """The QueueConfig fields a Queue JSON sets (only those under ``mask`` when one is given)."""

    def wanted(field: str) -> bool:
        return mask is None or any(m == field or m.startswith(field + ".") for m in mask)

    changes: dict[str, Any] = {}
    if wanted("rateLimits") and isinstance(data.get("rateLimits"), dict):
        changes.update(rate_limits_from_json(data["rateLimits"], base))
    if wanted("retryConfig") and isinstance(data.get("retryConfig"), dict):
        merged = retry_to_json(base.retry) | data["retryConfig"] if mask is not None else data["retryConfig"]
        changes["retry"] = retry_from_json(merged)
    if wanted("state") and data.get("state") not in (None, "", 0, "STATE_UNSPECIFIED"):
        value = data["state"]
        name = STATES[value] if isinstance(value, int) and 0 <= value < len(STATES) else str(value).upper()
        if name not in STATES:
            raise InvalidArgument(f"Invalid value for Queue.state: {value!r}.")
        changes["state"] = QueueState(name)
    # Without a mask, a field the request leaves out is kept.
    if wanted("appEngineRoutingOverride") and (mask is not None or "appEngineRoutingOverride" in data):
        changes.update(_routing(data, base, mask))
    if wanted("httpTarget") and (mask is not None or "httpTarget" in data):
        changes["http_target"] = http_target_from_json(_masked(data, base, mask, "httpTarget"))
    return changes


def _routing(data: dict[str, Any], base: QueueConfig, mask: list[str] | None) -> dict[str, Any]:
    """appEngineRoutingOverride's service, version and instance (host is output only)."""
    routing = _masked(data, base, mask, "appEngineRoutingOverride")
    if routing is not None and not isinstance(routing, dict):
        raise InvalidArgument("Invalid value for Queue.appEngineRoutingOverride: expected an object.")
    routing = routing or {}
    return {
        "target": str(routing.get("service") or "") or None,
        "routing_version": str(routing.get("version") or ""),
        "routing_instance": str(routing.get("instance") or ""),
    }


def _masked(data: dict[str, Any], base: QueueConfig, mask: list[str] | None, field: str) -> Any:
    """The new value of ``field``: the request's, or with a mask naming subfields (``field.a.b``), the
    queue's current value with only those subfields taken from the request."""
    subpaths = [m.removeprefix(field + ".") for m in mask or () if m.startswith(field + ".")]
    if not subpaths or field in (mask or ()):
        return data.get(field)
    current = queue_to_json(base, "")
    merged: dict[str, Any] = current.get(field) or {}
    given = data.get(field) if isinstance(data.get(field), dict) else {}
    for path in subpaths:
        *parents, leaf = path.split(".")
        source: Any = given
        target = merged
        for part in parents:
            source = source.get(part) if isinstance(source, dict) else None
            target = target.setdefault(part, {}) if isinstance(target.get(part, {}), dict) else {}
        if isinstance(source, dict) and leaf in source:
            target[leaf] = source[leaf]
        else:
            target.pop(leaf, None)
    return merged


def queue_to_json(queue: QueueConfig, parent: str, stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Cloud Tasks JSON of a queue."""
    out: dict[str, Any] = {"name": f"{parent}/queues/{queue.name}"}
    routing = {
        k: v
        for k, v in (
            ("service", queue.target),
            ("version", queue.routing_version),
            ("instance", queue.routing_instance),
        )
        if v
    }
    if routing:
        out["appEngineRoutingOverride"] = routing
    if queue.http_target is not None:
        out["httpTarget"] = http_target_to_json(queue.http_target)
    out["rateLimits"] = {
        "maxDispatchesPerSecond": queue.rate_per_s,
        "maxBurstSize": queue.bucket_size,
        "maxConcurrentDispatches": queue.max_concurrent or MAX_CONCURRENT,
    }
    out["retryConfig"] = retry_to_json(queue.retry)
    out["state"] = queue.state.value
    if queue.purge_us:
        out["purgeTime"] = format_ts(queue.purge_us)
    if queue.mode != "push":
        out["mode"] = queue.mode.upper()
    if stats is not None:
        out["stats"] = stats
    return out
