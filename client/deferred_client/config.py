"""Where tasks go and what the handlers trust: ``configure()`` or the environment variables of the README's table."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigurationError, EmulatorUnavailableError

__all__ = [
    "BACKEND_ENV",
    "Config",
    "ENV",
    "HOST_ENV",
    "SECRET_ENV",
    "configure",
    "configured",
    "current_config",
]

HOST_ENV = "DEFERRED_EMULATOR_HOST"
SECRET_ENV = "DEFERRED_EMULATOR_SECRET"
BACKEND_ENV = "DEFERRED_BACKEND"
EMULATOR, CLOUDTASKS = "emulator", "cloudtasks"
DEFAULT_PROJECT = "local-project"
DEFAULT_LOCATION = "us-central1"
DEFAULT_TIMEOUT_S = 30.0
CLOUD_TASKS_URL = "https://cloudtasks.googleapis.com"
GOOGLE_ISSUER = "https://accounts.google.com"
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
#: The ``configure()`` keyword each environment variable stands for.
ENV = {
    "host": HOST_ENV,
    "secret": SECRET_ENV,
    "backend": BACKEND_ENV,
    "project": "GOOGLE_CLOUD_PROJECT",
    "location": "DEFERRED_LOCATION",
    "cloud_tasks_url": "DEFERRED_CLOUD_TASKS_URL",
    "handler_url": "DEFERRED_HANDLER_URL",
    "service_account": "DEFERRED_SERVICE_ACCOUNT",
    "payload_bucket": "DEFERRED_PAYLOAD_BUCKET",
    "payload_prefix": "DEFERRED_PAYLOAD_PREFIX",
    "oidc_audience": "DEFERRED_OIDC_AUDIENCE",
    "oidc_issuer": "DEFERRED_OIDC_ISSUER",
    "oidc_certs_url": "DEFERRED_OIDC_CERTS_URL",
}


@dataclass(frozen=True)
class Config:
    """Everything ``defer()`` and the handlers need to know; ``None`` means not set (defaults apply)."""

    #: ``host:port`` (or a URL such as ``http://host:port``) of the emulator.
    host: str | None = None
    #: shared secret: the emulator signs deliveries with it and the handlers check the signature.
    secret: str | None = None
    project: str | None = None
    location: str | None = None
    #: how long one HTTP call may take.
    timeout_s: float = DEFAULT_TIMEOUT_S
    #: ``emulator`` or ``cloudtasks``; unset: ``emulator`` when ``host`` is set, else an error.
    backend: str | None = None
    cloud_tasks_url: str | None = None
    #: the deferred handler's full URL for HTTP targets (``SERVICE=URL,...`` for several); unset: App Engine targets.
    handler_url: str | None = None
    #: the service account whose OIDC token HTTP-target tasks carry, and that the handlers expect.
    service_account: str | None = None
    payload_bucket: str | None = None
    payload_prefix: str | None = None
    oidc_audience: str | None = None
    oidc_issuer: str | None = None
    oidc_certs_url: str | None = None
    #: a google-auth credentials object (default: Application Default Credentials).
    credentials: Any = field(default=None, hash=False, repr=False)

    @property
    def backend_name(self) -> str:
        """``emulator`` or ``cloudtasks``: as set, else ``emulator`` when an emulator host is set, else an error."""
        backend = (self.backend or "").strip().lower()
        if backend in (EMULATOR, CLOUDTASKS):
            return backend
        if backend:
            raise ConfigurationError(f"{BACKEND_ENV} must be {EMULATOR!r} or {CLOUDTASKS!r}, not {self.backend!r}.")
        if self.host:
            return EMULATOR
        raise EmulatorUnavailableError(
            f"No task queue is configured: set {HOST_ENV}=host:port (for example {HOST_ENV}=127.0.0.1:8123) to use"
            f" the emulator, or {BACKEND_ENV}=cloudtasks to use Cloud Tasks (or call"
            " deferred_client.configure(host=...) or configure(backend='cloudtasks'))."
        )

    @property
    def production(self) -> bool:
        """Whether the backend is Cloud Tasks (never a guess: see ``backend_name``)."""
        return (self.backend or "").strip().lower() == CLOUDTASKS

    @property
    def base_url(self) -> str:
        """``http://host:port`` (plus any path prefix) of the emulator; raises when none is configured."""
        if not self.host:
            raise EmulatorUnavailableError(
                f"No task queue emulator is configured: set {HOST_ENV}=host:port (for example"
                f" {HOST_ENV}=127.0.0.1:8123) or call deferred_client.configure(host=...)."
            )
        host = self.host.strip().rstrip("/")
        return host if "://" in host else "http://" + host

    @property
    def api_url(self) -> str:
        """The Cloud Tasks REST API's base URL: Google's (or ``cloud_tasks_url``) in production, else the emulator's."""
        if self.backend_name == CLOUDTASKS:
            return (self.cloud_tasks_url or CLOUD_TASKS_URL).strip().rstrip("/")
        return self.base_url

    def endpoint(self) -> tuple[str, str, int, str]:
        """``(scheme, hostname, port, path prefix)`` of ``api_url``."""
        url = self.api_url
        what = ENV["cloud_tasks_url"] if self.production else HOST_ENV
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            shape = "https://host" if self.production else "host:port"
            raise ConfigurationError(f"{what} must look like {shape}: {url!r}.")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise ConfigurationError(f"{what} has a bad port: {url!r}.") from exc
        return parts.scheme, parts.hostname, port, parts.path.rstrip("/")

    def project_id(self) -> str:
        """The project: as configured; in production else Application Default Credentials' project, else an error."""
        if self.project:
            return self.project
        if not self.production:
            return DEFAULT_PROJECT
        from .auth import default_project

        project = default_project(self.credentials)
        if not project:
            raise ConfigurationError(f"Set {ENV['project']} (or configure(project=...)) to the Cloud Tasks project.")
        return project

    def location_id(self) -> str:
        """The Cloud Tasks location: as configured; required in production, ``us-central1`` for the emulator."""
        if self.location:
            return self.location
        if self.production:
            raise ConfigurationError(
                f"Set {ENV['location']} (or configure(location=...)) to the queues' Cloud Tasks location,"
                " e.g. us-central1."
            )
        return DEFAULT_LOCATION

    @property
    def issuer(self) -> str:
        """The OIDC issuer handlers accept (Google's by default)."""
        return self.oidc_issuer or GOOGLE_ISSUER

    @property
    def certs_url(self) -> str:
        """Where handlers fetch the keys that sign OIDC tokens (Google's by default)."""
        return self.oidc_certs_url or GOOGLE_CERTS_URL

    @property
    def prefix(self) -> str:
        """The object name prefix of large payloads in the bucket."""
        prefix = self.payload_prefix if self.payload_prefix is not None else "deferred/"
        return prefix.lstrip("/")


