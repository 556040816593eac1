"""Refuse what a hostile web page or an oversized upload could send, before any handler runs.

The emulator listens on loopback next to the developer's browser, and the app it feeds unpickles
what it receives; so a page on another site must not be able to enqueue, delete or reset anything:

- ``Host`` must name this machine (a loopback name or address, the bound host) or a host listed
  with ``--allowed-host``: a DNS-rebinding page reaches 127.0.0.1 under its own name.
- State-changing requests (POST, PUT, PATCH, DELETE) from a browser must come from the emulator's
  own origin (``Origin``, and ``Sec-Fetch-Site`` where browsers send it).
- A body must have a content type a cross-site "simple" request cannot have (not text/plain, a
  form, or none), so a page cannot smuggle one in without a CORS preflight, which is never granted.
- A body larger than the endpoint reads is refused from its ``Content-Length``, unread.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from .errors import InvalidArgument, PayloadTooLarge, PermissionDenied, Unsupported
from .settings import Settings

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Media types a page may send cross-site without a preflight (the CORS "simple" request).
SIMPLE_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})
#: Endpoints whose body is raw bytes, not JSON.
RAW_BODY_PATHS = frozenset({"/_emulator/v1/entities", "/rpc_http"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
#: Browsers send ``Sec-Fetch-Site``; these two mean the request is not from another site's page.
SAME_SITE_FETCH = frozenset({"same-origin", "none"})
#: Host headers whose verdict is remembered.
HOST_VERDICTS = 64


@dataclass(frozen=True)
class BodyLimits:
    """Largest bodies read: JSON requests, and raw ones (large deferred payloads, rpc_http)."""

    json_bytes: int
    raw_bytes: int

    @classmethod
    def for_settings(cls, settings: Settings) -> BodyLimits:
        """16 MiB of JSON (100 tasks at the App Engine limit, base64) and 32 MiB raw, more for larger tasks."""
        return cls(
            json_bytes=max(16 * MIB, 16 * settings.max_task_size), raw_bytes=max(32 * MIB, 32 * settings.max_task_size)
        )

    def for_path(self, path: str) -> int:
        """The limit of the endpoint at ``path``."""
        return self.raw_bytes if path in RAW_BODY_PATHS else self.json_bytes


limits_key = web.AppKey("body_limits", BodyLimits)


def split_host_header(value: str) -> str:
    """The host name of a ``Host`` header (no port, no brackets, lower case, no trailing dot)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") > 1:  # a bare IPv6 address (not valid in Host, but be exact about it)
        return value
    return value.partition(":")[0].rstrip(".")


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is a loopback name or address (``*.localhost`` included, as browsers resolve it)."""
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HostPolicy:
    """Which ``Host`` headers the emulator answers."""

    def __init__(self, bound_host: str, allowed: tuple[str, ...]) -> None:
        self.allowed = {split_host_header(h) for h in allowed if h.strip()}
        self.any = "*" in {h.strip() for h in allowed}
        bound = split_host_header(bound_host)
        if bound and bound not in ("0.0.0.0", "::"):
            self.allowed.add(bound)
        #: Verdicts by ``Host`` header: a client sends the same one every time, and parsing it (an IP
        #: address most often) took 2 us of every request.
        self._verdicts: dict[str, bool] = {}

    def permits(self, host: str) -> bool:
        """Whether a request with this ``Host`` header may be served."""
        if self.any or not host:
            # No Host at all is an HTTP/1.0 tool, never a browser.
            return True
        verdict = self._verdicts.get(host)
        if verdict is None:
            name = split_host_header(host)
            verdict = is_loopback_host(name) or name in self.allowed
            if len(self._verdicts) >= HOST_VERDICTS:
                self._verdicts.clear()  # a client sending endless different hosts: bounded memory
            self._verdicts[host] = verdict
        return verdict


policy_key = web.AppKey("host_policy", HostPolicy)


def _netloc(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    port = parts.port
    if port is None:
        port = {"http": 80, "https": 443}.get(parts.scheme)
    return (parts.hostname or "").rstrip("."), port


def is_own_origin(request: web.Request, origin: str) -> bool:
    """Whether ``origin`` is the emulator's own (the scheme and ``Host`` the request came in with)."""
    if origin == "null":
        return False
    try:
        theirs = _netloc(origin)
        ours = _netloc(f"{request.scheme}://{request.host}")
    except ValueError:
        return False
    return bool(theirs[0]) and theirs == ours


def media_type(request: web.Request) -> str:
    """The request's media type, lower case, without parameters ('' when absent)."""
    return request.headers.get("Content-Type", "").partition(";")[0].strip().lower()


def declared_length(request: web.Request) -> int | None:
    """The ``Content-Length`` header as a number (``None`` when absent, as for chunked bodies)."""
    raw = request.headers.get("Content-Length")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise InvalidArgument(f"Invalid Content-Length {raw!r}.") from exc


def check_request(request: web.Request, policy: HostPolicy, limits: BodyLimits) -> None:
    """Raise the error a request gets if it is refused (see the module docstring)."""
    host = request.headers.get("Host", "")
    if not policy.permits(host):
        raise PermissionDenied(
            f"Host {host!r} is not allowed: the emulator answers loopback names and the hosts listed with"
            " --allowed-host (a guard against DNS rebinding)."
        )
    if request.method not in STATE_CHANGING:
        return
    origin = request.headers.get("Origin")
    if origin is not None and not is_own_origin(request, origin):
        raise PermissionDenied(f"Cross-origin request refused: Origin {origin!r} is not this emulator's.")
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site.lower() not in SAME_SITE_FETCH:
        raise PermissionDenied(f"Cross-site request refused (Sec-Fetch-Site: {fetch_site}).")
    length = declared_length(request)
    has_body = bool(length) or (length is None and request.can_read_body)
    if not has_body:
        return
    limit = limits.for_path(request.path)
    if length is not None and length > limit:
        raise PayloadTooLarge(f"Request body too large: {length} bytes, over this endpoint's {limit}-byte limit.")
    kind = media_type(request)
    if not kind or kind in SIMPLE_TYPES:
        wanted = "application/octet-stream" if request.path in RAW_BODY_PATHS else "application/json"
        raise Unsupported(f"Unsupported Content-Type {kind or '(none)'!r}: send the body as {wanted}.")


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse foreign hosts, cross-site writes, simple-request bodies and oversized bodies."""
    try:
        check_request(request, request.app[policy_key], request.app[limits_key])
    except (PermissionDenied, PayloadTooLarge, Unsupported) as exc:
        logger.warning("refused %s %s: %s", request.method, request.path, exc.message)
        raise
    return await handler(request)


async def read_body(request: web.Request) -> bytes:
    """The whole body, refusing (413) past the endpoint's limit even when no length was declared."""
    limit = request.app[limits_key].for_path(request.path)
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body too large: over this endpoint's {limit}-byte limit.")
        chunks.append(chunk)


def install(app: web.Application, settings: Settings) -> None:
    """Put the host policy and the body limits on ``app`` (the middleware reads them there)."""
    allowed = settings.allowed_hosts
    if settings.oidc_issuer:
        # The issuer names this emulator as other containers reach it: handlers fetch its keys by that name.
        allowed += (urlsplit(settings.oidc_issuer).netloc,)
    app[policy_key] = HostPolicy(settings.host, allowed)
    app[limits_key] = BodyLimits.for_settings(settings)
