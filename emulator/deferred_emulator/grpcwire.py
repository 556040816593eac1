"""gRPC over HTTP/2, for unary calls (every method Cloud Tasks has): frames read and written here.

grpcio's asyncio server cost about 650 us of CPU per call, four times what the same CreateTask costs
over REST; a prototype on the ``h2`` library's state machine took about 220 us a call with a handler
that did nothing, against 73 us framed by hand. This protocol does what a unary gRPC server needs of
RFC 9113 and no more: the preface and SETTINGS, HEADERS with CONTINUATION and padding (decoded by
``hpack``, checked by ``h2fields``), DATA with flow control both ways, PING, RST_STREAM,
WINDOW_UPDATE and GOAWAY; frames of unknown types are ignored, as the RFC asks. It sends no server
push and no priorities, and it answers each stream's one request message with one response
message (or a status alone), per gRPC's HTTP/2 protocol. Compressed requests (gzip, deflate) are
read; answers are never compressed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence

from hpack import HPACKError

from . import h2frames as h2
from .api.grpc.status import error_trailers
from .eager import run_eagerly
from .grpcrequest import Call, Refusal, call_of, too_large
from .h2fields import HeaderReader

logger = logging.getLogger(__name__)

#: Streams a client may have open at once; more are refused (it retries them).
MAX_STREAMS = 100
#: How much a client may send ahead, per stream and on the connection; topped up at half used.
RECV_WINDOW = 1 << 20
#: A header block, CONTINUATION frames included, is never longer than this.
MAX_HEADER_BLOCK = 64 * 1024
OK_HEADERS = h2.header_block([(b":status", b"200"), (b"content-type", b"application/grpc")])
OK_TRAILERS = h2.header_block([(b"grpc-status", b"0")])


class Wires:
    """What the gRPC connections of one server share: the methods, the largest request, the open connections."""

    def __init__(self, methods: Mapping[bytes, Call], max_message: int) -> None:
        self.methods = methods
        self.max_message = max_message
        self.open: set[GrpcWire] = set()
        self.closing = False

    async def close(self, timeout_s: float = 5.0) -> None:
        """Let calls under way finish (for at most ``timeout_s``), then say GOAWAY and close every connection."""
        self.closing = True
        busy = [s.task for wire in self.open for s in wire.streams.values() if s.task is not None]
        if busy:
            await asyncio.wait(busy, timeout=timeout_s)
        for wire in list(self.open):
            wire.go_away(h2.NO_ERROR)


class Stream:
    """One call: its request as it arrives, and its answer while the client's window holds it back."""

    __slots__ = ("id", "headers", "body", "unacked", "send_window", "ended", "task", "pending", "trailers", "reset")

    def __init__(self, stream_id: int, send_window: int) -> None:
        self.id = stream_id
        self.headers: dict[bytes, bytes] = {}
        self.body = bytearray()
        #: bytes received and not yet granted back.
        self.unacked = 0
        self.send_window = send_window
        #: the client has sent all it will (END_STREAM).
        self.ended = False
        self.task: asyncio.Future[None] | None = None
        #: response DATA not sent yet (flow control), and the trailers to send after it.
        self.pending = memoryview(b"")
        self.trailers = b""
        #: the client reset it, or the answer was refused: nothing more is sent.
        self.reset = False


