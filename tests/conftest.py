"""Fixtures: an in-process emulator and a recording app over loopback."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from deferred_emulator.api.common import runtime_key
from deferred_emulator.app import create_app, note_bound
from deferred_emulator.dispatcher import Dispatcher
from deferred_emulator.frontdoor import FrontSite
from deferred_emulator.service import Emulator
from deferred_emulator.settings import Settings

API = "/v2/projects/test-project/locations/us-central1"

# The tests' databases (under tmp_path) go to memory-backed /dev/shm where there is one: on a VM
# disk whose fsync stalls for up to a second, creating each test's fresh database dominated the run.
if not os.environ.get("PYTEST_DEBUG_TEMPROOT") and os.access("/dev/shm", os.W_OK):
    tempfile.tempdir = "/dev/shm"


@dataclass
class Received:
    """One request the app received."""

    method: str
    path: str
    headers: dict[str, str]
    raw_headers: list[tuple[str, str]]
    body: bytes
    time: float


@dataclass
class RecordingApp:
    """An app that records every request and answers with scripted statuses (then 200)."""

    server: TestServer
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    hang_s: float = 0.0
    #: When set, each request waits for this event before it is answered (a hang the test ends itself).
    hold: asyncio.Event | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Wait until ``count`` requests have arrived."""
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.requests


@pytest.fixture
async def app_server(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> RecordingApp:
    """A real aiohttp app on 127.0.0.1 that records what the emulator delivers."""
    holder: dict[str, RecordingApp] = {}

    async def handle(request: web.Request) -> web.Response:
        rec = holder["app"]
        body = await request.read()
        rec.requests.append(
            Received(
                request.method,
                request.path_qs,
                dict(request.headers),
                [(k.decode(), v.decode()) for k, v in request.raw_headers],
                body,
                asyncio.get_running_loop().time(),
            )
        )
        rec.arrived.set()
        if rec.hang_s:
            await asyncio.sleep(rec.hang_s)
        if rec.hold is not None:
            await rec.hold.wait()
        status = rec.statuses.pop(0) if rec.statuses else 200
        if 300 <= status < 400:
            raise web.HTTPFound("/elsewhere")
        return web.Response(status=status, text=f"answered {status}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    holder["app"] = RecordingApp(server)
    return holder["app"]


@dataclass
class Handle:
    """A running in-process emulator and an HTTP session to call it."""

    url: str
    app: web.Application
    http: aiohttp.ClientSession

    @property
    def host(self) -> str:
        """``host:port``, where gRPC clients connect (emulators of ``make_front_emulator``)."""
        return self.url.split("://", 1)[1]

    @property
    def emulator(self) -> Emulator:
        return self.app[runtime_key].emulator

    @property
    def dispatcher(self) -> Dispatcher:
        return self.app[runtime_key].dispatcher

    async def call(self, method: str, path: str, json: Any = None, expect: int | None = 200) -> Any:
        """Call the emulator and return the decoded JSON, checking the status."""
        async with self.http.request(method, self.url + path, json=json) as resp:
            data = await resp.json(content_type=None)
            if expect is not None:
                assert resp.status == expect, data
            return data

    async def add(self, queue: str = "default", **task: Any) -> dict[str, Any]:
        """Create an App Engine task with the given fields."""
        task.setdefault("appEngineHttpRequest", {"relativeUri": "/work"})
        return dict(await self.call("POST", f"{API}/queues/{queue}/tasks", {"task": task}))

    async def drain(self, **body: Any) -> dict[str, Any]:
        """Deliver everything due and wait for it."""
        return dict(await self.call("POST", "/_emulator/v1/drain", body))


MakeEmulator = Callable[..., Awaitable[Handle]]


@pytest.fixture
async def make_emulator(
    aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path
) -> AsyncIterator[MakeEmulator]:
    """Start an emulator with the given Settings fields (db in tmp_path)."""
    sessions: list[aiohttp.ClientSession] = []

    async def factory(**overrides: Any) -> Handle:
        overrides.setdefault("db_path", str(tmp_path / "tasks.sqlite3"))
        overrides.setdefault("port", 0)
        app = create_app(Settings(**overrides))
        server = await aiohttp_server(app, host="127.0.0.1")
        note_bound(app, server.port)
        session = aiohttp.ClientSession()
        sessions.append(session)
        return Handle(str(server.make_url("")).rstrip("/"), app, session)

    yield factory
    for session in reversed(sessions):
        await session.close()


@pytest.fixture
async def make_front_emulator(tmp_path: Path) -> AsyncIterator[MakeEmulator]:
    """Start emulators served as ``serve`` serves them: REST and gRPC on one port (``Handle.host``)."""
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def factory(**overrides: Any) -> Handle:
        overrides.setdefault("db_path", str(tmp_path / "tasks.sqlite3"))
        overrides.setdefault("port", 0)
        app = create_app(Settings(**overrides))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        sock = socket.create_server(("127.0.0.1", 0))
        await FrontSite(runner, sock).start()
        session = aiohttp.ClientSession()
        sessions.append(session)
        return Handle(f"http://127.0.0.1:{sock.getsockname()[1]}", app, session)

    yield factory
    for session in reversed(sessions):
        await session.close()
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def emulator(make_emulator: MakeEmulator, app_server: RecordingApp) -> Handle:
    """An emulator delivering to the recording app, without rate limits in the way."""
    return await make_emulator(app_url=app_server.url, ignore_rate_limits=True)
