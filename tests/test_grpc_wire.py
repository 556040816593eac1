"""gRPC on the wire: a raw HTTP/2 client (h2) holds the server to RFC 9113 and gRPC's PROTOCOL-HTTP2.md.

Only what those specs require is asserted, so any server implementation can be checked against it:
where they allow several answers (RST_STREAM or trailers, GOAWAY's error code), every one is accepted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from aiohttp import web
from conftest import API, MakeEmulator
from deferred_emulator.api.common import runtime_key
from deferred_emulator.app import create_app, settings_key
from deferred_emulator.frontdoor import FrontSite
from deferred_emulator.guard import BodyLimits
from deferred_emulator.settings import Settings
from google.cloud import tasks_v2
from google.rpc import error_details_pb2, status_pb2
from h2.errors import ErrorCodes
from hpack.hpack import encode_integer
from test_conformance import ERRORS

QUEUE = f"{API.removeprefix('/v2/')}/queues/default"
SERVICE = "/google.cloud.tasks.v2.CloudTasks"
#: Seconds any one exchange may take before the server is deemed hung.
WAIT_S = 20.0
#: Seconds a server that has read a frame gets to act on it.
GRACE_S = 1.0
#: HTTP/2's default SETTINGS_MAX_FRAME_SIZE, which the client never raises here.
MAX_FRAME = 16_384
#: What every HTTP/2 client sends first (RFC 9113 §3.4), before its SETTINGS.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: Frame types and flags written by hand (RFC 9113 §6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
ACK, END_STREAM, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
#: gRPC status codes.
OK, CANCELLED, INVALID_ARGUMENT, PERMISSION_DENIED, RESOURCE_EXHAUSTED = 0, 1, 3, 7, 8
UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 12, 13, 14
#: The status a client reads from a stream reset without grpc-status (PROTOCOL-HTTP2.md, "Errors").
RST_STREAM_CODES: dict[int, int] = {
    ErrorCodes.NO_ERROR: INTERNAL,
    ErrorCodes.PROTOCOL_ERROR: INTERNAL,
    ErrorCodes.INTERNAL_ERROR: INTERNAL,
    ErrorCodes.FLOW_CONTROL_ERROR: INTERNAL,
    ErrorCodes.SETTINGS_TIMEOUT: INTERNAL,
    ErrorCodes.FRAME_SIZE_ERROR: INTERNAL,
    ErrorCodes.REFUSED_STREAM: UNAVAILABLE,
    ErrorCodes.CANCEL: CANCELLED,
    ErrorCodes.COMPRESSION_ERROR: INTERNAL,
    ErrorCodes.CONNECT_ERROR: INTERNAL,
    ErrorCodes.ENHANCE_YOUR_CALM: RESOURCE_EXHAUSTED,
    ErrorCodes.INADEQUATE_SECURITY: PERMISSION_DENIED,
}


def header_dict(headers: Iterable[tuple[str | bytes, str | bytes]] | None) -> dict[str, str]:
    """h2's decoded header list as a dict (the client decodes them as UTF-8: all are str)."""
    return {str(name): str(value) for name, value in headers or ()}


@dataclass
class GoAway:
    """A GOAWAY the server sent."""

    error_code: int
    last_stream_id: int


@dataclass
class Reply:
    """What the server sent on one stream."""

    headers: dict[str, str] | None = None
    data: bytearray = field(default_factory=bytearray)
    trailers: dict[str, str] = field(default_factory=dict)
    ended: bool = False
    reset: int | None = None
    largest_frame: int = 0

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None

    @property
    def status(self) -> int | None:
        """grpc-status, from the trailers or a Trailers-Only response's headers."""
        value = self.trailers.get("grpc-status") or (self.headers or {}).get("grpc-status")
        return None if value is None else int(value)

    @property
    def message(self) -> str:
        """grpc-message, percent-decoded."""
        raw = self.trailers.get("grpc-message") or (self.headers or {}).get("grpc-message") or ""
        return unquote(raw, errors="strict")

    @property
    def code(self) -> int | None:
        """The call's gRPC status code: grpc-status, else what PROTOCOL-HTTP2.md maps a RST_STREAM's code to."""
        if self.status is not None or self.reset is None:
            return self.status
        return RST_STREAM_CODES.get(self.reset)

    def metadata(self, key: str) -> str | None:
        return self.trailers.get(key) or (self.headers or {}).get(key)

    def messages(self) -> list[bytes]:
        """The length-prefixed messages of the DATA received, decompressed."""
        found, data = [], bytes(self.data)
        while data:
            assert len(data) >= 5, f"a partial message prefix: {data!r}"
            compressed, length = struct.unpack(">BI", data[:5])
            body, data = data[5 : 5 + length], data[5 + length :]
            assert len(body) == length, f"a message of {len(body)} bytes announced as {length}"
            if compressed:
                encoding = (self.headers or {}).get("grpc-encoding")
                assert encoding in ("gzip", "deflate"), f"a compressed message, encoding {encoding!r}"
                body = gzip.decompress(body) if encoding == "gzip" else zlib.decompress(body)
            found.append(body)
        return found

    def ok(self) -> bytes:
        """The one message of a successful call, after checking the call's framing."""
        # RFC 9113 §8.1: a server may reset the stream (NO_ERROR) once its response is complete
        assert self.ended and self.reset in (None, ErrorCodes.NO_ERROR), self
        assert self.headers is not None and self.headers[":status"] == "200", self.headers
        assert self.headers["content-type"].startswith("application/grpc"), self.headers
        assert self.status == OK, (self.status, self.message)
        [message] = self.messages()
        return message


