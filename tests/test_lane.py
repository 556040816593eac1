"""CreateTask's lean path: the same answers as aiohttp's handler, and every other request still aiohttp's."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import API
from deferred_emulator import lane as lane_module
from deferred_emulator.app import create_app
from deferred_emulator.frontdoor import FrontSite
from deferred_emulator.lane import Lanes
from deferred_emulator.lanehead import queue_path
from deferred_emulator.settings import Settings

TASKS = f"{API}/queues/default/tasks"
#: Fields that differ from one task to the next.
VARYING = {"name", "createTime", "scheduleTime"}

Started = tuple[int, Lanes]


@pytest.fixture
async def front(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Started]]]:
    """An emulator served as ``serve`` serves it; its port and its lanes."""
    runners: list[web.AppRunner] = []

    async def start(**overrides: Any) -> Started:
        settings = Settings(db_path=str(tmp_path / "tasks.sqlite3"), port=0, dispatch=False, **overrides)
        runner = web.AppRunner(create_app(settings), access_log=None)
        await runner.setup()
        runners.append(runner)
        sock = socket.create_server(("127.0.0.1", 0))
        site = FrontSite(runner, sock)
        await site.start()
        assert site.lanes is not None
        return int(sock.getsockname()[1]), site.lanes

    yield start
    for runner in runners:
        await runner.cleanup()


def request(body: bytes, path: str = TASKS, *extra: str, host: str = "127.0.0.1") -> bytes:
    """A POST of a JSON body, with extra header lines."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json", *extra]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def task_body(uri: str = "/work", **extra: Any) -> bytes:
    return json.dumps({"task": {"appEngineHttpRequest": {"relativeUri": uri}, **extra}}).encode()


