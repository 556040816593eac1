"""Emulator errors as gRPC statuses, with production's ``google.rpc`` details in ``grpc-status-details-bin``."""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2  # noqa: F401 - error_details_pb2 registers Help & co.
from grpc_status import rpc_status

from ...errors import INTERNAL_MESSAGE, EmulatorError

logger = logging.getLogger(__name__)


def status_of(exc: EmulatorError) -> grpc.Status:
    """The gRPC status (code, message, details) of an emulator error."""
    code = code_pb2.Code.Value(exc.rpc_status)
    status = status_pb2.Status(code=code, message=exc.message)
    for detail in exc.details or []:
        json_format.ParseDict(detail, status.details.add())
    return rpc_status.to_status(status)


async def abort(context: grpc.aio.ServicerContext[object, object], exc: Exception) -> NoReturn:
    """End the call with ``exc`` as its status (INTERNAL, logged, for anything but an EmulatorError)."""
    if not isinstance(exc, EmulatorError):
        logger.error("unexpected error serving a gRPC call", exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
    status = status_of(exc)
    await context.abort(status.code, status.details, status.trailing_metadata)
