"""What a deferred task is made of: its options, retry options, its JSON, and the created ``Task``."""

from __future__ import annotations

import base64
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .errors import (
    InvalidEtaError,
    InvalidQueueNameError,
    InvalidTaskError,
    InvalidTaskNameError,
    InvalidTaskRetryOptionsError,
    InvalidUrlError,
)
from .targets import Delivery

__all__ = ["DEFAULT_URL", "Task", "TaskRetryOptions", "TaskSpec"]

DEFAULT_URL = "/_ah/queue/deferred"
DEFAULT_QUEUE = "default"
MAX_ETA_S = 30 * 24 * 3600
MAX_URL_LENGTH = 2083
TASK_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,500}$")
QUEUE_NAME_RE = re.compile(r"^[a-zA-Z0-9-]{1,100}$")
METHOD = "POST"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: Tasks for App Engine targets, with the emulator's extensions allowed.
APP_ENGINE = Delivery()
_TIME_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:[Zz]|\+00:00)$")


def _seconds(value: float) -> str:
    """A protobuf JSON Duration: ``"10s"``, ``"0.1s"``."""
    if float(value).is_integer():
        return f"{int(value)}s"
    return f"{value:.9f}".rstrip("0") + "s"


@dataclass(frozen=True)
class TaskRetryOptions:
    """Per-task retry options with App Engine's names and meanings (``None``: the queue's or the default)."""

    #: shortest wait after a failure (App Engine default 0.1 s).
    min_backoff_seconds: float | None = None
    #: longest wait between attempts (default 3600 s).
    max_backoff_seconds: float | None = None
    #: how many times the wait doubles before it grows linearly (default 16).
    max_doublings: int | None = None
    #: retries allowed after the first attempt (``None``: no limit).
    task_retry_limit: int | None = None
    #: seconds since the first attempt after which the task gives up (``None``: no limit).
    task_age_limit: float | None = None

    def __post_init__(self) -> None:
        for field in ("min_backoff_seconds", "max_backoff_seconds", "max_doublings", "task_retry_limit"):
            value = getattr(self, field)
            if value is not None and value < 0:
                raise InvalidTaskRetryOptionsError(f"{field} must be non-negative, not {value!r}.")
        if self.task_age_limit is not None:
            if self.task_age_limit < 0:
                raise InvalidTaskRetryOptionsError(f"task_age_limit must be non-negative, not {self.task_age_limit!r}.")
            object.__setattr__(self, "task_age_limit", math.ceil(self.task_age_limit))
        low, high = self.min_backoff_seconds, self.max_backoff_seconds
        if low is not None and high is not None and high < low:
            raise InvalidTaskRetryOptionsError("max_backoff_seconds must be at least min_backoff_seconds.")

    def to_json(self) -> dict[str, Any]:
        """The emulator's ``retryConfig``: ``maxAttempts`` is ``task_retry_limit + 1``; unset fields are left out."""
        out: dict[str, Any] = {}
        if self.task_retry_limit is not None:
            out["maxAttempts"] = int(self.task_retry_limit) + 1
        if self.task_age_limit is not None:
            out["maxRetryDuration"] = _seconds(self.task_age_limit)
        if self.min_backoff_seconds is not None:
            out["minBackoff"] = _seconds(self.min_backoff_seconds)
        if self.max_backoff_seconds is not None:
            out["maxBackoff"] = _seconds(self.max_backoff_seconds)
        if self.max_doublings is not None:
            out["maxDoublings"] = int(self.max_doublings)
        return out


@dataclass(frozen=True)
class Task:
    """A task the emulator accepted: its short name, its queue and when it is due (aware UTC)."""

    name: str
    queue: str
    eta: datetime
    #: key of the stored payload when it was too large to travel in the task itself.
    entity_key: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any], queue: str, entity_key: str | None = None) -> Task:
        """A Task from the emulator's Task JSON."""
        name = str(data.get("name", "")).rpartition("/")[2]
        return cls(name, queue, parse_time(data.get("scheduleTime")), entity_key)


def format_time(eta_s: float) -> str:
    """Seconds since the epoch as RFC 3339 UTC with microseconds."""
    whole = math.floor(eta_s)
    micros = round((eta_s - whole) * 1_000_000)
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{micros:06d}Z"


def parse_time(text: object) -> datetime:
    """An aware UTC datetime from an RFC 3339 timestamp (now, if there is none)."""
    if not isinstance(text, str) or not text:
        return datetime.now(timezone.utc)
    match = _TIME_RE.match(text)
    if match is None:
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
        except ValueError:
            return datetime.now(timezone.utc)
    year, month, day, hour, minute, second, frac = match.groups()
    micros = int(frac[:6].ljust(6, "0")) if frac else 0
    return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micros, timezone.utc)


