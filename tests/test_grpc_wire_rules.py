"""gRPC on the wire, continued: shutdown, the connection preface, header blocks, the frames and requests
no client may send (RFC 9113), and windows held by resets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import API, MakeEmulator
from deferred_emulator.api.common import runtime_key
from deferred_emulator.app import create_app
from deferred_emulator.frontdoor import FrontSite
from deferred_emulator.settings import Settings
from google.cloud import tasks_v2
from h2.errors import ErrorCodes
from h2client import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    OK,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    QUEUE,
    RST_STREAM,
    SERVICE,
    SETTINGS,
    UNIMPLEMENTED,
    WAIT_S,
    WINDOW_UPDATE,
    connect,
    create_request,
    framed,
    free_port,
    get_request,
    raw_frame,
    serves_anew,
    still_serves,
    taken_block,
    task_of,
)
from hpack.hpack import encode_integer


@dataclass
class OwnSite:
    """An emulator served as ``serve`` serves it, which the test stops itself (make_front_emulator stops its
    own at teardown)."""

    runner: web.AppRunner
    #: where gRPC is served: the main port, or --grpc-port when asked for.
    host: str
    stopping: asyncio.Future[None] | None = None

    def stop(self) -> asyncio.Future[None]:
        """Start stopping the server (once); the future of its stop."""
        if self.stopping is None:
            self.stopping = asyncio.ensure_future(self.runner.cleanup())
        return self.stopping


@contextlib.asynccontextmanager
async def own_site(tmp_path: Path, grpc_port: int | None = None) -> AsyncIterator[OwnSite]:
    """An emulator on a port of its own (and ``grpc_port``), stopped at the end if the test did not."""
    settings = Settings(db_path=str(tmp_path / "tasks.sqlite3"), port=0, dispatch=False, grpc_port=grpc_port)
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    site = OwnSite(runner, "")
    try:
        sock = socket.create_server(("127.0.0.1", 0))
        await FrontSite(runner, sock).start()
        site.host = f"127.0.0.1:{grpc_port or sock.getsockname()[1]}"
        yield site
    finally:
        await asyncio.wait_for(asyncio.shield(site.stop()), WAIT_S)


async def refusing(host: str) -> None:
    """Return once ``host`` refuses connections (a server stopping closes its listening socket first)."""
    address, port = host.rsplit(":", 1)
    async with asyncio.timeout(WAIT_S):
        for _ in range(10_000):
            try:
                _, writer = await asyncio.open_connection(address, int(port))
            except OSError:  # refused, or reset while the listening socket closed
                return
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            await asyncio.sleep(0.005)
    raise AssertionError(f"{host} still accepts connections")


@pytest.mark.parametrize("port", ["main", "grpc-port"])
async def test_stopping_the_server_closes_an_idle_connection(tmp_path: Path, port: str) -> None:
    async with own_site(tmp_path, free_port() if port == "grpc-port" else None) as site:
        async with connect(site.host) as wire:
            await still_serves(wire)
            stopping = site.stop()
            # The client sees GOAWAY (any code: a shutdown is no error) and/or the connection close
            await wire.until(lambda: wire.closed or bool(wire.goaways))
            # Stream 1 was answered: no GOAWAY may say it was not processed
            assert all(goaway.last_stream_id >= 1 for goaway in wire.goaways), wire.goaways
            await asyncio.wait_for(asyncio.shield(stopping), WAIT_S)
            # Nothing is left serving: the connection ends
            with contextlib.suppress(ConnectionError):
                await wire.until(lambda: wire.closed)


async def test_a_call_under_way_when_the_server_stops_is_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not RFC 9113's to require, but the emulator's promise: a stop lets the calls under way finish.
    async with own_site(tmp_path) as site:
        emulator = site.runner.app[runtime_key].emulator
        entered, release = asyncio.Event(), asyncio.Event()
        get_queue = emulator.get_queue

        async def held(*args: Any, **kwargs: Any) -> Any:
            entered.set()
            await release.wait()
            return await get_queue(*args, **kwargs)

        monkeypatch.setattr(emulator, "get_queue", held)
        async with connect(site.host) as wire:
            stream_id = wire.start("GetQueue")
            await wire.send(stream_id, framed(tasks_v2.GetQueueRequest.pb()(name=QUEUE).SerializeToString()))
            await asyncio.wait_for(entered.wait(), WAIT_S)
            stopping = site.stop()
            await refusing(site.host)
            release.set()
            reply = wire.replies[stream_id]
            await wire.until(lambda: reply.done)
            assert tasks_v2.Queue.pb().FromString(reply.ok()).name == QUEUE
            await asyncio.wait_for(asyncio.shield(stopping), WAIT_S)
            with contextlib.suppress(ConnectionError):
                await wire.until(lambda: wire.closed)


async def test_a_connection_not_opening_with_settings_is_an_error(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    # RFC 9113 §3.4: the client's preface is the fixed bytes AND a SETTINGS frame; anything else first
    # is a connection error (PROTOCOL_ERROR)
    async with connect(emu.host, opening=PREFACE + raw_frame(PING, 0, 0, b"notfirst")) as wire:
        assert await wire.dead()
    await serves_anew(emu.host)


async def test_many_calls_turn_the_header_tables_over(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        # Each call adds a header of its own (h2 indexes it): the server's 4,096-byte HPACK table evicts
        # as h2's does, many times over, while the same requests' blocks repeat in between
        names = []
        for i in range(120):
            extra = [("x-call", f"{i:04d}-" + "z" * 60)] if i % 3 else []
            reply = await wire.call("CreateTask", framed(create_request(str(i).encode(), full=True)), extra)
            task = task_of(reply)
            assert task.http_request.body == str(i).encode()
            names.append(task.name)
        got = await wire.call("GetTask", framed(get_request(names[0])))
        assert task_of(got).name == names[0]
    assert len(set(names)) == 120


async def test_padded_prioritised_and_continued_frames_are_read(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        stream_id = wire.conn.get_next_available_stream_id()
        block = taken_block(wire, stream_id, "CreateTask")
        third = len(block) // 3
        # HEADERS padded (7 bytes) with a priority (no dependency, weight 16), its block ending in two
        # CONTINUATION frames; then a PRIORITY frame (deprecated by RFC 9113, still to be read)
        headers = bytes([7]) + struct.pack(">IB", 0, 15) + block[:third] + bytes(7)
        wire.write_raw(
            raw_frame(HEADERS, PADDED | PRIORITY_FLAG, stream_id, headers)
            + raw_frame(CONTINUATION, 0, stream_id, block[third : 2 * third])
            + raw_frame(CONTINUATION, END_HEADERS, stream_id, block[2 * third :])
            + raw_frame(PRIORITY, 0, stream_id, struct.pack(">IB", 0, 200))
        )
        # And the message in two padded DATA frames
        message = framed(create_request(b"padded", full=True))
        wire.conn.send_data(stream_id, message[:10], pad_length=20)
        wire.conn.send_data(stream_id, message[10:], end_stream=True, pad_length=0)
        wire.flush()
        reply = wire.replies[stream_id]
        await wire.until(lambda: reply.done)
        assert task_of(reply).http_request.body == b"padded"
        await still_serves(wire)


async def test_a_request_ending_in_trailers_is_answered(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        stream_id = wire.start("CreateTask")
        wire.conn.send_data(stream_id, framed(create_request(b"trailed", full=True)))
        wire.conn.send_headers(stream_id, [("x-trailer", "1")], end_stream=True)
        wire.flush()
        reply = wire.replies[stream_id]
        await wire.until(lambda: reply.done)
        assert task_of(reply).http_request.body == b"trailed"


async def test_a_call_made_before_the_client_says_goaway_is_answered(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        stream_id = wire.start("CreateTask")
        wire.conn.send_data(stream_id, framed(create_request(b"last", full=True)), end_stream=True)
        # The client's GOAWAY (it will open no stream, and the server opened none): streams open go on
        wire.write_raw(raw_frame(GOAWAY, 0, 0, struct.pack(">II", 0, ErrorCodes.NO_ERROR)))
        reply = wire.replies[stream_id]
        await wire.until(lambda: reply.done)
        assert task_of(reply).http_request.body == b"last"


async def test_a_content_type_with_a_subtype_is_grpc_and_others_are_not(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        # PROTOCOL-HTTP2.md: "application/grpc" [("+proto" / "+json" / {custom})]
        sid = wire.start("CreateTask", stream_id=1, content_type="application/grpc+proto")
        await wire.send(sid, framed(create_request(b"proto", full=True)))
        await wire.until(lambda: wire.replies[sid].done)
        name = task_of(wire.replies[sid]).name
        # Anything else is not a gRPC call: the server SHOULD answer 415, and in no case serves it
        sid = wire.start("CreateTask", stream_id=3, content_type="application/json")
        await wire.send(sid, framed(create_request(b"json")))
        reply = wire.replies[sid]
        await wire.until(lambda: reply.done)
        assert reply.headers is None or reply.headers[":status"] == "415" or reply.code not in (None, OK), reply
        await still_serves(wire)
    listed = await emu.call("GET", f"{API}/queues/default/tasks")
    assert name in [t["name"] for t in listed["tasks"]] and len(listed["tasks"]) == 2


def setting(key: int, value: int) -> bytes:
    return struct.pack(">HI", key, value)


#: Frames a client must not send, each a connection error (RFC 9113 §4.2, §5.1, §6): written after stream 1.
CONNECTION_ERRORS = {
    "HEADERS on an even stream": lambda wire: raw_frame(HEADERS, END_HEADERS, 4, wire.conn.encoder.encode([])),
    "PUSH_PROMISE from a client": lambda wire: raw_frame(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 2)),
    "CONTINUATION without HEADERS": lambda wire: raw_frame(CONTINUATION, END_HEADERS, 3, b""),
    "PRIORITY on stream 0": lambda wire: raw_frame(PRIORITY, 0, 0, struct.pack(">IB", 0, 15)),
    "RST_STREAM on stream 0": lambda wire: raw_frame(RST_STREAM, 0, 0, struct.pack(">I", ErrorCodes.CANCEL)),
    "RST_STREAM on an idle stream": lambda wire: raw_frame(RST_STREAM, 0, 99, struct.pack(">I", ErrorCodes.CANCEL)),
    "WINDOW_UPDATE on an idle stream": lambda wire: raw_frame(WINDOW_UPDATE, 0, 99, struct.pack(">I", 1)),
    "WINDOW_UPDATE of 0 on the connection": lambda wire: raw_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)),
    "WINDOW_UPDATE past 2^31-1": lambda wire: raw_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 2**31 - 1)),
    "WINDOW_UPDATE of 3 bytes": lambda wire: raw_frame(WINDOW_UPDATE, 0, 0, b"\0\0\1"),
    "PING of 7 bytes": lambda wire: raw_frame(PING, 0, 0, b"1234567"),
    "PING on a stream": lambda wire: raw_frame(PING, 0, 1, b"12345678"),
    "SETTINGS on a stream": lambda wire: raw_frame(SETTINGS, 0, 1, b""),
    "SETTINGS of 5 bytes": lambda wire: raw_frame(SETTINGS, 0, 0, b"\0\4\0\0\1"),
    "SETTINGS ACK with a payload": lambda wire: raw_frame(SETTINGS, ACK, 0, setting(4, 1)),
    "SETTINGS_ENABLE_PUSH of 2": lambda wire: raw_frame(SETTINGS, 0, 0, setting(2, 2)),
    "SETTINGS_INITIAL_WINDOW_SIZE of 2^31": lambda wire: raw_frame(SETTINGS, 0, 0, setting(4, 2**31)),
    "SETTINGS_MAX_FRAME_SIZE below 16,384": lambda wire: raw_frame(SETTINGS, 0, 0, setting(5, 16_383)),
    "SETTINGS_MAX_FRAME_SIZE of 2^24": lambda wire: raw_frame(SETTINGS, 0, 0, setting(5, 2**24)),
}


@pytest.mark.parametrize("case", list(CONNECTION_ERRORS))
async def test_a_frame_no_client_may_send_is_a_connection_error(make_front_emulator: MakeEmulator, case: str) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        await still_serves(wire)  # stream 1, closed; 3 and up idle
        wire.write_raw(CONNECTION_ERRORS[case](wire))
        assert await wire.dead()
    await serves_anew(emu.host)


async def test_an_interrupted_header_block_is_a_connection_error(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        stream_id = wire.conn.get_next_available_stream_id()
        block = taken_block(wire, stream_id, "CreateTask")
        # RFC 9113 §6.10: nothing but the stream's CONTINUATION may follow HEADERS without END_HEADERS
        wire.write_raw(
            raw_frame(HEADERS, 0, stream_id, block[:10])
            + raw_frame(PING, 0, 0, b"between!")
            + raw_frame(CONTINUATION, END_HEADERS, stream_id, block[10:])
        )
        assert await wire.dead()


async def test_a_frame_over_the_servers_max_frame_size_is_an_error(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        limit = wire.conn.remote_settings.max_frame_size
        stream_id = wire.conn.get_next_available_stream_id()
        # The request's headers and one more, longer than the limit: a literal never indexed (RFC 7541
        # §6.2.3) written by hand, as h2's own encoder would take long to Huffman-code a large one
        value = b"a" * limit
        big = b"\x10" + bytes(encode_integer(5, 7)) + b"x-big" + bytes(encode_integer(len(value), 7)) + value
        block = taken_block(wire, stream_id, "CreateTask") + big
        # RFC 9113 §4.2: a frame carrying a field block over SETTINGS_MAX_FRAME_SIZE is a connection error
        wire.write_raw(raw_frame(HEADERS, END_HEADERS | END_STREAM, stream_id, block))
        assert await wire.dead()
    await serves_anew(emu.host)


async def test_a_stream_over_the_concurrency_limit_is_refused(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        # The server advertises a limit (RFC 9113 leaves it unbounded otherwise: nothing to refuse)
        limit = wire.conn.remote_settings.max_concurrent_streams
        assert limit <= 1000, limit
        # As many calls as the server allows, left open (their messages not sent yet)
        held = [wire.start("CreateTask") for _ in range(limit)]
        # RFC 9113 §5.1.2: one more is a stream error, PROTOCOL_ERROR or REFUSED_STREAM (safe to retry)
        extra = wire.open_raw(wire.request_headers("CreateTask"))
        await wire.until(lambda: wire.replies[extra].done)
        assert wire.replies[extra].reset in (ErrorCodes.PROTOCOL_ERROR, ErrorCodes.REFUSED_STREAM), wire.replies[extra]
        # And the calls held open are all served
        for i, stream_id in enumerate(held):
            wire.conn.send_data(stream_id, framed(create_request(str(i).encode(), full=True)), end_stream=True)
        wire.flush()
        await wire.until(lambda: all(wire.replies[s].done for s in held))
        assert [task_of(wire.replies[s]).http_request.body for s in held] == [str(i).encode() for i in range(limit)]
        await still_serves(wire)


#: Requests RFC 9113 §8.2 and §8.3 call malformed: the server answers them with a stream error (or an error
#: response before closing the stream), never as calls.
MALFORMED: dict[str, Callable[[list[tuple[str, str]]], list[tuple[str, str]]]] = {
    "a connection-specific header": lambda headers: [*headers, ("connection", "keep-alive")],
    "TE other than trailers": lambda headers: [(k, "gzip" if k == "te" else v) for k, v in headers],
    "an uppercase header name": lambda headers: [*headers, ("X-Upper", "1")],
    "no :path": lambda headers: [(k, v) for k, v in headers if k != ":path"],
    "no :scheme": lambda headers: [(k, v) for k, v in headers if k != ":scheme"],
    "a pseudo-header after a regular one": lambda headers: [
        *[(k, v) for k, v in headers if k != ":path"],
        *[(k, v) for k, v in headers if k == ":path"],
    ],
    "an unknown pseudo-header": lambda headers: [(":fancy", "yes"), *headers],
    "a repeated :path": lambda headers: [*headers[:3], *headers[2:]],
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_a_malformed_request_is_not_served(make_front_emulator: MakeEmulator, case: str) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        stream_id = wire.open_raw(MALFORMED[case](wire.request_headers("CreateTask")), end_stream=False)
        wire.write_raw(raw_frame(DATA, END_STREAM, stream_id, framed(create_request(b"malformed"))))
        reply = wire.replies[stream_id]
        await wire.until(lambda: reply.done or bool(wire.goaways))
        assert wire.goaways or reply.reset is not None or reply.code not in (None, OK), reply
    listed = await emu.call("GET", f"{API}/queues/default/tasks")
    assert listed.get("tasks", []) == []
    await serves_anew(emu.host)


async def test_a_stream_reset_while_its_answer_waits_for_window_gets_no_more_of_it(
    make_front_emulator: MakeEmulator,
) -> None:
    emu = await make_front_emulator(dispatch=False)
    body = bytes(range(256)) * 1200
    async with connect(emu.host) as wire:
        name = task_of(await wire.call("CreateTask", framed(create_request(body)))).name
    # A client that grants no window back: the answer's first 65,535 bytes (the connection's window) come
    async with connect(emu.host, auto_ack=False, window=1 << 20) as wire:
        first = wire.start("GetTask")
        await wire.send(first, framed(get_request(name)))
        await wire.until(lambda: len(wire.replies[first].data) >= 65_535)
        # Then the client cancels, and a PING behind its RST_STREAM tells when the server has read it
        wire.conn.reset_stream(first, ErrorCodes.CANCEL)
        wire.conn.ping(b"after-rs")
        wire.flush()
        await wire.until(lambda: b"after-rs" in wire.pings)
        read_then = len(wire.data_frames)
        # RFC 9113 §6.4: no more frames on the stream; the window now granted serves the next call alone
        wire.auto_ack = True
        wire.conn.increment_flow_control_window(65_535)
        second = await wire.call("GetTask", framed(get_request(name)))
        assert task_of(second).http_request.body == body
        assert first not in wire.data_frames[read_then:]


async def test_a_large_request_to_an_unknown_method_is_answered(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        # 2 MiB, more than any window a server opens at first: it must keep granting window (or reset the
        # stream once answered) so that the connection is not left without window for the next call
        reply = await wire.call(f"{SERVICE}/NoSuchMethod", framed(bytes(2 << 20)))
        assert reply.code == UNIMPLEMENTED, (reply.status, reply.message, reply.reset)
        await still_serves(wire)
