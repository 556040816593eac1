"""grpcio's asyncio server, on the event loop of the aiohttp app it serves beside."""

from __future__ import annotations

import logging

import grpc
from aiohttp import web

from ...app import settings_key
from ...guard import BodyLimits
from .services import generic_handlers

logger = logging.getLogger(__name__)

#: Seconds calls under way get to finish at shutdown.
STOP_GRACE_S = 5.0


class GrpcServerError(Exception):
    """Raised when the gRPC server cannot listen where it was asked to."""


class GrpcServer:
    """The gRPC services of one app, listening on the addresses given (``unix:PATH``, ``HOST:PORT``)."""

    def __init__(self, app: web.Application) -> None:
        limits = BodyLimits.for_settings(app[settings_key])
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limits.json_bytes),
                ("grpc.max_send_message_length", -1),
                # grpcio binds TCP ports with SO_REUSEPORT by default: a second emulator on the same
                # --grpc-port would then share it silently instead of failing to start.
                ("grpc.so_reuseport", 0),
            ]
        )
        self.server.add_generic_rpc_handlers(generic_handlers(app))

    def listen(self, address: str) -> int:
        """Listen on ``address`` (before ``start``); the port bound (0 for a unix socket)."""
        try:
            port = self.server.add_insecure_port(address)
        except RuntimeError as exc:
            raise GrpcServerError(f"cannot listen for gRPC on {address}: {exc}") from None
        return port

    async def start(self) -> None:
        """Start serving."""
        await self.server.start()

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop accepting calls; those under way get ``grace_s`` seconds to finish."""
        await self.server.stop(grace_s)
