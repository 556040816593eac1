"""gRPC on the wire: a raw HTTP/2 client (h2) holds the server to RFC 9113 and gRPC's PROTOCOL-HTTP2.md.

Only what those specs require is asserted, so any server implementation can be checked against it:
where they allow several answers (RST_STREAM or trailers, GOAWAY's error code), every one is accepted.
"""

from __future__ import annotations

import contextlib
import gzip
import struct

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from conftest import API, MakeEmulator
from deferred_emulator.app import settings_key
from deferred_emulator.guard import BodyLimits
from google.rpc import error_details_pb2
from h2.errors import ErrorCodes
from h2client import (
    DATA,
    END_HEADERS,
    END_STREAM,
    GRACE_S,
    HEADERS,
    INTERNAL,
    INVALID_ARGUMENT,
    MAX_FRAME,
    QUEUE,
    RESOURCE_EXHAUSTED,
    SERVICE,
    UNIMPLEMENTED,
    connect,
    create_request,
    framed,
    free_port,
    get_request,
    raw_frame,
    serves_anew,
    status_details,
    still_serves,
    task_of,
)
from test_conformance import ERRORS


@pytest.mark.parametrize("port", ["main", "grpc-port"])
async def test_a_create_task_call_is_framed_as_grpc_requires(make_front_emulator: MakeEmulator, port: str) -> None:
    grpc_port = free_port() if port == "grpc-port" else None
    emu = await make_front_emulator(dispatch=False, grpc_port=grpc_port)
    host = emu.host if grpc_port is None else f"127.0.0.1:{grpc_port}"
    async with connect(host) as wire:
        reply = await wire.call("CreateTask", framed(create_request(b"hello")))
        # One Task message between HEADERS (:status 200, application/grpc) and trailers carrying grpc-status 0
        task = task_of(reply)
        assert task.name.startswith(QUEUE + "/tasks/")
        assert "grpc-status" in reply.trailers and "grpc-status" not in (reply.headers or {})
        # And the task is really there, over the wire and over REST
        got = task_of(await wire.call("GetTask", framed(get_request(task.name))))
        assert (got.name, got.http_request.body) == (task.name, b"hello")
    assert (await emu.call("GET", f"/v2/{task.name}"))["name"] == task.name


