"""queue.yaml: read with PyYAML and checked against App Engine's own rules.

Every problem becomes one ``QueueYamlError`` line that names the file, the queue and the field,
so ``serve`` can print it and stop, and a reload can log it and keep the previous settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .models import (
    DEFAULT_BUCKET_SIZE,
    DEFAULT_MAX_BACKOFF_S,
    DEFAULT_MAX_DOUBLINGS,
    DEFAULT_MIN_BACKOFF_S,
    QueueConfig,
    QueueState,
    RetryConfig,
)
from .rates import RATE_RE

#: Production's caps (Cloud Tasks RateLimits, which queue.yaml queues are shown as).
MAX_RATE_PER_S = 500.0
MAX_BUCKET_SIZE = 500
MAX_CONCURRENT_REQUESTS = 5000
#: App Engine allows at most this many queues per app.
MAX_QUEUES = 100
#: Backoffs at most 30 days (the furthest ahead a task may be scheduled); counts fit an int32, as in the API.
MAX_BACKOFF_S = 30 * 24 * 3600
MAX_INT32 = 2**31 - 1
#: protobuf's Duration range (about 10000 years).
MAX_DURATION_S = 315_576_000_000

# The SDK's queue.yaml parser is looser (0 to 499 characters), but a queue a client cannot name
# (``Queue(name)`` checks 1 to 100) is useless, so the client's rule is the one applied here.
QUEUE_NAME_RE = re.compile(r"^[A-Za-z0-9-]{1,100}$")
AGE_RE = re.compile(r"^([0-9]+(?:\.[0-9]*)?)([smhd])$")
STORAGE_RE = re.compile(r"^([0-9]+(?:\.[0-9]*)?)([BKMGT]?)$")
TARGET_RE = re.compile(r"^(?:(?!-)[a-z\d\-]{1,100}\.)?(?!-)[a-z\d\-]{1,63}$")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
BYTE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}

TOP_FIELDS = ("queue", "total_storage_limit", "application", "resume_paused_queues")
QUEUE_FIELDS = ("name", "rate", "bucket_size", "max_concurrent_requests", "mode", "target", "retry_parameters", "acl")
RETRY_FIELDS = ("task_retry_limit", "task_age_limit", "min_backoff_seconds", "max_backoff_seconds", "max_doublings")
#: What a pull queue may set: App Engine leases pull tasks, it never dispatches them.
PULL_FIELDS = ("name", "mode", "retry_parameters", "acl")


class QueueYamlError(ValueError):
    """Raised when queue.yaml cannot be read or breaks a rule; the message is one line."""

    def __init__(self, path: str, message: str, queue: str | None = None, field: str | None = None) -> None:
        where = [path]
        if queue is not None:
            where.append(f"queue {queue}")
        if field is not None:
            where.append(field)
        text = ": ".join([*where, message])
        super().__init__(" ".join(text.split()))
        self.path, self.queue, self.field = path, queue, field


@dataclass(frozen=True)
class QueueFile:
    """The queues a queue.yaml defines, plus its file-wide settings."""

    queues: tuple[QueueConfig, ...]
    #: bytes all tasks together may hold (``total_storage_limit``); None for no limit.
    total_storage_limit: int | None = None
    #: ``resume_paused_queues: true``: queues paused through the API resume on load.
    resume_paused_queues: bool = False

    def names(self) -> set[str]:
        """The queue ids the file lists."""
        return {queue.name for queue in self.queues}


def load_queue_yaml(path: str | Path) -> QueueFile:
    """Read and check a queue.yaml file."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise QueueYamlError(where, "no such file") from None
    except UnicodeDecodeError as exc:
        raise QueueYamlError(where, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise QueueYamlError(where, f"cannot read the file ({exc.strerror or exc})") from None
    return parse_queue_yaml(text, where)


def parse_queue_yaml(text: str, path: str = "queue.yaml") -> QueueFile:
    """Check queue.yaml text; ``path`` is only used in error messages."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise QueueYamlError(path, f"{line}not valid YAML ({problem})") from None
    if data is None:
        raise QueueYamlError(path, "empty queue configuration (expected a 'queue:' list)")
    if not isinstance(data, dict):
        raise QueueYamlError(path, "expected a mapping with a 'queue:' list at the top level")
    _unknown(path, data, TOP_FIELDS, None)
    entries = data.get("queue")
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise QueueYamlError(path, "expected a list of queues", field="queue")
    if len(entries) > MAX_QUEUES:
        raise QueueYamlError(path, f"{len(entries)} queues; App Engine allows at most {MAX_QUEUES}", field="queue")
    queues: list[QueueConfig] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries, start=1):
        queue = _queue(path, entry, index)
        if queue.name in seen:
            raise QueueYamlError(path, "defined twice", queue=queue.name, field="name")
        seen.add(queue.name)
        queues.append(queue)
    resume = data.get("resume_paused_queues", False)
    if not isinstance(resume, bool):
        raise QueueYamlError(path, f"expected true or false, got {resume!r}", field="resume_paused_queues")
    return QueueFile(tuple(queues), _storage_limit(path, data.get("total_storage_limit")), resume)


def _unknown(path: str, data: dict[Any, Any], allowed: tuple[str, ...], queue: str | None, prefix: str = "") -> None:
    for key in data:
        if key not in allowed:
            raise QueueYamlError(
                path, f"unknown field (expected one of: {', '.join(allowed)})", queue=queue, field=f"{prefix}{key}"
            )


def _queue(path: str, entry: object, index: int) -> QueueConfig:
    """One ``queue:`` entry as a QueueConfig."""
    if not isinstance(entry, dict):
        raise QueueYamlError(path, f"entry {index} is not a mapping (expected '- name: ...')", field="queue")
    name = entry.get("name")
    if name is None:
        raise QueueYamlError(path, "required", queue=f"#{index}", field="name")
    if not isinstance(name, str) or not QUEUE_NAME_RE.match(name):
        raise QueueYamlError(
            path,
            f"{name!r} must be 1 to 100 letters, digits or hyphens ([A-Za-z0-9-])",
            queue=f"#{index}",
            field="name",
        )
    _unknown(path, entry, QUEUE_FIELDS, name)
    mode = entry.get("mode", "push")
    if mode not in ("push", "pull"):
        raise QueueYamlError(path, f"{mode!r} must be push or pull", queue=name, field="mode")
    if mode == "pull":
        return _pull_queue(path, name, entry)
    if "rate" not in entry:
        raise QueueYamlError(path, "required for push queues (for example 5/s; 0 pauses the queue)", name, "rate")
    rate = parse_rate(path, name, entry["rate"])
    bucket = _int(path, name, "bucket_size", entry.get("bucket_size", DEFAULT_BUCKET_SIZE), 1, MAX_BUCKET_SIZE)
    concurrent = None
    if entry.get("max_concurrent_requests") is not None:
        concurrent = _int(
            path, name, "max_concurrent_requests", entry["max_concurrent_requests"], 1, MAX_CONCURRENT_REQUESTS
        )
    target = entry.get("target")
    if target is not None and (not isinstance(target, str) or not TARGET_RE.match(target)):
        raise QueueYamlError(
            path, f"{target!r} must be a service, or version.service (lower case letters, digits, -)", name, "target"
        )
    return QueueConfig(
        name,
        state=QueueState.PAUSED if rate == 0 else QueueState.RUNNING,
        rate_per_s=rate,
        rate_text=str(entry["rate"]).strip(),
        bucket_size=bucket,
        max_concurrent=concurrent,
        target=target,
        retry=parse_retry(path, name, entry.get("retry_parameters")),
        mode="push",
        source="yaml",
    )


def _pull_queue(path: str, name: str, entry: dict[Any, Any]) -> QueueConfig:
    for key in entry:
        if key not in PULL_FIELDS:
            raise QueueYamlError(path, "not allowed on a pull queue (mode: pull)", name, str(key))
    retry = entry.get("retry_parameters")
    if isinstance(retry, dict):
        for key in retry:
            if key != "task_retry_limit":
                raise QueueYamlError(
                    path, "not allowed on a pull queue (only task_retry_limit is)", name, f"retry_parameters.{key}"
                )
    return QueueConfig(name, rate_per_s=0.0, retry=parse_retry(path, name, retry), mode="pull", source="yaml")


def parse_rate(path: str, queue: str, value: object) -> float:
    """``N/s``, ``N/m``, ``N/h``, ``N/d`` or ``0`` as tasks per second."""
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    match = RATE_RE.match(text) if text is not None else None
    if match is None:
        raise QueueYamlError(
            path, f"{value!r} must be a number per s, m, h or d (like 5/s or 20/m), or 0", queue, "rate"
        )
    if match.group(1) is None:
        return 0.0
    rate = float(match.group(1)) / UNIT_S[match.group(2)]
    if rate > MAX_RATE_PER_S:
        raise QueueYamlError(path, f"{value} is over App Engine's maximum of {MAX_RATE_PER_S:g}/s", queue, "rate")
    return rate


def parse_age(path: str, queue: str, value: object) -> int:
    """A ``task_age_limit`` such as ``90s``, ``15m``, ``2h`` or ``7d``, in whole seconds (must be > 0)."""
    field = "retry_parameters.task_age_limit"
    match = AGE_RE.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise QueueYamlError(path, f"{value!r} must be a number followed by s, m, h or d (like 2d)", queue, field)
    # App Engine truncates to whole seconds, so "0.5s" is zero and refused like "0s".
    exact = float(match.group(1)) * UNIT_S[match.group(2)]
    if not exact <= MAX_DURATION_S:  # also inf from a number too long for a float
        raise QueueYamlError(path, f"{value!r} is out of range (at most 10000 years)", queue, field)
    seconds = int(exact)
    if seconds <= 0:
        raise QueueYamlError(path, f"{value!r} must be at least one second", queue, field)
    return seconds


def parse_retry(path: str, queue: str, data: object) -> RetryConfig:
    """``retry_parameters`` with App Engine's fix-ups for a lone min or max backoff."""
    if data is None:
        return RetryConfig()
    if not isinstance(data, dict):
        raise QueueYamlError(path, "expected a mapping", queue, "retry_parameters")
    _unknown(path, data, RETRY_FIELDS, queue, "retry_parameters.")
    limit = age = None
    if data.get("task_retry_limit") is not None:
        limit = _int(path, queue, "retry_parameters.task_retry_limit", data["task_retry_limit"], 0, MAX_INT32)
    if data.get("task_age_limit") is not None:
        age = float(parse_age(path, queue, data["task_age_limit"]))
    min_b = _seconds(path, queue, "min_backoff_seconds", data.get("min_backoff_seconds"))
    max_b = _seconds(path, queue, "max_backoff_seconds", data.get("max_backoff_seconds"))
    doublings = DEFAULT_MAX_DOUBLINGS
    if data.get("max_doublings") is not None:
        doublings = _int(path, queue, "retry_parameters.max_doublings", data["max_doublings"], 0, MAX_INT32)
    # TranslateRetryParameters: a lone bound that crosses the other's default drags it along.
    if min_b is not None and max_b is None:
        max_b = max(min_b, DEFAULT_MAX_BACKOFF_S)
    elif max_b is not None and min_b is None:
        min_b = min(max_b, DEFAULT_MIN_BACKOFF_S)
    min_b = DEFAULT_MIN_BACKOFF_S if min_b is None else min_b
    max_b = DEFAULT_MAX_BACKOFF_S if max_b is None else max_b
    if min_b > max_b:
        raise QueueYamlError(
            path,
            f"{min_b:g} is greater than max_backoff_seconds ({max_b:g})",
            queue,
            "retry_parameters.min_backoff_seconds",
        )
    return RetryConfig(limit, age, min_b, max_b, doublings)


def _seconds(path: str, queue: str, field: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise QueueYamlError(path, f"{value!r} must be a number of seconds", queue, f"retry_parameters.{field}")
    if value < 0:
        raise QueueYamlError(path, f"{value!r} must not be negative", queue, f"retry_parameters.{field}")
    if not value <= MAX_BACKOFF_S:  # also NaN and inf, which YAML's .nan and .inf give
        raise QueueYamlError(
            path, f"{value!r} must be at most {MAX_BACKOFF_S} (30 days)", queue, f"retry_parameters.{field}"
        )
    return float(value)


def _int(path: str, queue: str, field: str, value: object, low: int, high: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise QueueYamlError(path, f"{value!r} must be a whole number", queue, field)
    if value < low or (high is not None and value > high):
        if high is not None and high < MAX_INT32:
            bounds = f"between {low} and {high}"
        else:
            bounds = f"at least {low}" if value < low else f"at most {high}"
        raise QueueYamlError(path, f"{value} must be {bounds}", queue, field)
    return value


def _storage_limit(path: str, value: object) -> int | None:
    """``total_storage_limit`` such as ``120M`` in bytes (suffixes B, K, M, G, T are powers of 1024)."""
    if value is None:
        return None
    text = str(value).strip() if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""
    match = STORAGE_RE.match(text)
    if match is None:
        raise QueueYamlError(
            path,
            f"{value!r} must be a number of bytes with an optional B, K, M, G or T suffix",
            field="total_storage_limit",
        )
    size = float(match.group(1)) * BYTE_UNITS[match.group(2)]
    if not size < 2**63:  # past SQLite's integers (or a float's range)
        raise QueueYamlError(path, f"{value!r} is too large", field="total_storage_limit")
    return int(size)