_lock = threading.Lock()
_explicit: dict[str, object] = {}
_cache: dict[tuple[str | None, ...], Config] = {}
_NAMES = tuple(ENV)
_VARS = tuple(ENV.values())
_FIELDS = {f.name for f in fields(Config)}


def _from_env(values: tuple[str | None, ...]) -> Config:
    config = _cache.get(values)
    if config is None:
        with _lock:
            from_env: dict[str, Any] = {name: value or None for name, value in zip(_NAMES, values)}
            config = Config(**from_env)
            if _explicit:
                config = replace(config, **_explicit)  # type: ignore[arg-type]
            if len(_cache) > 64:
                _cache.clear()
            _cache[values] = config
    return config


def current_config() -> Config:
    """The configuration in force: ``configure()``'s values over the environment's, over the defaults."""
    env = os.environ
    return _from_env(tuple(env.get(var) for var in _VARS))


def _given(values: dict[str, Any]) -> dict[str, object]:
    unknown = set(values) - _FIELDS
    if unknown:
        raise TypeError(f"configure() got unknown keywords: {', '.join(sorted(unknown))}")
    given = {k: v for k, v in values.items() if v is not None}
    if given.get("secret") == "":
        given["secret"] = None
    return given


def configure(
    host: str | None = None,
    *,
    secret: str | None = None,
    backend: str | None = None,
    project: str | None = None,
    location: str | None = None,
    timeout_s: float | None = None,
    cloud_tasks_url: str | None = None,
    handler_url: str | None = None,
    service_account: str | None = None,
    payload_bucket: str | None = None,
    payload_prefix: str | None = None,
    oidc_audience: str | None = None,
    oidc_issuer: str | None = None,
    oidc_certs_url: str | None = None,
    credentials: Any = None,
) -> Config:
    """Set the configuration: the README's table of variables, in lower case; ``credentials`` any google-auth object.

    Arguments left out come from the environment; calling ``configure()`` with no arguments goes back to the
    environment alone. ``secret=""`` turns signature checking off even when ``DEFERRED_EMULATOR_SECRET`` is set.
    ``credentials`` defaults to Application Default Credentials (used with ``backend="cloudtasks"`` only).
    """
    given = _given({k: v for k, v in locals().items() if k in _FIELDS})
    with _lock:
        _explicit.clear()
        _explicit.update(given)
        _cache.clear()
    return current_config()


@contextmanager
def configured(host: str | None = None, **settings: Any) -> Iterator[Config]:
    """``configure()`` these values over the current ones for the duration of a block, then restore them."""
    given = _given({"host": host, **settings})
    with _lock:
        saved = dict(_explicit)
        _explicit.update(given)
        _cache.clear()
    try:
        yield current_config()
    finally:
        with _lock:
            _explicit.clear()
            _explicit.update(saved)
            _cache.clear()
