"""Answers whose head never ends (endless headers, or headers trickled out) fail the attempt quickly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from conftest import Handle, MakeEmulator
from deferred_emulator import plainhttp


class RawApp:
    """A TCP server that answers every request with what ``answer`` writes, then counts what it sent."""

    def __init__(self, answer: Callable[[asyncio.StreamWriter], object]) -> None:
        self.answer = answer
        self.sent = 0
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            await self.answer(writer)  # type: ignore[misc]
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def raw_app() -> AsyncIterator[Callable[..., RawApp]]:
    apps: list[RawApp] = []

    def start(answer: Callable[[asyncio.StreamWriter], object]) -> RawApp:
        app = RawApp(answer)
        apps.append(app)
        return app

    yield start
    for app in apps:
        if app.server is not None:
            app.server.close()


async def serve(app: RawApp) -> RawApp:
    app.server = await asyncio.start_server(app.handle, "127.0.0.1", 0)
    return app


def endless_headers(app_box: list[RawApp]) -> Callable[[asyncio.StreamWriter], object]:
    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        line = b"X-Pad: " + b"a" * 1000 + b"\r\n"
        for _ in range(200_000):  # 200 MB if nothing stopped it
            writer.write(line)
            app_box[0].sent += len(line)
            await writer.drain()

    return answer


@pytest.mark.parametrize("path", ["plain", "aiohttp"])
async def test_endless_headers_fail_the_attempt_after_a_capped_read(
    make_emulator: MakeEmulator, raw_app: Callable[..., RawApp], path: str
) -> None:
    box: list[RawApp] = []
    app = await serve(raw_app(endless_headers(box)))
    box.append(app)
    emu: Handle = await make_emulator(app_url=app.url, ignore_rate_limits=True, dispatch_deadline_s=60)
    # The aiohttp path takes what the plain path does not write itself, such as HEAD requests... or this header
    headers = {"X-Odd": "é"} if path == "aiohttp" else {}
    started = time.monotonic()
    await emu.add(appEngineHttpRequest={"relativeUri": "/w", "headers": headers})
    report = await emu.drain(timeout=30)
    # Then the attempt failed within seconds (not the 60 s deadline), having read well under a megabyte
    assert report["dispatched"] == 1 and report["retried"] == 1, report
    assert time.monotonic() - started < 10
    assert app.sent < 8 * 1024 * 1024, app.sent
    if path == "plain":
        assert "head over 64 KiB" in report["failures"][0]["response"]


async def test_a_trickled_head_fails_after_the_head_time_limit(
    make_emulator: MakeEmulator, raw_app: Callable[..., RawApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plainhttp, "HEAD_S", 0.3)

    async def trickle(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(100):
            writer.write(b"X: y\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)

    app = await serve(raw_app(trickle))
    emu: Handle = await make_emulator(app_url=app.url, ignore_rate_limits=True, dispatch_deadline_s=60)
    await emu.add(appEngineHttpRequest={"relativeUri": "/w"})
    report = await emu.drain(timeout=30)
    assert report["retried"] == 1, report
    assert "did not end within 0.3s" in report["failures"][0]["response"]


async def test_a_normal_answer_with_a_body_in_the_same_read_is_fine(
    make_emulator: MakeEmulator, raw_app: Callable[..., RawApp]
) -> None:
    body = b"x" * 200_000

    async def ok(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()

    app = await serve(raw_app(ok))
    emu: Handle = await make_emulator(app_url=app.url, ignore_rate_limits=True)
    await emu.add(appEngineHttpRequest={"relativeUri": "/w"})
    report = await emu.drain(timeout=30)
    assert report["succeeded"] == 1, report
