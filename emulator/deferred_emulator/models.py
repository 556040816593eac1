"""The data the emulator keeps: queues, their retry and rate settings, and tasks."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from typing import Any

#: App Engine's proto defaults for retry parameters.
DEFAULT_MIN_BACKOFF_S = 0.1
DEFAULT_MAX_BACKOFF_S = 3600.0
DEFAULT_MAX_DOUBLINGS = 16
#: App Engine's default queue: 5 tasks a second, bucket of 5.
DEFAULT_RATE = 5.0
DEFAULT_BUCKET_SIZE = 5


class TaskState(str, Enum):
    """Where a task is in its life."""

    #: stored, waiting for its ETA (or for a token, or for its queue to resume).
    WAITING = "waiting"
    #: claimed by the dispatcher, a delivery in flight.
    RUNNING = "running"
    #: gave up after its retry limits; kept for inspection.
    FAILED = "failed"


class QueueState(str, Enum):
    """Cloud Tasks queue states."""

    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    DISABLED = "DISABLED"


class TargetKind(str, Enum):
    """Which kind of request a task makes."""

    APP_ENGINE = "appengine"
    HTTP = "http"


@dataclass(frozen=True)
class RetryConfig:
    """App Engine retry parameters (queue.yaml ``retry_parameters`` or a task's retry options)."""

    retry_limit: int | None = None
    age_limit_s: float | None = None
    min_backoff_s: float = DEFAULT_MIN_BACKOFF_S
    max_backoff_s: float = DEFAULT_MAX_BACKOFF_S
    max_doublings: int = DEFAULT_MAX_DOUBLINGS

    def to_dict(self) -> dict[str, Any]:
        """A plain dict, for storage."""
        return {
            "retry_limit": self.retry_limit,
            "age_limit_s": self.age_limit_s,
            "min_backoff_s": self.min_backoff_s,
            "max_backoff_s": self.max_backoff_s,
            "max_doublings": self.max_doublings,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetryConfig:
        """The inverse of ``to_dict``."""
        return cls(**data)

    def to_text(self) -> str:
        """JSON text, for a SQLite column."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_text(cls, text: str | None) -> RetryConfig | None:
        """The inverse of ``to_text``; None stays None."""
        return cls.from_dict(json.loads(text)) if text else None


@dataclass(frozen=True)
class AuthToken:
    """The token an HTTP task carries: OIDC (``value`` is the audience) or OAuth (``value`` is the scope)."""

    kind: str  # "oidc" or "oauth"
    service_account: str
    value: str = ""

    def to_dict(self) -> dict[str, str]:
        """A plain dict, for storage."""
        return {"kind": self.kind, "service_account": self.service_account, "value": self.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> AuthToken | None:
        """The inverse of ``to_dict``; None stays None."""
        return cls(**data) if data else None

    def to_text(self) -> str:
        """JSON text, for a SQLite column."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_text(cls, text: str | None) -> AuthToken | None:
        """The inverse of ``to_text``; None stays None."""
        return cls.from_dict(json.loads(text)) if text else None


@dataclass(frozen=True)
class UriOverride:
    """A queue's ``httpTarget.uriOverride``: the parts of its HTTP tasks' URLs it replaces (None: kept)."""

    scheme: str = ""  # "HTTP", "HTTPS" or "" (kept)
    host: str = ""  # "" keeps the task's
    port: int | None = None  # 0 clears the port
    path: str | None = None  # "" clears the path
    query: str | None = None  # "" clears the query
    #: "ALWAYS" (the default) or "IF_NOT_EXISTS" (only parts the task's URL lacks).
    mode: str = "ALWAYS"


@dataclass(frozen=True)
class HttpTarget:
    """A queue's ``httpTarget``: what it overrides in each of its HTTP tasks at dispatch."""

    uri_override: UriOverride | None = None
    method: str = ""  # "" keeps the task's
    headers: tuple[tuple[str, str], ...] = ()
    auth: AuthToken | None = None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict, for storage."""
        return {
            "uri_override": None if self.uri_override is None else asdict(self.uri_override),
            "method": self.method,
            "headers": [list(pair) for pair in self.headers],
            "auth": None if self.auth is None else self.auth.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> HttpTarget | None:
        """The inverse of ``to_dict``; None stays None."""
        if not data:
            return None
        uri = data.get("uri_override")
        return cls(
            UriOverride(**uri) if uri else None,
            data.get("method", ""),
            tuple((k, v) for k, v in data.get("headers", [])),
            AuthToken.from_dict(data.get("auth")),
        )


@dataclass(frozen=True)
class QueueConfig:
    """A push (or pull) queue and its throughput and retry settings."""

    name: str
    state: QueueState = QueueState.RUNNING
    rate_per_s: float = DEFAULT_RATE
    #: the rate as queue.yaml wrote it (``2/m``), shown instead of ``rate_per_s`` while they agree.
    rate_text: str = ""
    bucket_size: int = DEFAULT_BUCKET_SIZE
    max_concurrent: int | None = None
    target: str | None = None
    retry: RetryConfig = field(default_factory=RetryConfig)
    mode: str = "push"
    #: where the queue came from: "api", "yaml" or "default".
    source: str = "api"
    created_us: int = 0
    purge_us: int = 0
    #: appEngineRoutingOverride's version and instance (its service is ``target``).
    routing_version: str = ""
    routing_instance: str = ""
    http_target: HttpTarget | None = None

    def with_changes(self, **changes: Any) -> QueueConfig:
        """A copy with some fields replaced."""
        return replace(self, **changes)


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, five times the cost,
# and one of these is built for every task added, claimed or settled. Treat instances as values all the same.
@dataclass
class Attempt:
    """One delivery attempt, as the attempt history keeps it."""

    task_id: int
    number: int
    schedule_us: int
    dispatch_us: int
    response_us: int
    status: int
    reason: str
    excerpt: str

    @property
    def latency_ms(self) -> float:
        """How long the app took to answer."""
        return (self.response_us - self.dispatch_us) / 1000


# Not frozen, as Attempt.
@dataclass
class NewTask:
    """A task as a client asks for it, validated but not yet stored."""

    queue: str
    name: str
    eta_us: int
    kind: TargetKind = TargetKind.APP_ENGINE
    method: str = "POST"
    url: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    service: str = ""
    version: str = ""
    instance: str = ""
    host: str = ""
    retry: RetryConfig | None = None
    deadline_s: float | None = None
    #: True when the emulator picked the name (it can never collide with a tombstone of the user's).
    generated_name: bool = False
    auth: AuthToken | None = None


# Not frozen, as Attempt.
@dataclass
class Task:
    """A stored task with its delivery counters."""

    id: int
    queue: str
    name: str
    state: TaskState
    eta_us: int
    created_us: int
    kind: TargetKind
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    service: str
    version: str
    instance: str
    host: str
    retry: RetryConfig | None
    deadline_s: float | None
    retry_count: int = 0
    execution_count: int = 0
    dispatch_count: int = 0
    response_count: int = 0
    previous_response: int | None = None
    retry_reason: str = ""
    first_attempt_us: int | None = None
    last_schedule_us: int | None = None
    last_dispatch_us: int | None = None
    last_response_us: int | None = None
    last_status: int | None = None
    last_excerpt: str = ""
    auth: AuthToken | None = None

    def __repr__(self) -> str:
        return f"<Task {self.queue}/{self.name} {self.state.value} eta_us={self.eta_us} retries={self.retry_count}>"

    def evolve(self, **changes: Any) -> Task:
        """A copy with ``changes``: ``dataclasses.replace`` without its per-field work (a quarter of the cost,
        on the paths every task takes)."""
        unknown = changes.keys() - self.__dict__.keys()
        if unknown:
            raise TypeError(f"Task has no field {sorted(unknown)[0]!r}")
        new = object.__new__(Task)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new
