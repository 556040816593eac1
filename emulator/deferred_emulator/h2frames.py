"""HTTP/2 frames (RFC 9113 §4 and §6): their types, flags, error codes and settings, and how one is written.

Header blocks the emulator sends are written as HPACK literals "never indexed" with static-table
names only, so they leave the client's decoding table alone and the same bytes are right on every
connection: the common ones are made once, at import.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from hpack import Encoder, NeverIndexedHeaderTuple

# Frame types.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
# Flags.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
# Error codes.
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
# Settings.
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

#: Until a peer says otherwise: the largest frame payload, and each stream's flow-control window.
DEFAULT_MAX_FRAME = 16_384
DEFAULT_WINDOW = 65_535
MAX_WINDOW = 2**31 - 1
LARGEST_MAX_FRAME = 2**24 - 1
#: The connection preface's fixed part, sent by every client before its first frame.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: A frame head read in one call: (length << 8 | type), flags, stream (with its reserved bit).
HEAD = struct.Struct(">IBI")
UINT32 = struct.Struct(">I")
SETTING = struct.Struct(">HI")


def frame(kind: int, flags: int, stream: int, payload: bytes | memoryview = b"") -> bytes:
    """One frame, its 9-byte head and ``payload``."""
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


def settings_frame(values: dict[int, int]) -> bytes:
    """A SETTINGS frame carrying ``values``."""
    return frame(SETTINGS, 0, 0, b"".join(SETTING.pack(key, value) for key, value in values.items()))


def window_update(stream: int, increment: int) -> bytes:
    """A WINDOW_UPDATE frame granting ``increment`` more bytes on ``stream`` (0: the connection)."""
    return frame(WINDOW_UPDATE, 0, stream, UINT32.pack(increment))


def rst_stream(stream: int, code: int) -> bytes:
    """An RST_STREAM frame ending ``stream`` with error ``code``."""
    return frame(RST_STREAM, 0, stream, UINT32.pack(code))


def goaway(last_stream: int, code: int, debug: bytes = b"") -> bytes:
    """A GOAWAY frame: streams after ``last_stream`` were not processed."""
    return frame(GOAWAY, 0, 0, UINT32.pack(last_stream) + UINT32.pack(code) + debug)


def header_block(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The HPACK block of ``headers``: literals never indexed, so it holds whatever the peer's table is."""
    return Encoder().encode([NeverIndexedHeaderTuple(name, value) for name, value in headers], huffman=False)


def strip_padding(flags: int, payload: bytes) -> bytes | None:
    """The payload without its padding (RFC 9113 §6.1), or None when the padding is longer than the frame."""
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        return None
    return payload[1 : len(payload) - payload[0]]
