"""One port for REST and gRPC: the first bytes of each connection decide, and nothing is lost either way."""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from aiohttp import web
from conftest import API, Handle, MakeEmulator
from deferred_emulator import frontdoor
from deferred_emulator.api.grpc.server import GrpcServerError
from deferred_emulator.app import create_app
from deferred_emulator.frontdoor import PREFACE
from deferred_emulator.settings import Settings
from google.cloud import tasks_v2
from google.protobuf import json_format

QUEUE = f"{API.removeprefix('/v2/')}/queues/default"


async def raw_exchange(emu: Handle, data: bytes, half_close: bool = False) -> bytes:
    """Send ``data`` on a new connection (then half-close it if asked) and read all the server answers."""
    host, port = emu.host.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    if half_close:
        writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    return answer


async def create_task(channel: grpc.aio.Channel, body: bytes, view: str = "BASIC") -> tasks_v2.Task:
    rpc = channel.unary_unary(
        "/google.cloud.tasks.v2.CloudTasks/CreateTask",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=tasks_v2.Task.pb().FromString,
    )
    request = json_format.ParseDict({"parent": QUEUE, "responseView": view}, tasks_v2.CreateTaskRequest.pb()())
    request.task.http_request.url = "https://example.com/"
    request.task.http_request.body = body
    return await rpc(request, timeout=30)


async def test_short_and_odd_http_openings_reach_http(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    # A request shorter than the HTTP/2 preface is HTTP/1 from its first byte
    answer = await raw_exchange(emu, b"GET / HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 200"), answer[:200]
    # One that starts like the preface but is not one is HTTP's to refuse
    answer = await raw_exchange(emu, b"PRI * HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert re.match(rb"HTTP/1\.[01] 4\d\d ", answer), answer[:200]
    # Connections that close early, after nothing or part of the preface, are dropped quietly
    assert await raw_exchange(emu, b"", half_close=True) == b""
    await raw_exchange(emu, PREFACE[:10], half_close=True)
    # And the port still serves both protocols
    async with emu.http.get(emu.url + "/_emulator/v1/health") as resp:
        assert resp.status == 200
    async with grpc.aio.insecure_channel(emu.host) as channel:
        assert (await create_task(channel, b"x")).name.startswith(QUEUE)


async def test_large_messages_go_both_ways(make_front_emulator: MakeEmulator) -> None:
    # Given Cloud Tasks' 1 MiB task size, a task body near it goes in and comes back out (FULL view)
    emu = await make_front_emulator(dispatch=False)
    body = bytes(range(256)) * 3600  # 900 KiB
    async with grpc.aio.insecure_channel(emu.host) as channel:
        created = await create_task(channel, body, view="FULL")
        assert created.http_request.body == body
        # And many such answers at once, on two connections, all arrive whole
        get = channel.unary_unary(
            "/google.cloud.tasks.v2.CloudTasks/GetTask",
            request_serializer=tasks_v2.GetTaskRequest.serialize,
            response_deserializer=tasks_v2.Task.pb().FromString,
        )
        async with grpc.aio.insecure_channel(emu.host) as other:
            get_other = other.unary_unary(
                "/google.cloud.tasks.v2.CloudTasks/GetTask",
                request_serializer=tasks_v2.GetTaskRequest.serialize,
                response_deserializer=tasks_v2.Task.pb().FromString,
            )
            request = tasks_v2.GetTaskRequest(name=created.name, response_view=tasks_v2.Task.View.FULL)
            answers = await asyncio.gather(*(rpc(request, timeout=60) for rpc in [get, get_other] * 8))
    assert all(answer.http_request.body == body for answer in answers)


async def test_grpc_and_rest_calls_interleave_on_the_same_port(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)

    async def rest(i: int) -> str:
        data = await emu.call(
            "POST", f"{API}/queues/default/tasks", {"task": {"httpRequest": {"url": f"https://e/{i}"}}}
        )
        return str(data["name"])

    async with grpc.aio.insecure_channel(emu.host) as channel:
        grpc_calls = [create_task(channel, str(i).encode()) for i in range(50)]
        rest_calls = [rest(i) for i in range(50)]
        results = await asyncio.gather(*grpc_calls, *rest_calls)
    names = [r.name if isinstance(r, tasks_v2.Task.pb()) else r for r in results]
    listed = await emu.call("GET", f"{API}/queues/default/tasks?pageSize=1000")
    assert sorted(t["name"] for t in listed["tasks"]) == sorted(names)
    assert len(set(names)) == 100


@pytest.mark.parametrize("close_client_first", [True, False])
async def test_stopping_with_grpc_connections_open_leaves_nothing_behind(
    make_front_emulator: MakeEmulator, close_client_first: bool
) -> None:
    # The suite turns unclosed transports (ResourceWarning) into errors: stopping must close every socket.
    emu = await make_front_emulator(dispatch=False)
    channel = grpc.aio.insecure_channel(emu.host)
    await create_task(channel, b"x")
    if close_client_first:
        await channel.close()
    await emu.app.shutdown()  # the fixture's cleanup then stops the site with the channel in either state
    if not close_client_first:
        await channel.close()


async def test_a_connection_that_says_nothing_is_closed_in_time(
    make_front_emulator: MakeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frontdoor, "UNDECIDED_TIMEOUT_S", 0.05)
    emu = await make_front_emulator(dispatch=False)
    host, port = emu.host.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    # Then the server closes it (read returns EOF) without a byte from the client
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    await writer.wait_closed()


async def test_a_site_that_cannot_start_closes_what_it_opened(tmp_path: Path) -> None:
    # Given a --grpc-port another program listens on
    with socket.create_server(("127.0.0.1", 0)) as taken:
        settings = Settings(db_path=str(tmp_path / "t.sqlite3"), port=0, dispatch=False)
        app = create_app(replace(settings, grpc_port=taken.getsockname()[1]))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            sock = socket.create_server(("127.0.0.1", 0))
            site = frontdoor.FrontSite(runner, sock)
            # When the site starts, then it fails, its socket closed and its gRPC server stopped
            with pytest.raises(GrpcServerError):
                await site.start()
            assert sock.fileno() == -1
            assert site.grpc is None
        finally:
            await runner.cleanup()


async def test_stopping_closes_connections_that_have_not_spoken(tmp_path: Path) -> None:
    app = create_app(Settings(db_path=str(tmp_path / "t.sqlite3"), port=0, dispatch=False))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    site = frontdoor.FrontSite(runner, sock)
    await site.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
    try:
        writer.write(PREFACE[:5])  # undecided: it could still become HTTP/2
        await writer.drain()
        for _ in range(500):  # until the server has read them (bounded)
            if any(getattr(t.get_protocol(), "buffer", b"") for t in site.undecided):
                break
            await asyncio.sleep(0.01)
        assert site.undecided
        # When the emulator stops, that connection is closed too (nothing else would ever close it)
        await runner.cleanup()
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert not site.undecided
    finally:
        writer.close()
        await writer.wait_closed()
