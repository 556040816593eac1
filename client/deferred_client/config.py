"""Where the emulator is and what to tell it: ``configure()`` or the ``DEFERRED_EMULATOR_*`` variables."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from .errors import EmulatorUnavailableError

__all__ = ["Config", "configure", "configured", "current_config", "HOST_ENV", "SECRET_ENV"]

HOST_ENV = "DEFERRED_EMULATOR_HOST"
SECRET_ENV = "DEFERRED_EMULATOR_SECRET"
DEFAULT_PROJECT = "local-project"
DEFAULT_LOCATION = "us-central1"
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Config:
    """The emulator to talk to and the secret shared with it (``host`` is ``None`` when none is set)."""

    #: ``host:port`` (or a URL such as ``http://host:port``) of the emulator.
    host: str | None = None
    #: shared secret: the emulator signs deliveries with it and the handlers check the signature.
    secret: str | None = None
    project: str = DEFAULT_PROJECT
    location: str = DEFAULT_LOCATION
    #: how long one HTTP call to the emulator may take.
    timeout_s: float = DEFAULT_TIMEOUT_S

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

    def endpoint(self) -> tuple[str, str, int, str]:
        """``(scheme, hostname, port, path prefix)`` of ``base_url``."""
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EmulatorUnavailableError(f"{HOST_ENV} must look like host:port, not {self.host!r}.")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise EmulatorUnavailableError(f"{HOST_ENV} has a bad port: {self.host!r}.") from exc
        return parts.scheme, parts.hostname, port, parts.path.rstrip("/")


_lock = threading.Lock()
_explicit: dict[str, object] = {}
_cache: dict[tuple[str | None, str | None], Config] = {}


def _from_env(host: str | None, secret: str | None) -> Config:
    key = (host, secret)
    config = _cache.get(key)
    if config is None:
        with _lock:
            config = Config(host=host or None, secret=secret or None)
            if _explicit:
                config = replace(config, **_explicit)  # type: ignore[arg-type]
            if len(_cache) > 64:
                _cache.clear()
            _cache[key] = config
    return config


def current_config() -> Config:
    """The configuration in force: ``configure()``'s values over the environment's, over the defaults."""
    env = os.environ
    return _from_env(env.get(HOST_ENV), env.get(SECRET_ENV))


def configure(
    host: str | None = None,
    *,
    secret: str | None = None,
    project: str | None = None,
    location: str | None = None,
    timeout_s: float | None = None,
) -> Config:
    """Set where the emulator is (``host:port``) and the shared secret; arguments left out come from the environment.

    Calling ``configure()`` with no arguments goes back to the environment alone. ``secret=""`` turns
    signature checking off even when ``DEFERRED_EMULATOR_SECRET`` is set.
    """
    given = {"host": host, "secret": secret, "project": project, "location": location, "timeout_s": timeout_s}
    with _lock:
        _explicit.clear()
        _explicit.update({k: v for k, v in given.items() if v is not None})
        if _explicit.get("secret") == "":
            _explicit["secret"] = None
        _cache.clear()
    return current_config()


@contextmanager
def configured(
    host: str | None = None,
    *,
    secret: str | None = None,
    project: str | None = None,
    location: str | None = None,
    timeout_s: float | None = None,
) -> Iterator[Config]:
    """``configure()`` these values over the current ones for the duration of a block, then restore them."""
    given = {"host": host, "secret": secret, "project": project, "location": location, "timeout_s": timeout_s}
    with _lock:
        saved = dict(_explicit)
        _explicit.update({k: v for k, v in given.items() if v is not None})
        if _explicit.get("secret") == "":
            _explicit["secret"] = None
        _cache.clear()
    try:
        yield current_config()
    finally:
        with _lock:
            _explicit.clear()
            _explicit.update(saved)
            _cache.clear()