async def test_a_ping_is_answered_with_the_same_bytes(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        for opaque in [b"12345678", b"\x00\xff" * 4]:
            wire.conn.ping(opaque)
            wire.flush()
            await wire.until(lambda: opaque in wire.pings)
        await still_serves(wire)


async def test_a_request_larger_than_the_initial_window_arrives_whole(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    body = bytes(range(256)) * 1200  # 300 KiB: over the 65,535-byte connection window every peer starts with
    async with connect(emu.host) as wire:
        # Sent only as the server grants window: without its WINDOW_UPDATEs the call never completes
        created = await wire.call("CreateTask", framed(create_request(body, full=True)))
        assert task_of(created).http_request.body == body
        got = await wire.call("GetTask", framed(get_request(task_of(created).name)))
        assert task_of(got).http_request.body == body
        # No DATA frame over the size the client allows (h2 would also have refused one)
        assert 0 < max(created.largest_frame, got.largest_frame) <= MAX_FRAME


@pytest.mark.parametrize("small", ["stream", "connection"])
async def test_answers_larger_than_the_client_windows_wait_for_window(
    make_front_emulator: MakeEmulator, small: str
) -> None:
    emu = await make_front_emulator(dispatch=False)
    body = bytes(range(256)) * 1200
    async with connect(emu.host) as wire:
        name = task_of(await wire.call("CreateTask", framed(create_request(body)))).name
    # A client whose streams start with 1 KiB of window (or 1 MiB, leaving the connection's 65,535 bytes
    # the limit), and that grants window only as DATA arrives: h2 raises if the server sends more than
    # a window allows or a frame over MAX_FRAME. Two answers share the connection's window.
    async with connect(emu.host, auto_ack=False, window=1024 if small == "stream" else 1 << 20) as wire:
        await wire.until(lambda: wire.settings_acks > 0)
        granted: list[int] = []

        def grant(event: h2.events.DataReceived) -> None:
            size = event.flow_controlled_length or 0
            if size:
                granted.append(size)
                wire.conn.increment_flow_control_window(size)
                if small == "stream" and event.stream_ended is None:
                    wire.conn.increment_flow_control_window(size, event.stream_id)

        wire.on_data = grant
        streams = [wire.start("GetTask") for _ in range(2)]
        for stream_id in streams:
            wire.conn.send_data(stream_id, framed(get_request(name)), end_stream=True)
        wire.flush()
        await wire.until(lambda: all(wire.replies[s].done for s in streams))
        for stream_id in streams:
            assert task_of(wire.replies[stream_id]).http_request.body == body
        largest = max(wire.replies[s].largest_frame for s in streams)
        assert largest <= (1024 if small == "stream" else MAX_FRAME)
        assert sum(granted) > 2 * len(body)


async def test_a_window_opened_by_settings_lets_an_answer_through(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    body = bytes(range(256)) * 100
    async with connect(emu.host) as wire:
        name = task_of(await wire.call("CreateTask", framed(create_request(body)))).name
    async with connect(emu.host, window=0) as wire:
        stream_id = wire.start("GetTask")
        await wire.send(stream_id, framed(get_request(name)))
        reply = wire.replies[stream_id]
        # With no window the server can send HEADERS (not flow-controlled) but no DATA (h2 would raise)
        with contextlib.suppress(TimeoutError):
            await wire.until(lambda: reply.headers is not None, GRACE_S)
        assert not reply.data and not reply.done
        # RFC 9113 §6.9.2: a new SETTINGS_INITIAL_WINDOW_SIZE changes the window of streams already open
        wire.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
        wire.flush()
        await wire.until(lambda: reply.done)
        assert task_of(reply).http_request.body == body


async def test_many_concurrent_streams_are_all_answered(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        count = min(50, wire.conn.remote_settings.max_concurrent_streams)
        assert count >= 10, "a server should allow a few concurrent streams (gRPC clients expect 100)"
        # Every stream opened and sent before anything is read
        streams = [wire.start("CreateTask") for _ in range(count)]
        for i, stream_id in enumerate(streams):
            wire.conn.send_data(stream_id, framed(create_request(str(i).encode(), full=True)), end_stream=True)
        wire.flush()
        await wire.until(lambda: all(wire.replies[s].done for s in streams))
        tasks = [task_of(wire.replies[s]) for s in streams]
    assert [t.http_request.body for t in tasks] == [str(i).encode() for i in range(count)]
    assert len({t.name for t in tasks}) == count
    listed = await emu.call("GET", f"{API}/queues/default/tasks?pageSize=1000")
    assert sorted(t["name"] for t in listed["tasks"]) == sorted(t.name for t in tasks)


@pytest.mark.parametrize("path", [f"{SERVICE}/NoSuchMethod", "/no.Such/Service"])
async def test_an_unknown_method_is_unimplemented(make_front_emulator: MakeEmulator, path: str) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        reply = await wire.call(path, framed(create_request()))
        assert reply.ended and reply.headers is not None and reply.headers[":status"] == "200"
        assert reply.status == UNIMPLEMENTED, (reply.status, reply.message)
        await still_serves(wire)


async def test_a_message_that_is_not_protobuf_is_invalid_argument(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        reply = await wire.call("CreateTask", framed(b"\xff\xff\xff\xff"))
        assert reply.status == INVALID_ARGUMENT
        assert reply.message == "The request is not a valid google.cloud.tasks.v2.CreateTaskRequest message."
        await still_serves(wire)


async def test_an_emulator_error_carries_its_status_details(make_front_emulator: MakeEmulator) -> None:
    [case] = [c for c in ERRORS if c["name"] == "task/create/invalid-name"]
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        reply = await wire.call("CreateTask", framed(create_request(name=f"{QUEUE}/tasks/not a valid id")))
        # Production's text, and grpc-status-details-bin: a google.rpc.Status (base64, padding optional)
        # that agrees with grpc-status and grpc-message and carries production's Help
        assert reply.status == INVALID_ARGUMENT
        assert reply.message == case["template"]
        status = status_details(reply)
        assert (status.code, status.message) == (INVALID_ARGUMENT, case["template"])
        assert [d.Is(error_details_pb2.Help.DESCRIPTOR) for d in status.details] == [True]
        await still_serves(wire)


async def test_an_error_text_beyond_ascii_is_percent_encoded(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    name = f"{QUEUE}/tasks/café ☕"
    rest = await emu.call(
        "POST", f"{API}/queues/default/tasks", {"task": {"name": name, "httpRequest": {"url": "https://x/"}}}, 400
    )
    text = rest["error"]["message"]
    assert "café ☕" in text
    async with connect(emu.host) as wire:
        reply = await wire.call("CreateTask", framed(create_request(name=name)))
        # PROTOCOL-HTTP2.md: grpc-message is the UTF-8 text with bytes outside %x20-%x7E (and "%") as %XX
        raw = reply.metadata("grpc-message") or ""
        assert all(0x20 <= ord(c) <= 0x7E for c in raw) and "CAF%C3%A9 %E2%98%95" in raw.upper(), raw
        assert (reply.status, reply.message) == (INVALID_ARGUMENT, text)
        assert status_details(reply).message == text


async def test_a_gzip_compressed_request_is_accepted(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        message = framed(gzip.compress(create_request(b"squeezed", full=True)), compressed=True)
        reply = await wire.call("CreateTask", message, [("grpc-encoding", "gzip")])
        assert task_of(reply).http_request.body == b"squeezed"


@pytest.mark.parametrize("encoding", [None, "snappy"])
async def test_a_compressed_message_the_server_cannot_read_is_refused(
    make_front_emulator: MakeEmulator, encoding: str | None
) -> None:
    emu = await make_front_emulator(dispatch=False)
    extra = [] if encoding is None else [("grpc-encoding", encoding)]
    async with connect(emu.host) as wire:
        reply = await wire.call("CreateTask", framed(create_request(), compressed=True), extra)
        # compression.md: a compressed flag without an encoding MUST fail with INTERNAL; an encoding the
        # server does not read with UNIMPLEMENTED (held to that alone below). A stream reset reads as
        # INTERNAL (PROTOCOL_ERROR, INTERNAL_ERROR).
        expected = (INTERNAL,) if encoding is None else (INTERNAL, UNIMPLEMENTED)
        assert reply.code in expected, (reply.status, reply.message, reply.reset)
        await still_serves(wire)
    listed = await emu.call("GET", f"{API}/queues/default/tasks")
    assert len(listed["tasks"]) == 1


async def test_an_unsupported_encoding_is_unimplemented_naming_those_supported(
    make_front_emulator: MakeEmulator,
) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        extra = [("grpc-encoding", "snappy")]
        reply = await wire.call("CreateTask", framed(create_request(), compressed=True), extra)
        # compression.md: UNIMPLEMENTED, with a grpc-accept-encoding that does not name the encoding used
        assert reply.status == UNIMPLEMENTED, (reply.status, reply.message)
        accepted = reply.metadata("grpc-accept-encoding")
        assert accepted is not None and "snappy" not in accepted.split(","), accepted


async def test_a_refused_header_value_does_not_spoil_later_calls(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        snappy = await wire.call("CreateTask", framed(create_request(), compressed=True), [("grpc-encoding", "snappy")])
        assert snappy.code in (INTERNAL, UNIMPLEMENTED)
        # h2 encodes this header's name as a reference to the dynamic table entry "grpc-encoding: snappy"
        # (RFC 7541 §6.2.1): decoded right, it is gzip, which the server reads
        message = framed(gzip.compress(create_request(b"after", full=True)), compressed=True)
        reply = await wire.call("CreateTask", message, [("grpc-encoding", "gzip")])
        assert task_of(reply).http_request.body == b"after"


async def test_a_stream_reset_halfway_leaves_the_connection_serving(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        message = framed(create_request(b"y" * 100_000))
        stream_id = wire.start("CreateTask")
        await wire.send(stream_id, message[: len(message) // 2], end=False)
        wire.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
        wire.flush()
        name = await still_serves(wire)
    # The cancelled request made no task
    listed = await emu.call("GET", f"{API}/queues/default/tasks")
    assert [t["name"] for t in listed["tasks"]] == [name]


async def test_a_message_over_the_size_limit_is_resource_exhausted(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    limit = BodyLimits.for_settings(emu.app[settings_key]).json_bytes
    async with connect(emu.host) as wire:
        stream_id = wire.start("CreateTask")
        # A length prefix over the limit, then as much of that message as the server reads before it answers
        await wire.send(stream_id, struct.pack(">BI", 0, limit + 1) + bytes(limit + 1))
        reply = wire.replies[stream_id]
        await wire.until(lambda: reply.done)
        # grpc-status 8, or a reset that reads as it (ENHANCE_YOUR_CALM)
        assert reply.code == RESOURCE_EXHAUSTED, (reply.status, reply.message, reply.reset)
        await still_serves(wire)
        # While a message of exactly the limit is read whole, and answered for what it is (zeros: no protobuf)
        at_limit = await wire.call("CreateTask", struct.pack(">BI", 0, limit) + bytes(limit))
        assert at_limit.status == INVALID_ARGUMENT, (at_limit.status, at_limit.message, at_limit.reset)


async def test_frames_of_an_unknown_type_are_ignored(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        # RFC 9113 §5.5: unknown frame types are ignored, on the connection and within a stream
        wire.write_raw(raw_frame(0xFA, 0xFF, 0, b"extension"))
        stream_id = wire.start("CreateTask")
        wire.write_raw(raw_frame(0xFB, 0, stream_id, b"more"))
        await wire.send(stream_id, framed(create_request(b"z", full=True)))
        reply = wire.replies[stream_id]
        await wire.until(lambda: reply.done)
        assert task_of(reply).http_request.body == b"z"
        assert not wire.goaways


async def test_headers_on_stream_zero_are_a_connection_error(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        block = wire.conn.encoder.encode(wire.request_headers("CreateTask"))
        wire.write_raw(raw_frame(HEADERS, END_HEADERS | END_STREAM, 0, block))
        assert await wire.dead()
    await serves_anew(emu.host)


async def test_data_on_an_idle_stream_is_a_connection_error(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        await still_serves(wire)  # stream 1; 99 is still idle
        wire.write_raw(raw_frame(DATA, END_STREAM, 99, framed(create_request())))
        # RFC 9113 §5.1: anything but HEADERS or PRIORITY on an idle stream is a PROTOCOL_ERROR
        assert await wire.dead()
    await serves_anew(emu.host)


async def test_a_stream_id_lower_than_one_opened_is_a_connection_error(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        stream_id = wire.start("CreateTask", stream_id=5)
        await wire.send(stream_id, framed(create_request()))
        await wire.until(lambda: wire.replies[stream_id].done)
        # Stream 3 after 5 (h2 will not open it: written by hand, with h2's header compression state)
        block = wire.conn.encoder.encode(wire.request_headers("CreateTask"))
        wire.write_raw(raw_frame(HEADERS, END_HEADERS, 3, block) + raw_frame(DATA, END_STREAM, 3, framed(b"")))
        # RFC 9113 §5.1.1: a connection error of type PROTOCOL_ERROR
        assert await wire.dead()
    listed = await emu.call("GET", f"{API}/queues/default/tasks")
    assert len(listed["tasks"]) == 1


async def test_the_server_opens_with_settings_and_acknowledges_the_clients(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        # The server's preface: a SETTINGS frame (not an ACK) on stream 0, before any other frame
        assert len(wire.received) >= 9
        kind, flags, stream_id = wire.received[3], wire.received[4], struct.unpack(">I", wire.received[5:9])[0]
        assert (kind, flags & 0x1, stream_id) == (0x4, 0, 0)
        await wire.until(lambda: wire.settings_acks == 1)
        # And SETTINGS sent later are acknowledged too
        wire.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100_000})
        wire.flush()
        await wire.until(lambda: wire.settings_acks == 2)
        await still_serves(wire)