class Wire:
    """One HTTP/2 connection driven by hand: frames go out as written and come back as h2 events."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, authority: str, auto_ack: bool):
        self.reader, self.writer, self.authority = reader, writer, authority
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        #: grant flow-control window back as soon as DATA arrives (else the test grants it).
        self.auto_ack = auto_ack
        self.replies: dict[int, Reply] = {}
        self.received = bytearray()  # the first bytes from the server, kept for the preface check
        self.pings: list[bytes] = []
        self.settings_acks = 0
        self.remote_settings = 0
        self.goaways: list[GoAway] = []
        self.pending = bytearray()  # bytes of a frame not yet whole
        #: the stream of every DATA frame received, in order.
        self.data_frames: list[int] = []
        #: streams opened by hand, which h2 does not know: their frames are read here.
        self.raw_streams: set[int] = set()
        self.closed = False
        self.on_data: Callable[[h2.events.DataReceived], None] | None = None

    def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())

    def write_raw(self, data: bytes) -> None:
        """Bytes h2 would not write: the server sees them between h2's own frames."""
        self.flush()
        self.writer.write(data)

    async def pump(self) -> None:
        """Read once from the server and handle the whole frames that arrived."""
        try:
            data = await self.reader.read(65_536)
        except ConnectionError:  # reset by the server: as much a close as an EOF
            data = b""
        if not data:
            self.closed = True
            return
        if len(self.received) < 64:
            self.received += data[:64]
        self.pending += data
        for _ in range(len(self.pending) // 9 + 1):
            length = int.from_bytes(self.pending[:3], "big")
            if len(self.pending) < 9 + length:
                break
            frame = bytes(self.pending[: 9 + length])
            del self.pending[: 9 + length]
            self.frame(frame)
        self.flush()
        try:
            await self.writer.drain()
        except ConnectionError:
            self.closed = True

    def frame(self, frame: bytes) -> None:
        """One frame from the server: to h2 (one at a time, so each event is handled in its frame's order)."""
        if frame[3] == DATA:
            self.data_frames.append(int.from_bytes(frame[5:9], "big") & 0x7FFF_FFFF)
        if int.from_bytes(frame[5:9], "big") & 0x7FFF_FFFF in self.raw_streams:
            self.raw_frame_in(frame)
            return
        if not self.goaways:
            for event in self.conn.receive_data(frame):
                self.handle(event)
            return
        # After a GOAWAY h2 takes no more frames, though a server may send more (RFC 9113 §6.8: a
        # graceful shutdown is GOAWAY, PING, GOAWAY): another GOAWAY is noted, a PING answered.
        kind, flags, payload = frame[3], frame[4], frame[9:]
        if kind == GOAWAY:
            last_stream_id, error_code = struct.unpack(">II", payload[:8])
            self.goaways.append(GoAway(error_code, last_stream_id & 0x7FFF_FFFF))
        elif kind == PING and not flags & ACK:
            self.write_raw(raw_frame(PING, ACK, 0, payload))

    def open_raw(self, headers: Sequence[tuple[str, str]], end_stream: bool = True) -> int:
        """Open a stream h2 would not (headers it would not send, a stream over the server's limit); its id.

        The header block is h2's encoder's, so the server's HPACK table stays the one h2 expects.
        """
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.highest_outbound_stream_id = stream_id  # so that h2 opens the next one above it
        self.raw_streams.add(stream_id)
        self.replies[stream_id] = Reply()
        flags = END_HEADERS | (END_STREAM if end_stream else 0)
        self.write_raw(raw_frame(HEADERS, flags, stream_id, self.conn.encoder.encode(headers)))
        return stream_id

    def raw_frame_in(self, frame: bytes) -> None:
        """A frame on a stream opened by hand (the server sends these unpadded, its blocks whole)."""
        kind, flags, stream_id, payload = frame[3], frame[4], int.from_bytes(frame[5:9], "big"), frame[9:]
        reply = self.replies[stream_id]
        if kind == HEADERS:
            assert flags & END_HEADERS and not flags & (PADDED | PRIORITY_FLAG), frame[:9]
            fields = header_dict(self.conn.decoder.decode(payload))
            if reply.headers is None:
                reply.headers = fields
            else:
                reply.trailers = fields
        elif kind == DATA:
            assert not flags & PADDED, frame[:9]
            reply.data += payload
            if payload:  # h2 did not count these bytes: the connection's window is given back here
                self.write_raw(raw_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", len(payload))))
        elif kind == RST_STREAM:
            reply.reset = struct.unpack(">I", payload)[0]
        if kind in (HEADERS, DATA) and flags & END_STREAM:
            reply.ended = True

    def handle(self, event: h2.events.Event) -> None:
        stream_id = getattr(event, "stream_id", 0)
        reply = self.replies.setdefault(stream_id, Reply()) if stream_id else None
        if isinstance(event, h2.events.ResponseReceived):
            assert reply is not None
            reply.headers = header_dict(event.headers)
        elif isinstance(event, h2.events.TrailersReceived):
            assert reply is not None
            reply.trailers = header_dict(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            assert reply is not None and event.data is not None
            reply.data += event.data
            reply.largest_frame = max(reply.largest_frame, len(event.data))
            if self.on_data is not None:
                self.on_data(event)
            elif self.auto_ack and event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            assert reply is not None
            reply.ended = True
        elif isinstance(event, h2.events.StreamReset):
            assert reply is not None
            reply.reset = event.error_code
        elif isinstance(event, h2.events.PingAckReceived):
            assert event.ping_data is not None
            self.pings.append(event.ping_data)
        elif isinstance(event, h2.events.SettingsAcknowledged):
            self.settings_acks += 1
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.remote_settings += 1
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaways.append(GoAway(event.error_code or 0, event.last_stream_id or 0))

    async def until(self, done: Callable[[], bool], timeout: float = WAIT_S) -> None:
        """Read until ``done()`` (or the connection ends: then ``done()`` must hold anyway)."""
        async with asyncio.timeout(timeout):
            for _ in range(1_000_000):
                if done():
                    return
                if self.closed:
                    break
                await self.pump()
        assert done(), "the server closed the connection"

    async def dead(self) -> bool:
        """Whether the server ends the connection for the frame just written: GOAWAY with an error code, or a close.

        A PING written behind the frame bounds the wait: a server that answers it has read past the frame,
        and gets GRACE_S more to act on it.
        """
        opaque = b"bad-then"
        self.conn.ping(opaque)
        self.flush()

        def ended() -> bool:
            return self.closed or bool(self.goaways)

        with contextlib.suppress(TimeoutError, ConnectionError):
            await self.until(lambda: ended() or opaque in self.pings)
            await self.until(ended, GRACE_S)
        if self.goaways:
            return any(goaway.error_code != ErrorCodes.NO_ERROR for goaway in self.goaways)
        return self.closed

    def request_headers(
        self, method: str, extra: Sequence[tuple[str, str]] = (), content_type: str = "application/grpc"
    ) -> list[tuple[str, str]]:
        path = method if method.startswith("/") else f"{SERVICE}/{method}"
        return [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", self.authority),
            ("content-type", content_type),
            ("te", "trailers"),
            *extra,
        ]

    def start(
        self,
        method: str,
        extra: Sequence[tuple[str, str]] = (),
        stream_id: int | None = None,
        content_type: str = "application/grpc",
    ) -> int:
        """Open a stream for ``method`` (a name of CloudTasks, or a path); its id."""
        stream_id = stream_id or self.conn.get_next_available_stream_id()
        self.replies[stream_id] = Reply()
        self.conn.send_headers(stream_id, self.request_headers(method, extra, content_type))
        self.flush()
        return stream_id

    async def send(self, stream_id: int, data: bytes, end: bool = True) -> None:
        """Send ``data`` on a stream within the server's flow-control windows (waiting for them to open)."""
        reply, sent = self.replies[stream_id], 0
        async with asyncio.timeout(WAIT_S * 3):
            for _ in range(1_000_000):
                if sent == len(data) or reply.done:
                    break
                window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
                if window <= 0:
                    await self.pump()
                    continue
                self.conn.send_data(stream_id, data[sent : sent + window])
                sent += min(window, len(data) - sent)
                self.flush()
                await self.writer.drain()
        if end and not reply.done:
            self.conn.end_stream(stream_id)
            self.flush()

    async def call(self, method: str, message: bytes, extra: Sequence[tuple[str, str]] = ()) -> Reply:
        """A whole unary call: ``message`` (already framed) sent, the reply read."""
        stream_id = self.start(method, extra)
        await self.send(stream_id, message)
        reply = self.replies[stream_id]
        await self.until(lambda: reply.done)
        return reply


@contextlib.asynccontextmanager
async def connect(
    host: str, auto_ack: bool = True, window: int | None = None, opening: bytes | None = None
) -> AsyncIterator[Wire]:
    """An HTTP/2 connection to ``host`` (``HOST:PORT``), its preface exchanged; closed at the end.

    ``window``: the SETTINGS_INITIAL_WINDOW_SIZE the client announces for its streams. ``opening``:
    bytes written instead of h2's preface (which h2 then believes it sent), and not waited on.
    """
    address, port = host.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(address, int(port))
    wire = Wire(reader, writer, host, auto_ack)
    try:
        if window is not None:
            initial = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
            wire.conn.local_settings = h2.settings.Settings(client=True, initial_values=initial)
        wire.conn.initiate_connection()
        if opening is None:
            wire.flush()
            await wire.until(lambda: wire.remote_settings > 0)
        else:
            wire.conn.data_to_send()
            wire.write_raw(opening)
        yield wire
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def framed(message: bytes, compressed: bool = False) -> bytes:
    """A gRPC length-prefixed message."""
    return struct.pack(">BI", int(compressed), len(message)) + message


def create_request(body: bytes = b"x", name: str = "", full: bool = False) -> bytes:
    """A serialized CreateTaskRequest for an HTTP task on QUEUE."""
    request = tasks_v2.CreateTaskRequest.pb()(parent=QUEUE)
    request.task.http_request.url = "https://example.com/"
    request.task.http_request.body = body
    if name:
        request.task.name = name
    if full:
        request.response_view = tasks_v2.Task.View.FULL
    return bytes(request.SerializeToString())


def get_request(name: str) -> bytes:
    """A serialized GetTaskRequest, FULL view."""
    request = tasks_v2.GetTaskRequest.pb()(name=name, response_view=tasks_v2.Task.View.FULL)
    return bytes(request.SerializeToString())


def task_of(reply: Reply) -> Any:
    """The Task a successful call answered."""
    return tasks_v2.Task.pb().FromString(reply.ok())


def raw_frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """An HTTP/2 frame as bytes (RFC 9113 §4.1)."""
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id) + payload


async def still_serves(wire: Wire) -> str:
    """A normal CreateTask on ``wire`` succeeds; the task's name."""
    name = str(task_of(await wire.call("CreateTask", framed(create_request()))).name)
    assert name.startswith(QUEUE + "/tasks/")
    return name


def status_details(reply: Reply) -> Any:
    """The google.rpc.Status in a reply's grpc-status-details-bin (base64, padded or not)."""
    raw = reply.metadata("grpc-status-details-bin")
    assert raw is not None, "no grpc-status-details-bin"
    return status_pb2.Status.FromString(base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True))


def taken_block(wire: Wire, stream_id: int, method: str, extra: Sequence[tuple[str, str]] = ()) -> bytes:
    """Open a stream through h2 (so that it knows the stream) but take back what h2 wrote: the header block,
    for the test to frame by hand (h2's HPACK table, which the server's mirrors, is as if it was sent)."""
    wire.flush()
    wire.replies[stream_id] = Reply()
    wire.conn.send_headers(stream_id, wire.request_headers(method, extra))
    written, block = wire.conn.data_to_send(), b""
    for _ in range(len(written) // 9):
        if not written:
            break
        length = int.from_bytes(written[:3], "big")
        assert written[3] in (HEADERS, CONTINUATION) and not written[4] & (PADDED | PRIORITY_FLAG), written[:9]
        block, written = block + written[9 : 9 + length], written[9 + length :]
    return block


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    async with connect(emu.host) as wire:
        await still_serves(wire)


async def test_data_on_an_idle_stream_is_a_connection_error(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        await still_serves(wire)  # stream 1; 99 is still idle
        wire.write_raw(raw_frame(DATA, END_STREAM, 99, framed(create_request())))
        # RFC 9113 §5.1: anything but HEADERS or PRIORITY on an idle stream is a PROTOCOL_ERROR
        assert await wire.dead()
    async with connect(emu.host) as wire:
        await still_serves(wire)


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
    async with connect(emu.host) as wire:
        await still_serves(wire)


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
    async with connect(emu.host) as wire:
        await still_serves(wire)


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
    async with connect(emu.host) as wire:
        await still_serves(wire)


async def test_a_stream_over_the_concurrency_limit_is_refused(make_front_emulator: MakeEmulator) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with connect(emu.host) as wire:
        limit = wire.conn.remote_settings.max_concurrent_streams
        if limit > 1000:
            pytest.skip(f"the server allows {limit} concurrent streams: too many to open here")
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
    async with connect(emu.host) as wire:
        await still_serves(wire)


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