def _eta_seconds(countdown: float | None, eta: datetime | None, now: float) -> float | None:
    if countdown is not None and eta is not None:
        raise InvalidTaskError("Use _countdown or _eta, not both.")
    if countdown is not None:
        try:
            value = now + float(countdown)
        except (TypeError, ValueError) as exc:
            raise InvalidTaskError(f"_countdown must be a number, not {countdown!r}.") from exc
    elif eta is not None:
        if not isinstance(eta, datetime):
            raise InvalidEtaError(f"_eta must be a datetime, not {eta!r}.")
        if eta.tzinfo is None:
            eta = eta.replace(tzinfo=timezone.utc)  # naive means UTC here (App Engine read it as local time)
        value = (eta - _EPOCH).total_seconds()
    else:
        return None
    if value > now + MAX_ETA_S:
        raise InvalidEtaError("The ETA is too far in the future: it must be at most 30 days from now.")
    return value


def _check_url(url: str) -> str:
    if not isinstance(url, str) or not url.startswith("/") or url.startswith("//") or "#" in url:
        raise InvalidUrlError(f"_url must be a relative URL starting with '/', not {url!r}.")
    if len(url.partition("?")[0]) > MAX_URL_LENGTH:
        raise InvalidUrlError(f"_url is longer than {MAX_URL_LENGTH} characters.")
    return url


@dataclass(frozen=True)
class TaskSpec:
    """Everything about a task except its payload, checked as App Engine's SDK checks it."""

    queue: str
    url: str
    headers: dict[str, str]
    name: str | None = None
    eta_s: float | None = None
    target: str | None = None
    retry: TaskRetryOptions | None = None
    #: ``_countdown`` as given: sent too, so the emulator counts from its own (possibly virtual) clock.
    countdown_s: float | None = None

    @classmethod
    def build(
        cls,
        *,
        queue: str,
        url: str | None,
        headers: dict[str, str] | None,
        name: str | None,
        countdown: float | None,
        eta: datetime | None,
        target: str | None,
        retry: TaskRetryOptions | None,
        now: float,
    ) -> TaskSpec:
        """Check the options of one ``defer`` call and put them together."""
        all_headers = {"Content-Type": "application/octet-stream"}
        if headers:
            all_headers.update({str(k): str(v) for k, v in headers.items()})
        if not (isinstance(queue, str) and QUEUE_NAME_RE.match(queue)):
            raise InvalidQueueNameError(f"Queue name {queue!r} must match [a-zA-Z0-9-]{{1,100}}.")
        if name is not None and not (isinstance(name, str) and TASK_NAME_RE.match(name)):
            raise InvalidTaskNameError(f"Task name {name!r} must match [a-zA-Z0-9_-]{{1,500}}.")
        if retry is not None and not isinstance(retry, TaskRetryOptions):
            raise InvalidTaskRetryOptionsError(f"_retry_options must be a TaskRetryOptions, not {retry!r}.")
        return cls(
            queue=queue,
            url=_check_url(f"/_ah/queue/{queue}" if url is None else url),
            headers=all_headers,
            name=name,
            eta_s=_eta_seconds(countdown, eta, now),
            target=target or None,
            retry=retry,
            countdown_s=None if countdown is None else float(countdown),
        )

    @property
    def overhead(self) -> int:
        """App Engine's size of the task without its body: method, URL and headers (4 bytes of framing each)."""
        return len(METHOD) + len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers.items())

    def eta(self) -> datetime:
        """The ETA asked for, or now."""
        return datetime.fromtimestamp(time.time() if self.eta_s is None else self.eta_s, timezone.utc)

    def to_json(
        self, body: bytes, queue_path: str, name: str | None = None, delivery: Delivery = APP_ENGINE
    ) -> dict[str, Any]:
        """The Cloud Tasks ``task`` object for this spec carrying ``body`` (an App Engine or an HTTP target)."""
        encoded = base64.b64encode(body).decode("ascii")
        task: dict[str, Any]
        http = delivery.http_request(self.target, self.url)
        if http is not None:
            task = {"httpRequest": {**http, "headers": self.headers, "body": encoded}}
        else:
            request: dict[str, Any] = {
                "httpMethod": METHOD,
                "relativeUri": self.url,
                "headers": self.headers,
                "body": encoded,
            }
            if self.target:
                request["appEngineRouting"] = {"service": self.target}
            task = {"appEngineHttpRequest": request}
        name = name or self.name
        if name:
            task["name"] = f"{queue_path}/tasks/{name}"
        if self.eta_s is not None:
            task["scheduleTime"] = format_time(self.eta_s)
        if self.countdown_s is not None and delivery.extensions:
            task["countdown"] = _seconds(self.countdown_s)
        if self.retry is not None:
            retry = self.retry.to_json()
            if retry:
                task["retryConfig"] = retry
        return task
