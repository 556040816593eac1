"""Server settings, declared once as a frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DB_PATH = Path(".deferred-emulator") / "tasks.sqlite3"


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to run; the CLI builds it from flags and environment variables.

    :param host: address to bind (127.0.0.1 by default: the emulator is a developer tool).
    :param port: port to bind; 0 picks a free one.
    :param app_url: base URL of the app that receives App Engine tasks.
    :param targets: per-service base URLs (``--target SERVICE=URL``).
    :param db_path: SQLite file, or ``":memory:"``.
    :param queue_yaml: queue.yaml to load, if any; it is reloaded when it changes.
    :param dispatch: deliver tasks automatically (``--no-dispatch`` turns it off).
    :param ignore_rate_limits: deliver as fast as possible, ignoring queue rates.
    :param auto_create_queues: create unknown queues on first use instead of answering 404.
    :param virtual_clock: start a clock that only moves forward through ``clock:advance``.
    :param max_task_size: largest task accepted, in bytes (App Engine's 100 KiB by default).
    :param dispatch_deadline_s: default time an app has to answer a delivery.
    :param secret: shared secret used to sign deliveries (``X-Deferred-Signature``).
    :param grpc_port: a port that serves gRPC alone, besides ``port`` (which serves both); None: none.
    :param allowed_hosts: ``Host`` names answered besides loopback ones (``--allowed-host``; ``*``: any).
    :param oidc_issuer: the ``iss`` of the OIDC tokens HTTP tasks carry (default ``http://{host}:{port}`` as bound).
    """

    host: str = "127.0.0.1"
    port: int = 8123
    app_url: str = "http://localhost:8080"
    targets: dict[str, str] = field(default_factory=dict)
    db_path: str = str(DEFAULT_DB_PATH)
    queue_yaml: str | None = None
    #: how often queue.yaml's modification time is checked, in seconds.
    queue_yaml_poll_s: float = 1.0
    dispatch: bool = True
    ignore_rate_limits: bool = False
    auto_create_queues: bool = False
    virtual_clock: bool = False
    max_task_size: int = 102400
    dispatch_deadline_s: float = 600.0
    secret: str | None = None
    log_level: str = "info"
    project: str = "local-project"
    location: str = "us-central1"
    #: how long a used task name stays reserved (App Engine: about 7 to 9 days).
    tombstone_ttl_s: float = 7 * 24 * 3600.0
    #: deliveries in flight at once, across all queues.
    max_in_flight: int = 200
    allowed_hosts: tuple[str, ...] = ()
    oidc_issuer: str | None = None
    grpc_port: int | None = None

    def base_url_for(self, service: str | None) -> str:
        """The URL an App Engine task for ``service`` is delivered to."""
        if service and service in self.targets:
            return self.targets[service].rstrip("/")
        return self.app_url.rstrip("/")
