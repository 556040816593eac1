"""Emulator errors as gRPC statuses: the trailers that carry them, with production's ``google.rpc`` details."""

from __future__ import annotations

import base64
import logging
from urllib.parse import quote

from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2  # noqa: F401 - error_details_pb2 registers Help & co.

from ...errors import INTERNAL_MESSAGE, EmulatorError

logger = logging.getLogger(__name__)

#: grpc-message keeps printable ASCII but ``%`` as it is; any other byte is percent-encoded (gRPC over HTTP/2).
PLAIN_MESSAGE_CHARS = "".join(chr(c) for c in range(0x20, 0x7F) if c != 0x25)


def percent_encoded(message: str) -> bytes:
    """``message`` as the value of a grpc-message header."""
    return quote(message, safe=PLAIN_MESSAGE_CHARS).encode("ascii")


def status_trailers(code: int, message: str, details: bytes = b"") -> list[tuple[bytes, bytes]]:
    """The trailers of a call ending with status ``code``; ``details``, a serialized ``google.rpc.Status``."""
    out = [(b"grpc-status", b"%d" % code)]
    if message:
        out.append((b"grpc-message", percent_encoded(message)))
    if details:
        # Binary headers are base64; gRPC's own implementations send it unpadded.
        out.append((b"grpc-status-details-bin", base64.b64encode(details).rstrip(b"=")))
    return out


def error_trailers(exc: Exception) -> list[tuple[bytes, bytes]]:
    """The trailers for a call that raised ``exc`` (INTERNAL, logged, for anything but an EmulatorError)."""
    if not isinstance(exc, EmulatorError):
        logger.error("unexpected error serving a gRPC call", exc_info=exc)
        return status_trailers(code_pb2.INTERNAL, INTERNAL_MESSAGE)
    code = code_pb2.Code.Value(exc.rpc_status)
    # The whole status rides along too, as Google's servers send it (details or none).
    status = status_pb2.Status(code=code, message=exc.message)
    for detail in exc.details or []:
        json_format.ParseDict(detail, status.details.add())
    return status_trailers(code, exc.message, status.SerializeToString())
