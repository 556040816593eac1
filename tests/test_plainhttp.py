"""The plain-HTTP delivery client: what it writes, what it reads back, and when it leaves a request to aiohttp."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from deferred_emulator.plainhttp import RESPONSE_BYTES, NoAnswer, Pool, request_head


@asynccontextmanager
async def raw_server(answers: list[bytes | None]) -> AsyncIterator[tuple[int, list[bytes], list[int]]]:
    """A loopback server that answers each request with the next of ``answers`` (None: close without answering).

    Yields its port, the requests it read, and the number of connections each request came on.
    """
    requests: list[bytes] = []
    connections: list[int] = []
    opened = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal opened
        opened += 1
        mine = opened
        try:
            while answers:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.lower().split(b"\r\n")
                lengths = [line.split(b":")[1] for line in lines if line.startswith(b"content-length")]
                length = int(lengths[0]) if lengths else 0
                requests.append(head + await reader.readexactly(length))
                connections.append(mine)
                answer = answers.pop(0)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, requests, connections
    finally:
        server.close()
        await server.wait_closed()


def head_for(port: int, path: str = "/task", body: bytes = b"data") -> tuple[str, int, bytes]:
    made = request_head("POST", f"http://127.0.0.1:{port}{path}", {"X-AppEngine-TaskName": "t1"}, len(body))
    assert made is not None
    return made


async def test_requests_are_written_with_their_headers_spelled_as_given() -> None:
    async with raw_server([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]) as (port, requests, _):
        pool = Pool()
        status, excerpt = await pool.request(*head_for(port, "/_ah/queue/deferred?x=1"), b"data")
        pool.close()
    assert (status, excerpt) == (200, b"ok")
    assert requests == [
        b"POST /_ah/queue/deferred?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-AppEngine-TaskName: t1\r\n"
        b"Content-Length: 4\r\n\r\ndata" % port
    ]


async def test_a_connection_is_kept_alive_between_deliveries() -> None:
    ok = b"HTTP/1.1 204 No Content\r\n\r\n"
    async with raw_server([ok, ok, ok]) as (port, _, connections):
        pool = Pool()
        for _ in range(3):
            assert (await pool.request(*head_for(port), b"data"))[0] == 204
        pool.close()
    assert connections == [1, 1, 1]


async def test_chunked_and_close_delimited_answers_are_read() -> None:
    chunked = b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nboom!\r\n0\r\n\r\n"
    until_close = b"HTTP/1.0 503 Busy\r\n\r\ntry later"
    async with raw_server([chunked, until_close]) as (port, _, _):
        pool = Pool()
        assert await pool.request(*head_for(port), b"data") == (500, b"boom!")
        assert await pool.request(*head_for(port), b"data") == (503, b"try later")
        pool.close()


async def test_an_interim_answer_is_skipped() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
    async with raw_server([answer]) as (port, _, _):
        pool = Pool()
        assert await pool.request(*head_for(port), b"data") == (201, b"")
        pool.close()


async def test_only_the_start_of_a_large_answer_is_kept_and_its_connection_closed() -> None:
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    async with raw_server([big, ok]) as (port, _, connections):
        pool = Pool()
        status, excerpt = await pool.request(*head_for(port), b"data")
        assert (status, len(excerpt)) == (200, RESPONSE_BYTES + 1)
        assert (await pool.request(*head_for(port), b"data"))[0] == 200
        pool.close()
    assert connections == [1, 2]


async def test_no_answer_is_an_error_and_a_stale_kept_alive_connection_is_retried_once() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    # Given a server that answers once, then closes the kept-alive connection on the next request unanswered
    async with raw_server([ok, None, ok, None, None]) as (port, requests, connections):
        pool = Pool()
        assert (await pool.request(*head_for(port), b"data"))[0] == 200
        # When the next request goes out on that connection, it is sent again on a new one
        assert (await pool.request(*head_for(port), b"data"))[0] == 200
        assert connections == [1, 1, 2]
        # And when the new connection also closes unanswered, that is an error (one retry only)
        with pytest.raises(NoAnswer):
            await pool.request(*head_for(port), b"data")
        pool.close()


async def test_a_garbled_answer_is_an_error() -> None:
    async with raw_server([b"SMTP ready\r\n\r\n"]) as (port, _, _):
        pool = Pool()
        with pytest.raises(NoAnswer, match="not HTTP"):
            await pool.request(*head_for(port), b"data")
        pool.close()


async def test_a_closed_port_is_an_os_error() -> None:
    async with raw_server([]) as (port, _, _):
        pass
    pool = Pool()
    with pytest.raises(OSError):
        await pool.request(*head_for(port), b"data")


@pytest.mark.parametrize(
    ("method", "url", "headers"),
    [
        ("POST", "https://127.0.0.1/task", {}),
        ("HEAD", "http://127.0.0.1/task", {}),
        ("POST", "http://127.0.0.1/a path", {}),
        ("POST", "http://127.0.0.1/caf\u00e9", {}),
        ("POST", "http://127.0.0.1/%7e", {}),
        ("POST", "http://user:pw@127.0.0.1/task", {}),
        ("POST", "http://127.0.0.1/task", {"X-Bad": "a\r\nX-Injected: 1"}),
        ("POST", "http://127.0.0.1/task", {"Bad Name": "v"}),
        ("POST", "http://127.0.0.1/task", {"X-Name": "caf\u00e9"}),
        ("POST", "http://127.0.0.1:99999/task", {}),
        ("POST", "http://exa\x0bmple.com/task", {}),
        ("POST", "http://exa mple.com/task", {}),
    ],
)
def test_requests_it_cannot_write_as_aiohttp_would_are_left_to_aiohttp(
    method: str, url: str, headers: dict[str, str]
) -> None:
    assert request_head(method, url, headers, 0) is None


def test_bodiless_writes_still_say_their_length() -> None:
    made = request_head("PUT", "http://localhost:8080/x", {}, 0)
    assert made is not None and made[:2] == ("localhost", 8080)
    assert made[2] == b"PUT /x HTTP/1.1\r\nHost: localhost:8080\r\nContent-Length: 0\r\n\r\n"
    get = request_head("GET", "http://localhost/x", {}, 0)
    assert get is not None and get[2] == b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-A": "one\ntwo"},
        {"X-A\nX-B": "v"},
        {"X-A": "ok", "X-B": "line\r\nInjected: yes"},
        {"X-A": "caf\u00e9"},
        {"Bad Name": "v"},
    ],
)
def test_headers_with_line_breaks_or_odd_characters_are_not_written_here(headers: dict[str, str]) -> None:
    assert request_head("POST", "http://localhost:8080/x", headers, 3) is None
    assert request_head("POST", "http://localhost:8080/x", {"X-A": "fine", "X-B": "too"}, 3) is not None
