"""Google credentials for production: the configured google-auth object, or Application Default Credentials.

google-auth (the ``[cloud]`` extra) is imported only here and only when the Cloud Tasks backend is used,
so the emulator path needs nothing outside the standard library.
"""

from __future__ import annotations

import threading
from typing import Any

from .errors import ConfigurationError

__all__ = ["BearerAuth", "default_project", "google_request", "resolve_credentials"]

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
INSTALL_HINT = "pip install 'deferred-client[cloud]'"

_lock = threading.Lock()
_adc: list[tuple[Any, str | None]] = []


def require(module: str) -> Any:
    """Import a module of the ``[cloud]`` extra, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigurationError(
            f"The Cloud Tasks backend needs {module.split('.')[0]} ({exc}): install the extra with {INSTALL_HINT}."
        ) from exc


def _application_default() -> tuple[Any, str | None]:
    """``google.auth.default()``, asked once per process."""
    if not _adc:
        google_auth = require("google.auth")
        with _lock:
            if not _adc:
                try:
                    credentials, project = google_auth.default(scopes=list(SCOPES))
                except google_auth.exceptions.DefaultCredentialsError as exc:
                    raise ConfigurationError(
                        f"No Application Default Credentials: {exc} (or pass configure(credentials=...))."
                    ) from exc
                _adc.append((credentials, project))
    return _adc[0]


def resolve_credentials(credentials: Any) -> Any:
    """The configured credentials, or Application Default Credentials."""
    return credentials if credentials is not None else _application_default()[0]


def default_project(credentials: Any) -> str | None:
    """The project the credentials belong to (a service account's), else Application Default Credentials'."""
    project = getattr(credentials, "project_id", None) if credentials is not None else None
    if isinstance(project, str) and project:
        return project
    if credentials is not None:
        return None
    return _application_default()[1]


def google_request() -> Any:
    """A google-auth HTTP request object (requests-based) for token refreshes and key downloads."""
    transport = require("google.auth.transport.requests")
    return transport.Request()


class BearerAuth:
    """The ``Authorization`` header of a credentials object, refreshed before it expires (one refresh at a time)."""

    def __init__(self, credentials: Any) -> None:
        self.credentials = resolve_credentials(credentials)
        self._lock = threading.Lock()
        self._request: Any = None

    def __repr__(self) -> str:
        return f"<BearerAuth {type(self.credentials).__name__}>"

    def header(self) -> str:
        """``Bearer <token>``, refreshing the token first when it is missing or about to expire."""
        credentials = self.credentials
        if not credentials.valid:
            with self._lock:
                if not credentials.valid:
                    if self._request is None:
                        self._request = google_request()
                    credentials.refresh(self._request)
        headers: dict[str, str] = {}
        credentials.apply(headers)
        value = headers.get("authorization") or headers.get("Authorization")
        if not value:
            raise ConfigurationError(f"The credentials {type(credentials).__name__} gave no Authorization header.")
        return str(value)
