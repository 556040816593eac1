"""The blocking transport: HTTP/1.1 answers of every shape, kept-alive connections, stale ones replaced."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from deferred_client import Config, EmulatorUnavailableError
from deferred_client.transport import SyncTransport

OK_JSON = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok": 1}\r\n'


class ScriptedServer:
    """Answers the n-th request with the n-th canned reply; ``close_after`` closes the connection after it."""

    def __init__(self, replies: list[bytes], close_after: set[int] | None = None) -> None:
        self.replies = replies
        self.close_after = close_after or set()
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def _read_request(self, conn: socket.socket, buffer: bytes) -> tuple[bytes, bytes] | None:
        while b"\r\n\r\n" not in buffer:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            buffer += chunk
        head, _, rest = buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += conn.recv(65536)
        return head + b"\r\n\r\n" + rest[:length], rest[length:]

    def serve(self) -> None:
        while self.replies:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                buffer = b""
                while self.replies:
                    got = self._read_request(conn, buffer)
                    if got is None:
                        break
                    request, buffer = got
                    self.requests.append(request)
                    conn.sendall(self.replies.pop(0))
                    if len(self.requests) in self.close_after:
                        break

    def transport(self) -> SyncTransport:
        return SyncTransport(Config(host=f"127.0.0.1:{self.port}", timeout_s=5))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def scripted() -> Iterator[list[ScriptedServer]]:
    servers: list[ScriptedServer] = []
    yield servers
    for server in servers:
        server.close()


def serve(scripted: list[ScriptedServer], replies: list[bytes], close_after: set[int] | None = None) -> ScriptedServer:
    server = ScriptedServer(replies, close_after)
    scripted.append(server)
    return server


def test_requests_reuse_one_connection(scripted: list[ScriptedServer]) -> None:
    server = serve(scripted, [OK_JSON, OK_JSON, OK_JSON])
    transport = server.transport()
    for _ in range(3):
        assert transport.request("POST", "/x", b"{}").json() == {"ok": 1}
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /x HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}" in first


def test_a_stale_kept_alive_connection_is_replaced_once(scripted: list[ScriptedServer]) -> None:
    # Given a server that closes the connection after each answer, without saying so
    server = serve(scripted, [OK_JSON, OK_JSON], close_after={1, 2})
    transport = server.transport()
    assert transport.request("GET", "/a").status == 200
    # When the next request finds the connection closed, then it is sent again on a new one
    assert transport.request("GET", "/b").status == 200
    assert server.connections == 2
    assert [r.split(b" ")[1] for r in server.requests] == [b"/a", b"/b"]


def test_chunked_answers_and_interim_responses(scripted: list[ScriptedServer]) -> None:
    chunked = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\n"
    )
    server = serve(scripted, [chunked, OK_JSON])
    transport = server.transport()
    assert transport.request("GET", "/c").body == b"Wikipedia"
    assert transport.request("GET", "/d").status == 200
    assert server.connections == 1


def test_connection_close_and_http_1_0_answers(scripted: list[ScriptedServer]) -> None:
    replies = [
        b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno",
        b"HTTP/1.0 200 OK\r\n\r\nuntil the end",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ]
    server = serve(scripted, replies, close_after={1, 2})
    transport = server.transport()
    assert transport.request("GET", "/1") == (404, b"no")
    assert transport.request("GET", "/2") == (200, b"until the end")
    assert transport.request("DELETE", "/3") == (204, b"")
    assert server.connections == 3


def test_a_truncated_answer_is_an_error(scripted: list[ScriptedServer]) -> None:
    server = serve(scripted, [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"], close_after={1})
    with pytest.raises(EmulatorUnavailableError, match="ended after 5 of 10 bytes"):
        server.transport().request("GET", "/")


def test_not_http_is_an_error(scripted: list[ScriptedServer]) -> None:
    server = serve(scripted, [b"SSH-2.0-OpenSSH\r\n"], close_after={1})
    with pytest.raises(EmulatorUnavailableError, match="not an HTTP/1.x status line"):
        server.transport().request("GET", "/")


def test_a_server_that_never_answers_times_out() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        transport = SyncTransport(Config(host=f"127.0.0.1:{sock.getsockname()[1]}", timeout_s=0.2))
        with pytest.raises(EmulatorUnavailableError, match="timed out"):
            transport.request("GET", "/")
    finally:
        sock.close()
