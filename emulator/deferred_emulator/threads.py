"""Servers on 127.0.0.1 in background threads: the emulator on an event loop of its own, and WSGI apps.

The pytest plugin uses them so one emulator serves sync tests, async tests (whose own loop must stay
free to serve the app under test) and WSGI apps called synchronously alike.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Coroutine
from socketserver import ThreadingMixIn
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from aiohttp import web

from .app import create_app, note_bound
from .frontdoor import FrontSite
from .settings import Settings

T = TypeVar("T")
#: Longest a start or stop step may take before the thread is considered stuck.
STEP_TIMEOUT_S = 30.0


class EmulatorThread:
    """The emulator (``create_app``, REST and gRPC on one port) served by an event loop running in a daemon thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="deferred-emulator", daemon=True)
        self.thread.start()
        self.runner = web.AppRunner(create_app(settings), access_log=None)
        try:
            self.port = self._run(self._start())
        except BaseException:
            self._stop_loop()
            raise
        self.url = f"http://{settings.host}:{self.port}"

    def __repr__(self) -> str:
        return f"<EmulatorThread {getattr(self, 'url', '(starting)')}>"

    async def _start(self) -> int:
        await self.runner.setup()
        try:
            sock = socket.create_server((self.settings.host, self.settings.port))
            self.site = FrontSite(self.runner, sock)
            await self.site.start()
        except BaseException:
            # The store, the dispatcher and their connections were opened by setup: closed, not left to the collector.
            await self.runner.cleanup()
            raise
        port = int(sock.getsockname()[1])
        note_bound(self.runner.app, port)
        return port

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=STEP_TIMEOUT_S)

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=STEP_TIMEOUT_S)
        if not self.thread.is_alive():
            self.loop.close()

    def close(self) -> None:
        """Stop serving (deliveries in flight get the dispatcher's grace period), then stop the loop."""
        try:
            self._run(self.runner.cleanup())
            self._run(self.loop.shutdown_asyncgens())
        finally:
            self._stop_loop()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged: test output stays readable."""


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class WSGIThread:
    """A WSGI app served by wsgiref on 127.0.0.1, one thread per request."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.server = make_server("127.0.0.1", 0, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="wsgi-app", daemon=True
        )
        self.thread.start()

    def __repr__(self) -> str:
        return f"<WSGIThread {self.url}>"

    def close(self) -> None:
        """Stop serving and join the thread."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=STEP_TIMEOUT_S)
