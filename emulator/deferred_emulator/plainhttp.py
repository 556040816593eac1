"""Deliveries over plain HTTP/1.1: kept-alive connections per app, responses parsed by httptools.

aiohttp's client spent more CPU on each delivery than everything else the emulator does for it
(building the request object, its auto headers, the response object and stream). A delivery needs
far less: a request head written once, the status, and the answer up to 64 KiB. Requests this
module cannot write byte-for-byte as aiohttp would (TLS, HEAD, unusual characters in the path or
headers) go through aiohttp instead: ``request_head`` answers None for them.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from functools import lru_cache
from urllib.parse import urlsplit

import httptools

#: How much of an error text is kept.
EXCERPT_BYTES = 1024
#: How much of an answer is kept: one byte more than that tells a longer answer, whose rest is not
#: read (the connection is closed).
RESPONSE_BYTES = 64 * 1024
#: An answer's head (status line and headers) may take this many bytes, and this long once its first
#: byte has come: an app that sends headers without end fails the attempt rather than being read
#: for the whole dispatch deadline.
HEAD_BYTES = 64 * 1024
HEAD_S = 10.0
#: Idle connections kept per app; more than this are closed when they come back. Above the dispatcher's
#: 200 deliveries in flight: at 64, a backlog's deliveries opened a new connection two times in three,
#: a fifth of the CPU each delivery cost.
MAX_IDLE_PER_HOST = 256
#: An idle connection older than this is not reused (servers close theirs after 5 to 75 s).
IDLE_S = 4.0

_PATH_RE = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/?]*")
_HOST_RE = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:\[\]]+")
#: Header names, one a line: each a token.
_TOKENS_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*")
#: Header values, one a line: tabs and visible ASCII (a line break inside a value shows as an extra
#: line, which ``request_head`` counts).
_VALUES_RE = re.compile(r"[\t\x20-\x7e]*(?:\n[\t\x20-\x7e]*)*")


class NoAnswer(ConnectionError):
    """The connection ended before the app answered."""

    def __init__(self, message: str, received: bool = True) -> None:
        super().__init__(message)
        #: Whether any byte of an answer had arrived (if not, the app may never have read the request).
        self.received = received


def request_head(method: str, url: str, headers: Mapping[str, str], body_len: int) -> tuple[str, int, bytes] | None:
    """``(host, port, head)`` of a request this module can send as it is, else None."""
    if method == "HEAD" or not url.startswith("http://"):
        return None
    target = _target(url)
    if target is None:
        return None
    host, port, path, netloc = target
    names = "\n".join(headers)
    values = "\n".join(headers.values())
    # Two scans of all names and all values at once: one per header cost as much as the rest of the head.
    if headers:
        if not _TOKENS_RE.fullmatch(names) or not _VALUES_RE.fullmatch(values):
            return None
        if names.count("\n") != len(headers) - 1 or values.count("\n") != len(headers) - 1:
            return None  # a line break inside a name or a value
    lines = [f"{method} {path} HTTP/1.1", f"Host: {netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body_len or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {body_len}")
    lines.append("\r\n")
    return host, port, "\r\n".join(lines).encode("ascii")


@lru_cache(maxsize=256)
def _target(url: str) -> tuple[str, int, str, str] | None:
    """Host, port, path (with the query) and ``host:port`` of a URL this module can send to; None if not.

    Cached: deliveries go to a few URLs over and over (``/_ah/queue/deferred`` above all).
    """
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or 80
    except ValueError:
        return None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if not host or parts.username is not None or not _PATH_RE.fullmatch(path) or not _HOST_RE.fullmatch(parts.netloc):
        return None
    return host, port, path, parts.netloc


class _Connection(asyncio.Protocol):
    """One kept-alive connection: at most one request on it at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self._status = 0
        self._chunks: list[bytes] = []
        self._size = 0
        #: Whether the current exchange has had any byte back.
        self.received = False
        #: Bytes read of the current answer while its head had not ended, and the head's deadline.
        self._head_size = 0
        self._head_timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        in_head = not self._status
        if in_head:
            self._head_size += len(data)
        first = not self.received
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(NoAnswer(f"the app's answer is not HTTP: {exc}"))
            self.close()
            return
        if in_head and not self._status:
            if self._head_size > HEAD_BYTES:
                # Still no end of the head after this many bytes: the rest is not read.
                self._fail(NoAnswer(f"the app's answer has a head over {HEAD_BYTES // 1024} KiB"))
                self.close()
            elif first and self._answer is not None and self._head_timer is None:
                # Only for a head that did not come whole in its first bytes (most do: no timer for them).
                self._head_timer = asyncio.get_running_loop().call_later(HEAD_S, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._status:
            # An answer whose body runs until the connection closes (no Content-Length) ends here.
            self._done(keep=False)
        else:
            why = f": {type(exc).__name__}: {exc}" if exc else ""
            self._fail(NoAnswer(f"the app closed the connection without answering{why}", self.received))

    # httptools callbacks

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._stop_head_timer()

    def on_body(self, body: bytes) -> None:
        if self._size <= RESPONSE_BYTES:
            self._chunks.append(body)
        self._size += len(body)
        if self._size > RESPONSE_BYTES:
            self._done(keep=False)  # enough to keep: the rest is not read

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows.
            self._status, self._chunks, self._size = 0, [], 0
            return
        self._done(keep=self._parser.should_keep_alive())

    # the exchange

    def _done(self, keep: bool) -> None:
        answer = self._answer
        if answer is not None and not answer.done():
            answer.set_result((self._status, b"".join(self._chunks)[: RESPONSE_BYTES + 1], keep))

    def _head_too_slow(self) -> None:
        self._fail(NoAnswer(f"the app's answer head did not end within {HEAD_S:g}s of its first byte"))
        self.close()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _fail(self, exc: Exception) -> None:
        self._stop_head_timer()
        answer = self._answer
        if answer is not None and not answer.done():
            answer.set_exception(exc)

    async def exchange(self, head: bytes, body: bytes) -> tuple[int, bytes, bool]:
        """Send one request and wait for its status and body (cut); also whether the connection can be reused."""
        assert self.transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._status, self._chunks, self._size, self.received = 0, [], 0, False
        self._head_size = 0
        self.transport.write(head + body)
        try:
            return await self._answer
        finally:
            self._answer = None
            self._stop_head_timer()

    def close(self) -> None:
        """Close the connection (it is not reused)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Kept-alive connections to the apps, by host and port."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()

    async def request(self, host: str, port: int, head: bytes, body: bytes) -> tuple[int, bytes]:
        """Send a request whose head ``request_head`` wrote; its status and its body up to RESPONSE_BYTES + 1 bytes.

        Raises OSError (NoAnswer included) when no answer came; cancelling closes the connection.
        """
        conn, reused = await self._acquire(host, port)
        try:
            return await self._exchange(host, port, conn, head, body)
        except NoAnswer as exc:
            if not reused or exc.received:
                raise
        # The app had closed the kept-alive connection as the request went out: once more on a new one.
        return await self._exchange(host, port, await self._connect(host, port), head, body)

    async def _exchange(self, host: str, port: int, conn: _Connection, head: bytes, body: bytes) -> tuple[int, bytes]:
        keep = False
        try:
            status, excerpt, keep = await conn.exchange(head, body)
            return status, excerpt
        finally:
            self._release(host, port, conn, keep)

    async def _acquire(self, host: str, port: int) -> tuple[_Connection, bool]:
        idle = self._idle.get((host, port))
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_S:
                return conn, True
            conn.close()
            self._open.discard(conn)
        return await self._connect(host, port), False

    async def _connect(self, host: str, port: int) -> _Connection:
        _, conn = await asyncio.get_running_loop().create_connection(_Connection, host, port)
        self._open.add(conn)
        return conn

    def _release(self, host: str, port: int, conn: _Connection, keep: bool) -> None:
        idle = self._idle.setdefault((host, port), [])
        if keep and not conn.closed and len(idle) < MAX_IDLE_PER_HOST:
            conn.idle_since = time.monotonic()
            idle.append(conn)
            return
        conn.close()
        self._open.discard(conn)

    def close(self) -> None:
        """Close every connection."""
        for conn in self._open:
            conn.close()
        self._open.clear()
        self._idle.clear()
