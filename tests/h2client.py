"""A raw HTTP/2 client for the gRPC wire tests: h2 driven by hand over asyncio, every wait bounded."""

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
from typing import Any
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.events
import h2.settings
from conftest import API
from google.cloud import tasks_v2
from google.rpc import status_pb2
from h2.errors import ErrorCodes

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


async def serves_anew(host: str) -> None:
    """A new connection is served (after one the server ended)."""
    async with connect(host) as wire:
        await still_serves(wire)


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
