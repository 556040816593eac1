"""The gRPC services of an app: the connections the front door hands over, and ``--grpc-port``'s own listener."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from ...app import settings_key
from ...grpcwire import GrpcWire, Wires
from ...guard import BodyLimits
from .services import method_table

logger = logging.getLogger(__name__)

#: Seconds calls under way get to finish at shutdown.
STOP_GRACE_S = 5.0


class GrpcServerError(Exception):
    """Raised when the gRPC server cannot listen where it was asked to."""


class GrpcServer:
    """The gRPC services of one app, on connections handed to it and on ports it listens on."""

    def __init__(self, app: web.Application) -> None:
        limits = BodyLimits.for_settings(app[settings_key])
        self.wires = Wires(method_table(app), limits.json_bytes)
        self.servers: list[asyncio.Server] = []

    def protocol(self) -> GrpcWire:
        """A new connection's protocol (the front door gives it the connection it accepted)."""
        return GrpcWire(self.wires)

    async def listen(self, host: str, port: int) -> int:
        """Listen on ``host:port`` too; the port bound."""
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(self.protocol, host, port)
        except OSError as exc:
            raise GrpcServerError(f"cannot listen for gRPC on {host}:{port}: {exc.strerror or exc}") from None
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop listening; calls under way get ``grace_s`` seconds to finish, then every connection is closed."""
        for server in self.servers:
            server.close()
        await self.wires.close(grace_s)
        for server in self.servers:
            await server.wait_closed()
        self.servers.clear()
