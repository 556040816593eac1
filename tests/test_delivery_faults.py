"""Slow and broken apps: a handler that hangs, one that resets connections, one that is down, one that
answers a huge body. Retries back off, deadlines hold, nothing spins, and other queues keep flowing."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import API, MakeEmulator, RecordingApp

FAST_RETRY = {"minBackoff": "0.05s", "maxBackoff": "0.2s"}
DEADLINE_S = 0.3


@pytest.fixture
async def resetting_app() -> AsyncIterator[str]:
    """A server that reads the request head and resets the connection (RST, no answer)."""
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        await reader.readuntil(b"\r\n\r\n")
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.close()
    await server.wait_closed()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def task_state(emulator: Any, queue: str, name: str) -> dict[str, Any]:
    return dict(await emulator.call("GET", f"{API}/queues/{queue}/tasks/{name}"))


async def test_broken_apps_back_off_and_other_queues_flow(
    make_emulator: MakeEmulator,
    app_server: RecordingApp,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    resetting_app: str,
) -> None:
    # Given an app that hangs, one that resets connections and one that is down, each a service
    arrivals: list[float] = []

    async def hang(request: web.Request) -> web.Response:
        arrivals.append(asyncio.get_running_loop().time())
        await asyncio.sleep(30)
        return web.Response()

    hanging_app = web.Application()
    hanging_app.router.add_route("*", "/{tail:.*}", hang)
    hanging = await aiohttp_server(hanging_app, host="127.0.0.1")
    emulator = await make_emulator(
        app_url=app_server.url,
        targets={
            "hang": str(hanging.make_url("")).rstrip("/"),
            "reset": resetting_app,
            "down": f"http://127.0.0.1:{closed_port()}",
        },
        dispatch_deadline_s=DEADLINE_S,
        ignore_rate_limits=True,
    )
    await emulator.call("POST", f"{API}/queues", {"name": API.removeprefix("/v2/") + "/queues/broken"})
    for service in ("hang", "reset", "down"):
        await emulator.add(
            "broken",
            name=service,
            retryConfig=FAST_RETRY,
            appEngineHttpRequest={"relativeUri": "/work", "appEngineRouting": {"service": service}},
        )
    loop = asyncio.get_running_loop()
    started = loop.time()
    # When healthy tasks are added to another queue meanwhile
    await asyncio.sleep(0.2)
    added: dict[str, float] = {}
    for i in range(5):
        await emulator.add(name=f"ok{i}")
        added[f"ok{i}"] = loop.time()
    # Then they are delivered at once, whatever the broken queue is doing
    await app_server.wait_for(5, timeout=5)
    latencies = [r.time - added[r.headers["X-AppEngine-TaskName"]] for r in app_server.requests]
    assert max(latencies) < 1.0, latencies
    # And each broken app is retried with backoff: several attempts, nowhere near a busy loop
    wanted = {"hang": 2, "reset": 4, "down": 4}
    counts: dict[str, int] = {}
    for _ in range(100):  # at most ~10 s on a loaded machine; about WINDOW_S on an idle one
        states = {s: await task_state(emulator, "broken", s) for s in wanted}
        counts = {s: state["dispatchCount"] for s, state in states.items()}
        if all(counts[s] >= n for s, n in wanted.items()):
            break
        await asyncio.sleep(0.1)
    elapsed = loop.time() - started
    assert all(counts[s] >= n for s, n in wanted.items()), (counts, elapsed)
    # (backoffs 0.05, 0.1, 0.2, 0.2, ...: at most about 3 + elapsed / 0.2 attempts; a hang also takes its deadline)
    assert counts["reset"] <= 4 + elapsed / 0.2 and counts["down"] <= 4 + elapsed / 0.2, (counts, elapsed)
    assert counts["hang"] <= 1 + elapsed / DEADLINE_S, (counts, elapsed)
    # And the hanging app got each attempt only after the previous one's deadline had passed
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert gaps and min(gaps) >= DEADLINE_S * 0.9, gaps
    for state in states.values():
        assert state["lastAttempt"]["responseStatus"]["code"] == 14  # UNAVAILABLE: no answer
        assert state["responseCount"] == 0
    # And the emulator still answers promptly
    assert (await emulator.call("GET", "/_emulator/v1/health"))["ok"] is True


async def test_a_huge_answer_is_not_read(
    make_emulator: MakeEmulator, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    # Given an app that answers 500 with a 256 MiB body, written as fast as the emulator reads it
    written = [0]
    finished = asyncio.Event()

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=500)
        response.content_length = 256 * 1024 * 1024
        await response.prepare(request)
        chunk = b"x" * (1024 * 1024)
        try:
            for _ in range(256):
                await response.write(chunk)
                written[0] += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            finished.set()
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", huge)
    server = await aiohttp_server(app, host="127.0.0.1")
    emulator = await make_emulator(app_url=str(server.make_url("")).rstrip("/"), dispatch=False)
    await emulator.add(name="big", retryConfig={"maxAttempts": 1})
    # When it is delivered
    report = await emulator.drain()
    async with asyncio.timeout(5):
        await finished.wait()
    # Then the attempt is a failure recorded with a short excerpt, and the app could not push it all
    assert report["failed"] == 1
    assert len(report["failures"][0]["response"]) <= 1024
    assert written[0] < 64 * 1024 * 1024, written
    task = await task_state(emulator, "default", "big")
    assert task["state"] == "FAILED"
    assert len(task["lastResponse"]["excerpt"]) <= 1024
