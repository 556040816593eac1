"""One port for REST and gRPC: a connection's first bytes tell HTTP/2 (gRPC) from HTTP/1 (everything else).

HTTP/2 connections are handed to the gRPC protocol (``grpcwire.py``), HTTP/1 ones to the lane
(``lane.py``) or aiohttp's protocol itself; either costs nothing more once the first bytes are read.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from aiohttp import web

from .api.common import runtime_key
from .api.grpc.server import GrpcServer
from .app import settings_key
from .guard import policy_key
from .lane import Lane, Lanes

logger = logging.getLogger(__name__)

#: What every HTTP/2 connection (so every gRPC one) opens with.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: A connection that says nothing decisive for this long is closed (aiohttp's idle limit is 75 s).
UNDECIDED_TIMEOUT_S = 60.0


class Sniffer(asyncio.Protocol):
    """A new connection, read until it shows whether it is HTTP/2; then handed over."""

    def __init__(self, site: FrontSite) -> None:
        self.site = site
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Wait for the first bytes (not for ever)."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.timer = asyncio.get_running_loop().call_later(UNDECIDED_TIMEOUT_S, transport.close)
        self.site.undecided.add(transport)

    def data_received(self, data: bytes) -> None:
        """Decide as soon as the bytes differ from the HTTP/2 preface, or complete it."""
        self.buffer += data
        head = self.buffer[: len(PREFACE)]
        if not PREFACE.startswith(head):
            self.to_http()
        elif len(head) == len(PREFACE):
            self.to_grpc()

    def eof_received(self) -> bool:
        """Closed before saying anything decisive: HTTP answers (or closes) as it would."""
        if self.buffer:
            self.to_http()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Gone before a decision."""
        self.decided()

    def decided(self) -> None:
        """No longer the site's to close."""
        self.timer.cancel()
        if self.transport is not None:
            self.site.undecided.discard(self.transport)

    def to_http(self) -> None:
        """Hand the connection to the lane (or, when the site has none, aiohttp), with what was read."""
        assert self.transport is not None
        self.decided()
        lanes = self.site.lanes
        if lanes is None or lanes.closing:
            self.site.to_aiohttp(self.transport, self.buffer)
            return
        lane = Lane(lanes, self.site.to_aiohttp)
        self.transport.set_protocol(lane)
        lane.connection_made(self.transport)
        lane.data_received(self.buffer)

    def to_grpc(self) -> None:
        """Hand the connection to the gRPC server's protocol, with what was read."""
        assert self.transport is not None
        self.decided()
        if self.site.grpc is None or self.site.grpc.wires.closing:  # the site is stopping
            self.transport.close()
            return
        wire = self.site.grpc.protocol()
        self.transport.set_protocol(wire)
        wire.connection_made(self.transport)
        wire.data_received(self.buffer)


class FrontSite(web.BaseSite):
    """An aiohttp site on a listening socket that also serves the app's gRPC services on it.

    With ``Settings.grpc_port`` set, the gRPC server listens there too. The site owns the socket it
    is given: it is closed when the site stops, or when it fails to start.
    """

    __slots__ = ("_sock", "_name", "grpc", "grpc_port", "undecided", "lanes")

    def __init__(self, runner: web.AppRunner, sock: socket.socket) -> None:
        super().__init__(runner)
        self._sock = sock
        host, port = sock.getsockname()[:2]
        self._name = f"http://{host}:{port}"
        self.grpc: GrpcServer | None = None
        #: the port of ``--grpc-port`` as bound, if asked for.
        self.grpc_port: int | None = None
        #: connections whose first bytes have not said yet which protocol they speak.
        self.undecided: set[asyncio.Transport] = set()
        #: CreateTask's lean path (``lane.py``), made at start.
        self.lanes: Lanes | None = None

    @property
    def name(self) -> str:
        """``http://host:port``."""
        return self._name

    def new_aiohttp_protocol(self) -> asyncio.Protocol:
        """A new aiohttp protocol, as its server makes one for each connection it accepts."""
        server = self._runner.server
        assert server is not None
        return server()

    def to_aiohttp(self, transport: asyncio.Transport, data: bytes) -> asyncio.Protocol:
        """Give a connection to a new aiohttp protocol, as its server would for one it accepted, with ``data``
        as the first bytes read; the protocol."""
        protocol = self.new_aiohttp_protocol()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if data:
            protocol.data_received(data)
        return protocol

    async def start(self) -> None:
        """Start the gRPC server, then accept connections; on failure, what was started is stopped."""
        await super().start()
        try:
            await self._start_grpc()
            runner = self._runner
            assert isinstance(runner, web.AppRunner)
            app = runner.app
            self.lanes = Lanes(app[runtime_key].emulator, app[policy_key], self.new_aiohttp_protocol)
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(lambda: Sniffer(self), sock=self._sock, backlog=self._backlog)
        except BaseException:
            # The runner stops registered sites at cleanup, but a caller whose start failed may never
            # clean up: the gRPC server, its directory and the socket are not left behind for the collector.
            await self._release()
            raise

    async def _start_grpc(self) -> None:
        runner = self._runner
        assert isinstance(runner, web.AppRunner)
        settings = runner.app[settings_key]
        self.grpc = GrpcServer(runner.app)
        if settings.grpc_port is not None:
            self.grpc_port = await self.grpc.listen(settings.host, settings.grpc_port)

    async def stop(self) -> None:
        """Stop accepting, then stop the gRPC server (calls under way get a grace period)."""
        await super().stop()
        await self._release()

    async def _release(self) -> None:
        """Stop the gRPC server and close every connection and socket the site still holds."""
        if self._server is None:
            self._sock.close()  # the server never took it over (it closes it itself when it did)
        if self.lanes is not None:
            await self.lanes.close()
        if self.grpc is not None:
            grpc, self.grpc = self.grpc, None
            await grpc.stop()
        # Connections still undecided are no one else's to close.
        for transport in list(self.undecided):
            transport.close()
        await asyncio.sleep(0)  # the transports' connection_lost, which closes their sockets
