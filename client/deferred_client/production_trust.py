"""Which deliveries a production handler runs (``DEFERRED_BACKEND=cloudtasks``).

HTTP-target tasks carry an OIDC token from Cloud Tasks: it must verify against Google's keys (or the
configured certs URL), for the configured audience, from the configured issuer, for the configured
service account. App Engine-target tasks are trusted by ``X-AppEngine-QueueName`` only on App Engine,
which strips ``X-AppEngine-*`` headers from requests that come from outside. Anything else: 403.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from typing import TYPE_CHECKING, Any

from .auth import google_request, require
from .config import ENV, Config
from .errors import ConfigurationError
from .targets import audiences

if TYPE_CHECKING:
    from .execution import Reply, TaskRequest

__all__ = ["on_app_engine", "production_refusal", "verify_oidc_token"]

logger = logging.getLogger(__name__)

QUEUE_HEADER = "x-appengine-queuename"
#: Variables the App Engine runtime sets (standard: both; flexible: GAE_APPLICATION among others).
GAE_VARS = ("GAE_ENV", "GAE_APPLICATION")
CLOCK_SKEW_S = 10
#: How long fetched signing keys are kept when the answer does not say (Cache-Control max-age wins).
DEFAULT_KEYS_TTL_S = 300.0
MAX_KEYS_TTL_S = 3600.0
#: Keys older than this are fetched again once when a token does not verify (Google rotates its keys).
REFETCH_AFTER_S = 60.0
_MAX_AGE = re.compile(r"max-age=(\d+)")


class InvalidToken(Exception):
    """Raised when an OIDC token does not verify; the message says why."""


class KeysUnavailable(Exception):
    """Raised when the signing keys cannot be fetched."""


def on_app_engine() -> bool:
    """Whether this process runs on App Engine (the runtime's own variables say so)."""
    return any(os.environ.get(name) for name in GAE_VARS)


class _KeysCache:
    """A google-auth request that remembers the answers of GETs (the signing keys) for their max-age."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._request: Any = None
        self._entries: dict[str, tuple[float, float, Any]] = {}

    def age(self, url: str) -> float:
        """Seconds since ``url`` was fetched (infinite when it is not held)."""
        entry = self._entries.get(url)
        return time.monotonic() - entry[1] if entry else float("inf")

    def forget(self, url: str) -> None:
        """Drop what is held for ``url``."""
        self._entries.pop(url, None)

    def _fresh(self, url: str) -> Any:
        entry = self._entries.get(url)
        return entry[2] if entry is not None and entry[0] > time.monotonic() else None

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None, **kwargs: Any) -> Any:
        held = self._fresh(url) if method == "GET" else None
        if held is not None:
            return held
        kwargs.setdefault("timeout", 10)
        # One fetch at a time: deliveries that arrive together wait for it instead of fetching the keys each.
        with self._lock:
            held = self._fresh(url) if method == "GET" else None
            if held is not None:
                return held
            if self._request is None:
                self._request = google_request()
            response = self._request(url, method=method, body=body, headers=headers, **kwargs)
            if method == "GET" and response.status == 200:
                match = _MAX_AGE.search(str(response.headers.get("cache-control", "")))
                ttl = min(float(match.group(1)), MAX_KEYS_TTL_S) if match else DEFAULT_KEYS_TTL_S
                now = time.monotonic()
                self._entries[url] = (now + ttl, now, response)
        return response


_keys = _KeysCache()


def _verify_once(token: str, config: Config, wanted: list[str]) -> dict[str, Any]:
    id_token = require("google.oauth2.id_token")
    exceptions = require("google.auth.exceptions")
    try:
        claims = id_token.verify_token(
            token, _keys, audience=wanted, certs_url=config.certs_url, clock_skew_in_seconds=CLOCK_SKEW_S
        )
    except exceptions.TransportError as exc:
        raise KeysUnavailable(f"the signing keys at {config.certs_url} could not be fetched: {exc}") from exc
    except Exception as exc:  # google-auth and PyJWT raise many kinds for a bad token
        raise InvalidToken(f"{type(exc).__name__}: {exc}") from exc
    return dict(claims)


def verify_oidc_token(token: str, config: Config) -> dict[str, Any]:
    """The token's claims when it is signed by the issuer's keys, for our audience, issuer and service account."""
    wanted = audiences(config)
    if not wanted:
        raise ConfigurationError(f"Set {ENV['oidc_audience']} or {ENV['handler_url']}: the audience tokens must have.")
    if not config.service_account:
        raise ConfigurationError(f"Set {ENV['service_account']}: the service account tokens must be for.")
    try:
        claims = _verify_once(token, config, wanted)
    except InvalidToken:
        if _keys.age(config.certs_url) < REFETCH_AFTER_S:
            raise
        _keys.forget(config.certs_url)  # the keys may have rotated since they were fetched
        claims = _verify_once(token, config, wanted)
    if claims.get("iss") != config.issuer:
        raise InvalidToken(f"the issuer is {claims.get('iss')!r}, not {config.issuer!r}")
    if claims.get("email") != config.service_account:
        raise InvalidToken(f"the token is for {claims.get('email')!r}, not {config.service_account!r}")
    if claims.get("email_verified") is False:
        raise InvalidToken("the token's email is not verified")
    return claims


def _refuse(status: int, message: str) -> Reply:
    from .execution import Reply

    logger.error(message)
    return Reply(status, message)


def production_refusal(request: TaskRequest, config: Config) -> Reply | None:
    """Why a delivery may not run in production (403, or 503 when the keys cannot be fetched), or ``None``."""
    authorization = request.headers.get("authorization", "")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _refuse(403, "Refused a task delivery: the Authorization header is not a bearer token.")
        try:
            verify_oidc_token(token.strip(), config)
        except (InvalidToken, ConfigurationError) as exc:
            return _refuse(403, f"Refused a task delivery: its OIDC token does not verify: {exc}")
        except KeysUnavailable as exc:
            return _refuse(503, f"Could not check a task delivery's OIDC token: {exc}")
        return None
    if QUEUE_HEADER in request.headers and on_app_engine():
        return None
    if QUEUE_HEADER in request.headers:
        return _refuse(
            403,
            "Refused a task delivery: X-AppEngine-QueueName is trusted only on App Engine (GAE_ENV/GAE_APPLICATION"
            " unset here), and the request carries no OIDC token.",
        )
    return _refuse(403, "Refused a request: it carries no OIDC token and is not an App Engine task delivery.")