class Conn:
    """One kept-alive connection, answers read one at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def answer(self) -> tuple[int, dict[str, str], Any]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await asyncio.wait_for(self.reader.readexactly(int(headers["content-length"])), 10)
        return status, headers, json.loads(body) if body and "json" in headers["content-type"] else body

    async def exchange(self, data: bytes) -> tuple[int, dict[str, str], Any]:
        self.writer.write(data)
        return await self.answer()

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def stable(task: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in task.items() if k not in VARYING}


async def test_lane_answers_as_aiohttp_does(front: Callable[..., Awaitable[Started]]) -> None:
    port, lanes = await front()
    conn = await Conn.open(port)
    due = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    body = task_body(scheduleTime=due, dispatchDeadline="30s")
    lane_status, lane_headers, lane_task = await conn.exchange(request(body))
    assert lanes.served == 1
    # Sec-Fetch-Site is the guard's to judge: the lane hands the request, and the connection, to aiohttp
    status, headers, task = await conn.exchange(request(body, TASKS, "Sec-Fetch-Site: same-origin"))
    assert lanes.served == 1
    assert (lane_status, status) == (200, 200)
    assert stable(lane_task) == stable(task)
    assert lane_task["name"] != task["name"] and lane_task["name"].startswith(f"{API[4:]}/queues/default/tasks/")
    assert lane_headers["content-type"] == headers["content-type"] == "application/json; charset=utf-8"
    assert lane_headers["server"] == headers["server"]
    await conn.close()


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b'{"task": 5}',
        b'{"task": {"appEngineHttpRequest": {"relativeUri": "/x"}, "dispatchDeadline": "1s"}}',
        task_body("no-leading-slash"),
        json.dumps({"task": {"appEngineHttpRequest": {"relativeUri": "/x"}, "name": "bad name"}}).encode(),
        b"[" * 2000,
    ],
)
async def test_lane_refuses_as_aiohttp_does(front: Callable[..., Awaitable[Started]], body: bytes) -> None:
    port, lanes = await front()
    conn = await Conn.open(port)
    lane = await conn.exchange(request(body))
    assert lanes.served == 1
    theirs = await conn.exchange(request(body, TASKS, "Sec-Fetch-Site: same-origin"))
    assert lanes.served == 1
    assert lane[0] == theirs[0] and lane[0] >= 400
    assert lane[2] == theirs[2] and set(lane[2]["error"]) >= {"code", "message", "status"}
    await conn.close()


async def test_a_taken_name_is_409_through_the_lane(front: Callable[..., Awaitable[Started]]) -> None:
    port, lanes = await front()
    conn = await Conn.open(port)
    name = f"{API[4:]}/queues/default/tasks/once"
    assert (await conn.exchange(request(task_body(name=name))))[0] == 200
    status, _, error = await conn.exchange(request(task_body(name=name)))
    assert (status, error["error"]["status"]) == (409, "ALREADY_EXISTS")
    assert lanes.served == 2
    await conn.close()


async def test_other_api_requests_are_lent_to_aiohttp_in_order(front: Callable[..., Awaitable[Started]]) -> None:
    port, lanes = await front()
    conn = await Conn.open(port)
    get = f"GET {TASKS} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    # Pipelined: two adds, a list, and an add after it, in one write
    conn.writer.write(request(task_body("/a")) + request(task_body("/b")) + get + request(task_body("/c")))
    answers = [await conn.answer() for _ in range(4)]
    assert [a[0] for a in answers] == [200, 200, 200, 200]
    listed = [t["appEngineHttpRequest"]["relativeUri"] for t in answers[2][2]["tasks"]]
    assert listed == ["/a", "/b"]
    assert answers[3][2]["appEngineHttpRequest"]["relativeUri"] == "/c"
    # aiohttp answered the list, on loan: the add after it is the lane's again
    assert (lanes.served, lanes.lent) == (3, 1)
    await conn.close()


async def test_the_deferred_clients_first_health_check_keeps_its_connection_on_the_lane(
    front: Callable[..., Awaitable[Started]],
) -> None:
    port, lanes = await front()
    conn = await Conn.open(port)
    status, _, health = await conn.exchange(b"GET /_emulator/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status == 200 and "maxTaskSize" in json.dumps(health)
    for i in range(3):
        assert (await conn.exchange(request(task_body(f"/t{i}"))))[0] == 200
    assert (lanes.lent, lanes.served) == (1, 3)
    await conn.close()


async def test_lent_requests_with_bodies_errors_and_missing_routes(front: Callable[..., Awaitable[Started]]) -> None:
    port, lanes = await front()
    conn = await Conn.open(port)
    queue = f"{API}/queues/lent"
    body = json.dumps({"name": f"{API[4:]}/queues/lent"}).encode()
    create = request(body, f"{API}/queues")
    status, _, made = await conn.exchange(create)
    assert (status, made["name"]) == (200, f"{API[4:]}/queues/lent")
    status, _, error = await conn.exchange(create)  # a second time: aiohttp's error, on loan
    assert (status, error["error"]["status"]) == (409, "ALREADY_EXISTS")
    status, _, error = await conn.exchange(f"GET {queue}/tasks/none HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    assert status == 404
    status, _, error = await conn.exchange(b"DELETE /v2/nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status == 404
    status, _, task = await conn.exchange(request(task_body("/x"), f"{queue}/tasks"))
    assert (status, task["name"].split("/tasks/")[0]) == (200, f"{API[4:]}/queues/lent")
    assert (lanes.lent, lanes.served) == (4, 1)
    await conn.close()


async def test_a_lent_request_that_closes_and_a_browsers_page_are_aiohttps(
    front: Callable[..., Awaitable[Started]],
) -> None:
    port, lanes = await front()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        request(task_body()) + b"GET /_emulator/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    answers = await asyncio.wait_for(reader.read(), 10)  # aiohttp closes after its answer
    assert answers.count(b"HTTP/1.1 200 OK") == 2 and (lanes.served, lanes.lent) == (1, 0)
    writer.close()
    await writer.wait_closed()
    conn = await Conn.open(port)
    status, headers, _ = await conn.exchange(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert (await conn.exchange(request(task_body())))[0] == 200
    assert (lanes.served, lanes.lent) == (1, 0)  # the console's connection stays aiohttp's
    await conn.close()


async def test_requests_sent_in_pieces_are_served(front: Callable[..., Awaitable[Started]]) -> None:
    port, lanes = await front()
    conn = await Conn.open(port)
    data = request(task_body("/slow"))
    for i in range(0, len(data), 7):
        conn.writer.write(data[i : i + 7])
        await conn.writer.drain()
        await asyncio.sleep(0)
    status, _, task = await conn.answer()
    assert (status, task["appEngineHttpRequest"]["relativeUri"], lanes.served) == (200, "/slow", 1)
    await conn.close()


@pytest.mark.parametrize(
    ("extra", "host", "status"),
    [
        ((), "evil.example", 403),  # the guard's Host rule, answered by aiohttp
        (("Origin: https://evil.example",), "127.0.0.1", 403),
        (("Connection: close",), "127.0.0.1", 200),
        (("Expect: 100-continue",), "127.0.0.1", 200),
    ],
)
async def test_what_the_lane_does_not_take_is_aiohttps(
    front: Callable[..., Awaitable[Started]], extra: tuple[str, ...], host: str, status: int
) -> None:
    port, lanes = await front()
    conn = await Conn.open(port)
    data = request(task_body(), TASKS, *extra, host=host)
    if extra and extra[0].startswith("Expect"):
        head, _, body = data.partition(b"\r\n\r\n")
        conn.writer.write(head + b"\r\n\r\n")
        assert (await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 100")
        conn.writer.write(body)
        answer = await conn.answer()
    else:
        answer = await conn.exchange(data)
    assert answer[0] == status
    assert lanes.served == 0
    await conn.close()


async def test_a_head_past_aiohttps_line_limit_is_aiohttps_to_refuse(
    front: Callable[..., Awaitable[Started]],
) -> None:
    port, lanes = await front()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request(task_body(), TASKS, "X-Long: " + "a" * 9000))
    answer = await asyncio.wait_for(reader.read(), 10)
    assert answer.startswith((b"HTTP/1.0 400 ", b"HTTP/1.1 400 ")) and lanes.served == 0
    writer.close()
    await writer.wait_closed()


async def test_oversized_and_foreign_types_get_aiohttps_refusal(front: Callable[..., Awaitable[Started]]) -> None:
    port, lanes = await front()
    conn = await Conn.open(port)
    big = b"POST " + TASKS.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    big += b"Content-Length: 999999999\r\n\r\n"
    status, _, error = await conn.exchange(big)
    assert (status, error["error"]["code"]) == (413, 413)
    conn2 = await Conn.open(port)
    plain = request(task_body()).replace(b"application/json", b"text/plain")
    assert (await conn2.exchange(plain))[0] == 415
    assert lanes.served == 0
    await conn.close()
    await conn2.close()


async def test_half_closed_after_a_request_is_answered_then_closed(front: Callable[..., Awaitable[Started]]) -> None:
    port, lanes = await front()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request(task_body()))
    writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), 10)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and lanes.served == 1
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (b"/v2/projects/p/locations/l/queues/q/tasks", "projects/p/locations/l/queues/q"),
        (b"/v2/projects/p/locations/l/queues/q/tasks?$alt=json;enum-encoding=int", "projects/p/locations/l/queues/q"),
        (b"/v2/projects/p/locations/l/queues/q%2D/tasks", None),
        (b"/v2/projects/p/locations/l/queues//tasks", None),
        (b"/v2/projects/p/locations/l/queues/q/tasks:batchCreate", None),
        (b"/v2beta3/projects/p/locations/l/queues/q/tasks", None),
        (b"/v2/projects/p/locations/l/queues/q/tasks/t", None),
        (b"/v2/projects/p/regions/l/queues/q/tasks", None),
        (
            b"/v2/projects/example.com:p/locations/us-1/queues/q-1_x/tasks",
            "projects/example.com:p/locations/us-1/queues/q-1_x",
        ),
        (b"/v2/projects/p/locations/../queues/q/tasks", None),
        (b"/v2/projects/./locations/l/queues/q/tasks", None),
        (b"/v2/projects/p/locations/l/queues/q#x/tasks", None),
        (b"/v2/projects/p/locations/l/queues/q.x/tasks", None),
        (b"/v2/projects/p\xc3\xa9/locations/l/queues/q/tasks", None),
    ],
)
def test_queue_path(url: bytes, expected: str | None) -> None:
    assert queue_path(url) == expected


async def test_chunked_and_large_bodies_are_aiohttps(front: Callable[..., Awaitable[Started]]) -> None:
    port, lanes = await front()
    conn = await Conn.open(port)
    body = task_body("/chunked")
    head = f"POST {TASKS} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n"
    chunked = head.encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    status, _, task = await conn.exchange(chunked)
    assert (status, task["appEngineHttpRequest"]["relativeUri"]) == (200, "/chunked")
    conn2 = await Conn.open(port)
    big = json.dumps({"task": {"appEngineHttpRequest": {"relativeUri": "/big", "body": "A" * 400_000}}}).encode()
    status, _, task = await conn2.exchange(request(big))
    assert (status, task["appEngineHttpRequest"]["relativeUri"]) == (200, "/big")
    assert lanes.served == 0
    await conn.close()
    await conn2.close()


@pytest.mark.parametrize("partial", [b"", b"POST /v2/projects/"])
async def test_idle_and_unfinished_connections_are_closed(
    front: Callable[..., Awaitable[Started]], monkeypatch: pytest.MonkeyPatch, partial: bytes
) -> None:
    monkeypatch.setattr(lane_module, "KEEPALIVE_S", 0.5)
    port, lanes = await front()
    conn = await Conn.open(port)
    assert (await conn.exchange(request(task_body())))[0] == 200
    conn.writer.write(partial)
    assert await asyncio.wait_for(conn.reader.read(), 5) == b""  # closed by the server
    assert lanes.open == set()
    await conn.close()


async def test_stopping_closes_kept_alive_connections(tmp_path: Path) -> None:
    settings = Settings(db_path=str(tmp_path / "tasks.sqlite3"), port=0, dispatch=False)
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    await FrontSite(runner, sock).start()
    conn = await Conn.open(int(sock.getsockname()[1]))
    assert (await conn.exchange(request(task_body())))[0] == 200
    await runner.cleanup()
    assert await asyncio.wait_for(conn.reader.read(), 5) == b""
    await conn.close()


async def test_many_pipelined_adds_are_answered_in_order(front: Callable[..., Awaitable[Started]]) -> None:
    port, lanes = await front()
    conn = await Conn.open(port)
    count = 1500  # more than Python's recursion limit: answered one after another, not one inside another
    conn.writer.write(b"".join(request(task_body(f"/p{i}")) for i in range(count)))
    answers = [await conn.answer() for _ in range(count)]
    assert [a[2]["appEngineHttpRequest"]["relativeUri"] for a in answers] == [f"/p{i}" for i in range(count)]
    assert lanes.served == count
    await conn.close()


async def test_an_add_that_waits_for_the_store_is_answered_when_it_is_free(
    front: Callable[..., Awaitable[Started]],
) -> None:
    port, lanes = await front()
    conn = await Conn.open(port)
    store = lanes.emulator.store
    await store._lock.acquire()  # another coroutine's transaction is under way
    try:
        conn.writer.write(request(task_body("/waited")) + request(task_body("/after")))
        await asyncio.sleep(0.05)
        assert lanes.served == 0
    finally:
        store._lock.release()
    first, second = await conn.answer(), await conn.answer()
    assert (first[0], first[2]["appEngineHttpRequest"]["relativeUri"]) == (200, "/waited")
    assert (second[0], second[2]["appEngineHttpRequest"]["relativeUri"]) == (200, "/after")
    assert lanes.served == 2
    await conn.close()


async def test_a_client_gone_during_a_lent_long_poll_leaves_nothing_behind(
    front: Callable[..., Awaitable[Started]],
) -> None:
    port, lanes = await front()
    conn = await Conn.open(port)
    conn.writer.write(b"GET /_emulator/v1/attempts?since=0&wait=20 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    for _ in range(100):  # bounded: the lent request reaches aiohttp within a few turns of the loop
        if lanes.lent:
            break
        await asyncio.sleep(0.01)
    assert lanes.lent == 1 and len(lanes.open) == 1
    await conn.close()
    for _ in range(100):
        if not lanes.open:
            break
        await asyncio.sleep(0.01)
    assert lanes.open == set()