class GrpcWire(asyncio.Protocol):
    """One HTTP/2 connection carrying unary gRPC calls."""

    def __init__(self, wires: Wires) -> None:
        self.wires = wires
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        #: the preface's fixed bytes came, and then its SETTINGS frame.
        self.preface = False
        self.opened = False
        self.header_reader = HeaderReader()
        self.streams: dict[int, Stream] = {}
        #: the highest stream id the client has opened.
        self.last_stream = 0
        #: (stream id, END_STREAM flag, block so far) while CONTINUATION frames are due.
        self.continuing: tuple[int, int, bytearray] | None = None
        #: what the client's connection window still lets us send.
        self.send_window = h2.DEFAULT_WINDOW
        #: the client's SETTINGS: each new stream's window, and the largest frame it takes.
        self.peer_window = h2.DEFAULT_WINDOW
        self.peer_max_frame = h2.DEFAULT_MAX_FRAME
        #: bytes received on the connection and not yet granted back.
        self.unacked = 0
        #: frames made while reading, written together when the read is done (None: write at once).
        self.out: list[bytes] | None = None
        self.failed = False
        self.readers: dict[int, Callable[[int, int, bytes], None]] = {
            h2.DATA: self._data,
            h2.HEADERS: self._headers,
            h2.PRIORITY: self._priority,
            h2.RST_STREAM: self._rst_stream,
            h2.SETTINGS: self._settings,
            h2.PUSH_PROMISE: self._push_promise,
            h2.PING: self._ping,
            h2.GOAWAY: self._goaway,
            h2.WINDOW_UPDATE: self._window_update,
            h2.CONTINUATION: self._continuation,
        }

    # -- the connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Say our SETTINGS and open the connection's window wide."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.wires.open.add(self)
        ours = {h2.SETTINGS_MAX_CONCURRENT_STREAMS: MAX_STREAMS, h2.SETTINGS_INITIAL_WINDOW_SIZE: RECV_WINDOW}
        transport.write(h2.settings_frame(ours) + h2.window_update(0, RECV_WINDOW - h2.DEFAULT_WINDOW))

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection; calls under way finish, and their answers go nowhere."""
        self.wires.open.discard(self)
        self.transport = None

    def eof_received(self) -> bool:
        """The client will send no more: close."""
        return False

    def pause_writing(self) -> None:
        """The client reads slower than it asks: read nothing more until it catches up (HEADERS and
        PING answers are not flow-controlled, so only this bounds what waits to be sent)."""
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        """The client caught up: read again."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def go_away(self, code: int, debug: bytes = b"") -> None:
        """Say GOAWAY (streams after the last one opened were not served) and close."""
        self.failed = True
        self._send(h2.goaway(self.last_stream, code, debug))
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def _send(self, frame: bytes) -> None:
        if self.out is not None:
            self.out.append(frame)
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def _flush(self) -> None:
        out, self.out = self.out, None
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    # -- reading frames ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Read every whole frame that has arrived, and answer what can be answered at once."""
        if self.failed:
            return
        buffer = self.buffer
        buffer += data
        if not self.preface:
            if len(buffer) < len(h2.PREFACE):
                return
            if buffer[: len(h2.PREFACE)] != h2.PREFACE:
                self.go_away(h2.PROTOCOL_ERROR, b"no HTTP/2 connection preface")
                return
            del buffer[: len(h2.PREFACE)]
            self.preface = True
        self.out = []
        pos, size = 0, len(buffer)
        try:
            while size - pos >= 9 and not self.failed:
                length_kind, flags, stream = h2.HEAD.unpack_from(buffer, pos)
                length = length_kind >> 8
                if length > h2.DEFAULT_MAX_FRAME:  # we never raise SETTINGS_MAX_FRAME_SIZE
                    self.go_away(h2.FRAME_SIZE_ERROR, b"frame larger than SETTINGS_MAX_FRAME_SIZE")
                    return
                if size - pos - 9 < length:
                    break
                payload = bytes(buffer[pos + 9 : pos + 9 + length])
                pos += 9 + length
                self._frame(length_kind & 0xFF, flags, stream & 0x7FFFFFFF, payload)
        finally:
            del buffer[:pos]
            self._flush()

    def _frame(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if not self.opened:  # the client's preface ends with its SETTINGS (RFC 9113 §3.4)
            if kind != h2.SETTINGS or flags & h2.ACK:
                self.go_away(h2.PROTOCOL_ERROR, b"the connection preface must end with SETTINGS")
                return
            self.opened = True
        if self.continuing is not None and kind != h2.CONTINUATION:
            self.go_away(h2.PROTOCOL_ERROR, b"CONTINUATION expected")
            return
        read = self.readers.get(kind)
        if read is not None:  # frames of other types are ignored (RFC 9113 §5.5)
            read(flags, stream, payload)

    def _ping(self, flags: int, stream: int, payload: bytes) -> None:
        if stream or len(payload) != 8:
            self.go_away(h2.PROTOCOL_ERROR if stream else h2.FRAME_SIZE_ERROR, b"bad PING")
        elif not flags & h2.ACK:
            self._send(h2.frame(h2.PING, h2.ACK, 0, payload))

    def _priority(self, flags: int, stream: int, payload: bytes) -> None:
        if stream == 0:  # priorities themselves are advice, and taken as none
            self.go_away(h2.PROTOCOL_ERROR, b"PRIORITY on stream 0")

    def _push_promise(self, flags: int, stream: int, payload: bytes) -> None:
        self.go_away(h2.PROTOCOL_ERROR, b"a client cannot push")

    def _goaway(self, flags: int, stream: int, payload: bytes) -> None:
        """The client opens no more streams; those under way are still answered."""

    def _headers(self, flags: int, stream: int, payload: bytes) -> None:
        if stream == 0 or stream % 2 == 0:
            self.go_away(h2.PROTOCOL_ERROR, b"HEADERS on a stream a client cannot open")
            return
        block = h2.strip_padding(flags, payload)
        if block is None:
            self.go_away(h2.PROTOCOL_ERROR, b"padding longer than the frame")
            return
        if flags & h2.PRIORITY_FLAG:
            block = block[5:]
        if flags & h2.END_HEADERS:
            self._header_block(stream, flags & h2.END_STREAM, block)
        else:
            self.continuing = (stream, flags & h2.END_STREAM, bytearray(block))

    def _continuation(self, flags: int, stream: int, payload: bytes) -> None:
        if self.continuing is None or self.continuing[0] != stream:
            self.go_away(h2.PROTOCOL_ERROR, b"unexpected CONTINUATION")
            return
        _, end_stream, block = self.continuing
        block += payload
        if len(block) > MAX_HEADER_BLOCK:
            self.go_away(h2.PROTOCOL_ERROR, b"header block too large")
        elif flags & h2.END_HEADERS:
            self.continuing = None
            self._header_block(stream, end_stream, bytes(block))

    def _header_block(self, stream_id: int, end_stream: int, block: bytes) -> None:
        try:
            # Every block is decoded, even for a stream that is refused: the table is the connection's.
            fields = self.header_reader.read(block)
        except HPACKError:
            self.go_away(h2.COMPRESSION_ERROR, b"header block not decodable")
            return
        known = self.streams.get(stream_id)
        if known is not None:  # trailers from the client: its request is complete
            if not end_stream:
                self.go_away(h2.PROTOCOL_ERROR, b"second HEADERS without END_STREAM")
            elif fields.pseudo:  # malformed trailers (RFC 9113 §8.1)
                self._send(h2.rst_stream(stream_id, h2.PROTOCOL_ERROR))
                self._drop(known)
            elif not known.ended:
                known.ended = True
                self._request_done(known)
            return
        if stream_id <= self.last_stream:
            self.go_away(h2.PROTOCOL_ERROR, b"stream id not above the last one")
            return
        self.last_stream = stream_id
        if fields.problem is not None:  # a malformed request is a stream error (RFC 9113 §8.1.1)
            self._send(h2.rst_stream(stream_id, h2.PROTOCOL_ERROR))
            return
        if len(self.streams) >= MAX_STREAMS or self.wires.closing:
            self._send(h2.rst_stream(stream_id, h2.REFUSED_STREAM))
            return
        stream = Stream(stream_id, self.peer_window)
        stream.headers = fields.headers
        self.streams[stream_id] = stream
        if end_stream:
            stream.ended = True
            self._request_done(stream)

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        self._grant(len(payload))
        if stream_id == 0 or stream_id > self.last_stream:
            self.go_away(h2.PROTOCOL_ERROR, b"DATA on a stream not open")
            return
        stream = self.streams.get(stream_id)
        if stream is None or stream.ended:
            return  # a stream we answered early, or reset: what was on its way is dropped
        data = h2.strip_padding(flags, payload)
        if data is None:
            self.go_away(h2.PROTOCOL_ERROR, b"padding longer than the frame")
            return
        body = stream.body
        body += data
        announced = int.from_bytes(body[1:5], "big") if len(body) >= 5 else 0
        if announced > self.wires.max_message:
            refused = too_large(announced, self.wires.max_message)
            self._end(stream, refused.trailers)
            return
        if flags & h2.END_STREAM:
            stream.ended = True
            self._request_done(stream)
            return
        stream.unacked += len(payload)
        if stream.unacked >= RECV_WINDOW // 2:
            self._send(h2.window_update(stream_id, stream.unacked))
            stream.unacked = 0

    def _grant(self, length: int) -> None:
        """Give back connection window for ``length`` bytes received, half a window at a time."""
        self.unacked += length
        if self.unacked >= RECV_WINDOW // 2:
            self._send(h2.window_update(0, self.unacked))
            self.unacked = 0

    def _window_update(self, flags: int, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            self.go_away(h2.FRAME_SIZE_ERROR, b"bad WINDOW_UPDATE")
            return
        increment = h2.UINT32.unpack(payload)[0] & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0 or self.send_window + increment > h2.MAX_WINDOW:
                self.go_away(h2.PROTOCOL_ERROR if increment == 0 else h2.FLOW_CONTROL_ERROR, b"bad window")
                return
            self.send_window += increment
            self._send_all_pending()
            return
        if stream_id > self.last_stream:
            self.go_away(h2.PROTOCOL_ERROR, b"WINDOW_UPDATE on an idle stream")
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            return  # a stream already closed: nothing to send on it
        if increment == 0 or stream.send_window + increment > h2.MAX_WINDOW:
            self._send(h2.rst_stream(stream_id, h2.PROTOCOL_ERROR if increment == 0 else h2.FLOW_CONTROL_ERROR))
            self._drop(stream)
            return
        stream.send_window += increment
        if stream.pending:
            self._send_pending(stream)

    def _settings(self, flags: int, stream: int, payload: bytes) -> None:
        if stream != 0:
            self.go_away(h2.PROTOCOL_ERROR, b"SETTINGS on a stream")
            return
        if flags & h2.ACK:
            if payload:
                self.go_away(h2.FRAME_SIZE_ERROR, b"SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            self.go_away(h2.FRAME_SIZE_ERROR, b"SETTINGS length not a multiple of 6")
            return
        for pos in range(0, len(payload), 6):
            key, value = h2.SETTING.unpack_from(payload, pos)
            if key == h2.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > h2.MAX_WINDOW:
                    self.go_away(h2.FLOW_CONTROL_ERROR, b"initial window too large")
                    return
                delta, self.peer_window = value - self.peer_window, value
                for open_stream in self.streams.values():
                    open_stream.send_window += delta
            elif key == h2.SETTINGS_ENABLE_PUSH and value > 1:
                self.go_away(h2.PROTOCOL_ERROR, b"SETTINGS_ENABLE_PUSH neither 0 nor 1")
                return
            elif key == h2.SETTINGS_MAX_FRAME_SIZE:
                if not h2.DEFAULT_MAX_FRAME <= value <= h2.LARGEST_MAX_FRAME:
                    self.go_away(h2.PROTOCOL_ERROR, b"max frame size out of range")
                    return
                self.peer_max_frame = value
        self._send(h2.frame(h2.SETTINGS, h2.ACK, 0))
        self._send_all_pending()

    def _rst_stream(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0 or stream_id > self.last_stream or len(payload) != 4:
            code = h2.FRAME_SIZE_ERROR if len(payload) != 4 else h2.PROTOCOL_ERROR
            self.go_away(code, b"RST_STREAM on stream 0 or an idle stream, or of a wrong length")
            return
        stream = self.streams.get(stream_id)
        if stream is not None:
            # A call under way runs to its end (a task half added is worse than an answer unread).
            self._drop(stream)

    def _drop(self, stream: Stream) -> None:
        stream.reset = True
        stream.pending = memoryview(b"")
        if stream.task is None or stream.task.done():
            self.streams.pop(stream.id, None)

    # -- answering --------------------------------------------------------------------------------

    def _request_done(self, stream: Stream) -> None:
        """The client's request is whole: call its method, or refuse it."""
        found = call_of(stream.headers, stream.body, self.wires.methods, self.wires.max_message)
        if isinstance(found, Refusal):
            self._end(stream, found.trailers, found.http_status, found.headers)
            return
        call, message = found
        stream.task = run_eagerly(self._serve(stream, call, message))

    async def _serve(self, stream: Stream, call: Call, message: bytes) -> None:
        try:
            answer = await call(message)
        except Exception as exc:  # every failure becomes a status, as REST's middleware makes it a JSON error
            answer, trailers = b"", error_trailers(exc)
        else:
            trailers = []
        later = self.out is None  # carried on by a Task: this answer's frames go out in one write
        if later:
            self.out = []
        if trailers:
            self._end(stream, trailers)
        else:
            self._answer(stream, answer)
        if later:
            self._flush()

    def _answer(self, stream: Stream, message: bytes) -> None:
        """HEADERS, the response message in DATA as the windows allow, and the OK trailers."""
        if stream.reset or self.transport is None:
            self.streams.pop(stream.id, None)
            return
        self._send(h2.frame(h2.HEADERS, h2.END_HEADERS, stream.id, OK_HEADERS))
        # A view, so that sending a large message a frame at a time copies each byte once.
        stream.pending = memoryview(b"\0" + len(message).to_bytes(4, "big") + message)
        stream.trailers = OK_TRAILERS
        self._send_pending(stream)

    def _end(
        self,
        stream: Stream,
        trailers: list[tuple[bytes, bytes]],
        http_status: bytes = b"200",
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        """End the call with a status alone (gRPC's "trailers-only" answer)."""
        if stream.reset or self.transport is None:
            self.streams.pop(stream.id, None)
            return
        head = [(b":status", http_status), (b"content-type", b"application/grpc"), *extra, *trailers]
        self._send(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, stream.id, h2.header_block(head)))
        self._closed(stream)

    def _send_pending(self, stream: Stream) -> None:
        """Send what the windows allow of the stream's answer; the trailers once it is all out."""
        data = stream.pending
        while data:
            room = min(self.send_window, stream.send_window, self.peer_max_frame)
            if room <= 0:
                break
            chunk, data = data[:room], data[room:]
            self.send_window -= len(chunk)
            stream.send_window -= len(chunk)
            self._send(h2.frame(h2.DATA, 0, stream.id, chunk))
        stream.pending = data
        if not data:
            self._send(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, stream.id, stream.trailers))
            self._closed(stream)

    def _send_all_pending(self) -> None:
        """A window opened: send what it allows of every answer held back."""
        for stream in list(self.streams.values()):
            if stream.pending:
                self._send_pending(stream)

    def _closed(self, stream: Stream) -> None:
        """Our side is done; a client still sending is told to stop (RST_STREAM NO_ERROR, per gRPC)."""
        self.streams.pop(stream.id, None)
        if not stream.ended:
            self._send(h2.rst_stream(stream.id, h2.NO_ERROR))
