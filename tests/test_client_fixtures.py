"""Fixtures for the client tests: a real emulator and real app servers, each in its own thread, over loopback.

Test modules load these with ``pytest_plugins = ["test_client_fixtures"]``. Blocking ``defer()`` calls
need the emulator on another event loop than the test's, hence the threads.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import deferred_client
import grpc
import pytest
from aiohttp import web
from deferred_emulator.app import create_app, note_bound
from deferred_emulator.frontdoor import FrontSite
from deferred_emulator.settings import Settings
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport


class AiohttpThread:
    """An aiohttp application served on 127.0.0.1 by an event loop in a thread of its own."""

    def __init__(self, app: web.Application, *, front: bool = False) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="aiohttp-server", daemon=True)
        self.thread.start()
        self.runner = web.AppRunner(app, access_log=None)
        self._run(self.runner.setup())
        sock = socket.create_server(("127.0.0.1", 0))
        # The emulator's own site serves gRPC on the same port; a plain one serves only HTTP.
        self.site = FrontSite(self.runner, sock) if front else web.SockSite(self.runner, sock)
        self._run(self.site.start())
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def close(self) -> None:
        """Stop serving, shut the loop down and join the thread."""
        if self.loop.is_closed():
            return  # closed already (a test that restarts the server closes it itself)
        self._run(self.runner.cleanup())
        self._run(self.loop.shutdown_asyncgens())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class LiveEmulator(AiohttpThread):
    """A real emulator (``create_app``) in a thread, with blocking helpers for tests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        app = create_app(settings)
        super().__init__(app, front=True)
        note_bound(app, self.port)
        self.host = f"127.0.0.1:{self.port}"

    def call(self, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
        """Call the emulator's API; the status and the decoded JSON (or raw bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            body = None if payload is None else json.dumps(payload).encode()
            conn.request(method, path, body, {"Content-Type": "application/json"} if body else {})
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if resp.getheader("Content-Type", "").startswith("application/json"):
            return resp.status, json.loads(data)
        return resp.status, data

    def drain(self, timeout: float = 20, **body: Any) -> dict[str, Any]:
        """Deliver every due task now and wait for them (``POST /_emulator/v1/drain``)."""
        status, data = self.call("POST", "/_emulator/v1/drain", {"timeout": timeout, **body})
        assert status == 200, data
        assert not data["timedOut"], data
        return dict(data)

    def task(self, queue: str, name: str) -> tuple[int, Any]:
        """``GET`` one task (FULL view)."""
        parent = f"/v2/projects/{self.settings.project}/locations/{self.settings.location}"
        return self.call("GET", f"{parent}/queues/{queue}/tasks/{name}?responseView=FULL")

    def tasks(self, queue: str = "default") -> list[dict[str, Any]]:
        """Every task waiting in a queue."""
        parent = f"/v2/projects/{self.settings.project}/locations/{self.settings.location}"
        status, data = self.call("GET", f"{parent}/queues/{queue}/tasks?pageSize=1000&responseView=FULL")
        assert status == 200, data
        return list(data.get("tasks", []))

    def create_queue(self, queue: str, **fields: Any) -> None:
        """Create a queue."""
        parent = f"projects/{self.settings.project}/locations/{self.settings.location}"
        status, data = self.call("POST", f"/v2/{parent}/queues", {"name": f"{parent}/queues/{queue}", **fields})
        assert status == 200, data


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class WSGIThread:
    """A WSGI app served by wsgiref (one thread per request) on 127.0.0.1."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.server = make_server("127.0.0.1", 0, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="wsgi-server", daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        """Stop serving and join the thread."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


class UvicornThread:
    """An ASGI app served by uvicorn on 127.0.0.1 in a thread of its own."""

    def __init__(self, app: Any, **options: Any) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False, **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        for _ in range(1000):
            if self.server.started:
                break
            self.thread.join(timeout=0.01)
        assert self.server.started, "uvicorn did not start"

    def close(self) -> None:
        """Ask uvicorn to exit and join the thread."""
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def http_post(url: str, body: bytes = b"", headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """POST to an app; the status and body."""
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", "/" + path, body, headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture
def configured() -> Iterator[None]:
    """Leave deferred_client's configuration as it found it (the environment's)."""
    deferred_client.configure()
    yield
    deferred_client.configure()


@pytest.fixture
def live_emulator(tmp_path: Path, configured: None) -> Iterator[Callable[..., LiveEmulator]]:
    """Start emulators with the given Settings fields; the client is pointed at the last one.

    Automatic dispatch is off unless asked for: ``drain()`` delivers, so each test decides when tasks run.
    """
    started: list[LiveEmulator] = []

    def start(**overrides: Any) -> LiveEmulator:
        overrides.setdefault("db_path", str(tmp_path / f"tasks{len(started)}.sqlite3"))
        overrides.setdefault("port", 0)
        overrides.setdefault("dispatch", False)
        overrides.setdefault("ignore_rate_limits", True)
        overrides.setdefault("log_level", "warning")
        emulator = LiveEmulator(Settings(**overrides))
        started.append(emulator)
        deferred_client.configure(host=emulator.host, secret=overrides.get("secret") or "")
        return emulator

    yield start
    for emulator in reversed(started):
        emulator.close()


@pytest.fixture
def wsgi_server() -> Iterator[Callable[[Callable[..., Any]], WSGIThread]]:
    """Serve WSGI apps in threads."""
    started: list[WSGIThread] = []

    def start(app: Callable[..., Any]) -> WSGIThread:
        server = WSGIThread(app)
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.close()


@pytest.fixture
def asgi_server() -> Iterator[Callable[[Any], UvicornThread]]:
    """Serve ASGI apps with uvicorn in threads."""
    started: list[UvicornThread] = []

    def start(app: Any) -> UvicornThread:
        server = UvicornThread(app)
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.close()


@pytest.fixture
def aiohttp_thread() -> Iterator[Callable[[web.Application], AiohttpThread]]:
    """Serve aiohttp apps on loops in threads."""
    started: list[AiohttpThread] = []

    def start(app: web.Application) -> AiohttpThread:
        server = AiohttpThread(app)
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.close()


MakeClient = Callable[[LiveEmulator], tasks_v2.CloudTasksClient]


@pytest.fixture(params=["grpc", "rest"])
def make_client(request: pytest.FixtureRequest) -> Iterator[MakeClient]:
    """Google's client on one transport, pointed at an emulator's one port (closed after the test)."""
    clients: list[tasks_v2.CloudTasksClient] = []

    def make(emulator: LiveEmulator) -> tasks_v2.CloudTasksClient:
        if request.param == "grpc":
            channel = grpc.insecure_channel(emulator.host)
            client = tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
        else:
            client = tasks_v2.CloudTasksClient(
                transport="rest",
                credentials=AnonymousCredentials(),
                client_options=ClientOptions(api_endpoint=emulator.url),
            )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.transport.close()
