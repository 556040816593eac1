"""One kept-alive HTTP/1.1 connection over a socket: the little of HTTP the client needs, with little overhead.

``http.client`` spends most of a small request's client time parsing headers with the ``email``
package; ``defer()`` is a hot path, so this reads only what it needs (status, length, chunking, close).
"""

from __future__ import annotations

import socket
import ssl

__all__ = ["Connection", "ProtocolError", "StaleConnection"]

MAX_LINE = 65536
MAX_HEADERS = 100


class ProtocolError(OSError):
    """Raised when the other end does not speak HTTP/1.x as expected."""


class StaleConnection(ConnectionResetError):
    """Raised when the server closed the connection before answering (a kept-alive connection gone idle)."""


class Connection:
    """A socket to one server; requests go one at a time, the connection stays open between them."""

    __slots__ = ("sock", "reader", "closed")

    def __init__(self, scheme: str, host: str, port: int, timeout_s: float) -> None:
        sock = socket.create_connection((host, port), timeout=timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.reader = sock.makefile("rb")
        self.closed = False

    def close(self) -> None:
        """Close the socket."""
        if not self.closed:
            self.closed = True
            self.reader.close()
            self.sock.close()

    def _line(self) -> bytes:
        line = self.reader.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise ProtocolError("HTTP line too long")
        return line

    def _head(self) -> tuple[int, int | None, bool, bool]:
        """Status, Content-Length, chunked, and whether the server will close, of the next final response."""
        while True:
            line = self._line()
            if not line:
                raise StaleConnection("the server closed the connection without answering")
            version, _, rest = line.partition(b" ")
            if not version.startswith(b"HTTP/1."):
                raise ProtocolError(f"not an HTTP/1.x status line: {line[:100]!r}")
            try:
                status = int(rest[:3])
            except ValueError as exc:
                raise ProtocolError(f"bad status line: {line[:100]!r}") from exc
            length: int | None = None
            chunked = False
            close = version == b"HTTP/1.0"
            for _ in range(MAX_HEADERS):
                line = self._line()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"connection":
                    close = b"close" in value.lower() or (close and b"keep-alive" not in value.lower())
            else:
                raise ProtocolError("too many headers")
            if status >= 200 or status == 101:
                return status, length, chunked, close

    def _chunks(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = self._line()
            try:
                size = int(size_line.split(b";", 1)[0], 16)
            except ValueError as exc:
                raise ProtocolError(f"bad chunk size: {size_line[:100]!r}") from exc
            if size == 0:
                while self._line() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(self._exactly(size))
            self._line()

    def _exactly(self, size: int) -> bytes:
        data = self.reader.read(size)
        if len(data) < size:
            raise ProtocolError(f"the answer ended after {len(data)} of {size} bytes")
        return data

    def exchange(self, head: bytes, body: bytes | None, method: str) -> tuple[int, bytes]:
        """Send a request (its ``head`` ends with the blank line) and read the answer: status and body."""
        self.sock.sendall(head + body if body else head)
        status, length, chunked, close = self._head()
        if method == "HEAD" or status in (204, 304):
            data = b""
        elif chunked:
            data = self._chunks()
        elif length is not None:
            data = self._exactly(length)
        else:
            data, close = self.reader.read(), True
        if close:
            self.close()
        return status, data
