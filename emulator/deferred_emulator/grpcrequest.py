"""A unary gRPC request, whole: which method it calls and its one message, or the status that refuses it.

gRPC's HTTP/2 protocol (PROTOCOL-HTTP2.md): a POST of ``application/grpc`` (``+proto`` and the like
too) to ``/package.Service/Method``, whose body is length-prefixed messages, each flagged compressed
or not; a unary call has exactly one. Compressed messages are read in gzip and deflate.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, Mapping
from typing import NamedTuple

from .api.grpc.status import status_trailers

#: A unary method: the serialized request in, the serialized response out (or an exception).
Call = Callable[[bytes], Awaitable[bytes]]
# gRPC status codes.
RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL = 8, 12, 13
INFLATE_WBITS = {b"gzip": 31, b"deflate": 15}
ACCEPTED_ENCODINGS = [(b"grpc-accept-encoding", b"gzip,deflate")]


class Refusal(NamedTuple):
    """A request answered with a status alone: the HTTP status, other headers, and the trailers."""

    http_status: bytes
    headers: list[tuple[bytes, bytes]]
    trailers: list[tuple[bytes, bytes]]


def refusal(
    code: int, text: str, http_status: bytes = b"200", headers: list[tuple[bytes, bytes]] | None = None
) -> Refusal:
    """A refusal with status ``code`` and message ``text``."""
    return Refusal(http_status, headers or [], status_trailers(code, text))


def too_large(size: int, limit: int) -> Refusal:
    """The refusal of a message of ``size`` bytes, over ``limit`` (grpcio's words)."""
    return refusal(RESOURCE_EXHAUSTED, f"Received message larger than max ({size} vs. {limit})")


def call_of(
    headers: Mapping[bytes, bytes], body: bytes | bytearray, methods: Mapping[bytes, Call], limit: int
) -> tuple[Call, bytes] | Refusal:
    """The method a whole request calls and its message (inflated), or how it is refused."""
    if headers.get(b":method") != b"POST":
        return refusal(UNIMPLEMENTED, "gRPC calls are POSTs", b"405")
    if not headers.get(b"content-type", b"").startswith(b"application/grpc"):
        return refusal(INTERNAL, "Content-Type is not application/grpc", b"415")
    path = headers.get(b":path", b"")
    call = methods.get(path)
    if call is None:
        return refusal(UNIMPLEMENTED, f"Method not found: {path.decode('latin-1')}")
    message = message_of(headers, body, limit)
    return message if isinstance(message, Refusal) else (call, message)


def message_of(headers: Mapping[bytes, bytes], body: bytes | bytearray, limit: int) -> bytes | Refusal:
    """The one message of a unary call's body, inflated if it came compressed."""
    if len(body) < 5 or len(body) != 5 + int.from_bytes(body[1:5], "big"):
        return refusal(INTERNAL, "A unary call takes exactly one request message.")
    message = bytes(body[5:])
    if body[0] == 0:
        return message
    encoding = headers.get(b"grpc-encoding", b"identity")
    wbits = INFLATE_WBITS.get(encoding)
    if wbits is None:
        # A compressed message without an encoding is the client's error; one we cannot read, ours.
        code = INTERNAL if encoding == b"identity" else UNIMPLEMENTED
        text = f"Compressed message with grpc-encoding {encoding.decode('latin-1')!r}; gzip and deflate are read."
        return refusal(code, text, headers=ACCEPTED_ENCODINGS)
    try:
        message = zlib.decompressobj(wbits).decompress(message, limit + 1)
    except zlib.error:
        return refusal(INTERNAL, "The request message could not be decompressed.")
    return too_large(len(message), limit) if len(message) > limit else message
