"""One port for REST and gRPC: a connection's first bytes tell HTTP/2 (gRPC) from HTTP/1 (everything else).

grpcio cannot take over a socket something else accepted, so gRPC connections are relayed, byte for
byte, to the gRPC server on a unix socket of its own (a loopback port where there are none); HTTP/1
connections are handed to aiohttp's protocol itself, and cost nothing more once their first bytes
are read.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import tempfile
from pathlib import Path

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
#: Whether the relay reaches the gRPC server on a unix socket (else a loopback port, as on Windows).
UNIX_SOCKETS = hasattr(socket, "AF_UNIX")


class Pipe(asyncio.Protocol):
    """One side of a relay: what arrives is written to the peer, with the peer's reading paused while we are full."""

    def __init__(self, relays: set[asyncio.Transport], peer: asyncio.Transport | None = None) -> None:
        #: the site's open relay transports, closed when it stops.
        self.relays = relays
        self.peer = peer
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count the transport among the site's relays."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.relays.add(transport)

    def data_received(self, data: bytes) -> None:
        """Pass the bytes on."""
        if self.peer is not None:
            self.peer.write(data)

    def eof_received(self) -> bool:
        """Pass the half-close on, and keep our side open for the answer."""
        if self.peer is not None and self.peer.can_write_eof():
            self.peer.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        """Close the other side too."""
        if self.transport is not None:
            self.relays.discard(self.transport)
        if self.peer is not None:
            self.peer.close()

    def pause_writing(self) -> None:
        """Our transport's buffer is full: stop reading what would fill it."""
        if self.peer is not None:
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        """Our transport's buffer drained: read again."""
        if self.peer is not None:
            self.peer.resume_reading()


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
        """Relay the connection to the gRPC server."""
        assert self.transport is not None
        self.decided()
        client = self.transport
        client.pause_reading()
        pipe = Pipe(self.site.relay_transports)
        client.set_protocol(pipe)
        pipe.connection_made(client)
        self.site.track(asyncio.ensure_future(self.site.relay(client, pipe, self.buffer)))


class FrontSite(web.BaseSite):
    """An aiohttp site on a listening socket that also serves the app's gRPC services on it.

    With ``Settings.grpc_port`` set, the gRPC server listens there too, directly (no relay). The
    site owns the socket it is given: it is closed when the site stops, or when it fails to start.
    """

    __slots__ = (
        "_sock",
        "_name",
        "grpc",
        "grpc_dir",
        "grpc_port",
        "grpc_inner_port",
        "relays",
        "relay_transports",
        "undecided",
        "lanes",
    )

    def __init__(self, runner: web.AppRunner, sock: socket.socket) -> None:
        super().__init__(runner)
        self._sock = sock
        host, port = sock.getsockname()[:2]
        self._name = f"http://{host}:{port}"
        self.grpc: GrpcServer | None = None
        self.grpc_dir: Path | None = None
        #: the port of ``--grpc-port`` as bound, if asked for.
        self.grpc_port: int | None = None
        #: where the relay reaches the gRPC server when there are no unix sockets.
        self.grpc_inner_port: int | None = None
        self.relays: set[asyncio.Future[None]] = set()
        self.relay_transports: set[asyncio.Transport] = set()
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

    def track(self, relay: asyncio.Future[None]) -> None:
        """Keep a reference to a relay being set up (asyncio keeps only weak ones)."""
        self.relays.add(relay)
        relay.add_done_callback(self.relays.discard)

    async def relay(self, client: asyncio.Transport, pipe: Pipe, first: bytes) -> None:
        """Connect ``client`` to the gRPC server, then let bytes flow both ways."""
        assert self.grpc_dir is not None
        loop = asyncio.get_running_loop()
        try:
            if self.grpc_inner_port is None:
                path = str(self.grpc_dir / "grpc.sock")
                upstream, _ = await loop.create_unix_connection(lambda: Pipe(self.relay_transports, client), path)
            else:
                address = ("127.0.0.1", self.grpc_inner_port)
                upstream, _ = await loop.create_connection(lambda: Pipe(self.relay_transports, client), *address)
        except OSError:
            logger.exception("cannot reach the gRPC server")
            client.close()
            return
        if client.is_closing():
            upstream.close()
            return
        pipe.peer = upstream
        upstream.write(first)
        client.resume_reading()

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
        self.grpc_dir = Path(tempfile.mkdtemp(prefix="deferred-emulator-"))
        grpc = GrpcServer(runner.app)
        self.grpc = grpc
        if UNIX_SOCKETS:
            grpc.listen(f"unix:{self.grpc_dir / 'grpc.sock'}")
        else:  # no unix sockets (Windows): a loopback port of its own
            self.grpc_inner_port = grpc.listen("127.0.0.1:0")
        if settings.grpc_port is not None:
            host = f"[{settings.host}]" if ":" in settings.host else settings.host
            self.grpc_port = grpc.listen(f"{host}:{settings.grpc_port}")
        await grpc.start()

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
        for relay in list(self.relays):
            relay.cancel()
        if self.grpc is not None:
            grpc, self.grpc = self.grpc, None
            await grpc.stop()
        # The gRPC server closes its side in its own threads: our side of each relay is closed here, and
        # connections still undecided are no one else's to close.
        for transport in [*self.relay_transports, *self.undecided]:
            transport.abort()
        await asyncio.sleep(0)  # the transports' connection_lost, which closes their sockets
        if self.grpc_dir is not None:
            shutil.rmtree(self.grpc_dir, ignore_errors=True)
            self.grpc_dir = None
