"""Blocking HTTP to the Cloud Tasks REST API (the emulator's or Google's) with the standard library.

One kept-alive connection per thread; in production each request carries the credentials' bearer token.
"""

from __future__ import annotations

import json
import threading
from typing import Any, NamedTuple

from .auth import BearerAuth
from .config import HOST_ENV, Config
from .connection import Connection
from .errors import EmulatorUnavailableError, Error, TransientError, error_from_response

__all__ = ["Response", "SyncTransport", "unavailable"]

JSON = "application/json"
OCTETS = "application/octet-stream"
#: Failures that mean a kept-alive connection went stale (the server closed it while it sat idle).
#: Tells the emulator the request comes from this client (App Engine's deferred): its tasks keep App Engine's
#: size limit rather than the Cloud Tasks API's. Never sent to production.
EMULATOR_MARK = b"X-Deferred-Client: 1\r\n"
STALE = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)


class Response(NamedTuple):
    """An HTTP answer: status and raw body."""

    status: int
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON."""
        try:
            return json.loads(self.body) if self.body else {}
        except ValueError as exc:
            raise Error(f"The emulator answered with something that is not JSON: {self.body[:200]!r}") from exc

    def check(self, what: str, *, adding: bool = False) -> Response:
        """Self when 2xx, else raise the matching ``Error``."""
        if 200 <= self.status < 300:
            return self
        raise error_from_response(self.status, self.body, what, adding=adding)


def unavailable(base_url: str, exc: BaseException, production: bool = False) -> TransientError:
    """The error for an emulator (or Cloud Tasks) that does not answer."""
    detail = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
    if production:
        return TransientError(f"Cloud Tasks at {base_url} did not answer ({detail}).")
    return EmulatorUnavailableError(
        f"The task queue emulator at {base_url} did not answer ({detail}). Is `deferred-emulator serve` running"
        f" there? Set {HOST_ENV}=host:port or call deferred_client.configure(host=...) to point elsewhere."
    )


class _Held:
    """One thread's connection, kept in thread-local state: closed when the thread ends and drops it."""

    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def __del__(self) -> None:
        self.conn.close()


class SyncTransport:
    """Requests to one API endpoint; each thread keeps its own connection open between calls."""

    def __init__(self, config: Config) -> None:
        self.base_url = config.api_url
        self.production = config.production
        self.auth = BearerAuth(config.credentials) if self.production else None
        self.scheme, self.host, self.port, self.prefix = config.endpoint()
        self.timeout_s = config.timeout_s
        host = f"[{self.host}]" if ":" in self.host else self.host
        default_port = 443 if self.scheme == "https" else 80
        self._host_header = (host if self.port == default_port else f"{host}:{self.port}").encode("idna")
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"<SyncTransport {self.base_url}>"

    def _connection(self) -> tuple[Connection, bool]:
        """This thread's connection and whether it served a request before (else a new one)."""
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None and not held.conn.closed:
            return held.conn, True
        conn = Connection(self.scheme, self.host, self.port, self.timeout_s)
        self._local.held = _Held(conn)
        return conn, False

    def _head(self, method: str, path: str, body: bytes | None, content_type: str) -> bytes:
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method.encode(), (self.prefix + path).encode(), self._host_header)
        if self.auth is not None:
            head += b"Authorization: %s\r\n" % self.auth.header().encode("latin-1")
        else:
            head += EMULATOR_MARK
        if body is not None:
            head += b"Content-Type: %s\r\nContent-Length: %d\r\n" % (content_type.encode(), len(body))
        elif method in ("POST", "PUT", "PATCH"):
            head += b"Content-Length: 0\r\n"
        return head + b"\r\n"

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = JSON) -> Response:
        """Send one request (``path`` below the emulator's base URL) and read the whole answer."""
        head = self._head(method, path, body, content_type)
        for attempt in (1, 2):
            conn: Connection | None = None
            reused = False
            try:
                conn, reused = self._connection()
                return Response(*conn.exchange(head, body, method))
            except STALE as exc:
                if conn is not None:
                    conn.close()
                if not reused or attempt == 2:
                    raise unavailable(self.base_url, exc, self.production) from exc
                # The kept-alive connection had gone stale: try once more on a new one.
            except OSError as exc:
                if conn is not None:
                    conn.close()
                raise unavailable(self.base_url, exc, self.production) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close this thread's connection."""
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None:
            held.conn.close()
            self._local.held = None
