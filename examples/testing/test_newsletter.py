"""Async tests of the aiohttp app: pytest-aiohttp's test server on the test's loop, the emulator beside it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import newsletter
from deferred_emulator.testing import DeferredEmulator

#: pytest-aiohttp's fixture: an app in, a test client (on a server of the test's loop) out.
AiohttpClient = Callable[..., Awaitable[Any]]


async def test_a_subscriber_is_welcomed_a_minute_later(
    aiohttp_client: AiohttpClient, deferred_emulator: DeferredEmulator
) -> None:
    # Given the app served by pytest-aiohttp, receiving the emulator's tasks
    client = await aiohttp_client(newsletter.create_app())
    deferred_emulator.app_url = str(client.make_url("/"))
    # When an address subscribes
    resp = await client.post("/subscribe/ann@example.com")
    assert resp.status == 202
    # Then nothing is sent until a minute has passed on the emulator's clock
    assert (await deferred_emulator.drain_async()).dispatched == 0
    deferred_emulator.advance(60)
    result = await deferred_emulator.drain_async()  # awaited: the test's loop serves the app meanwhile
    assert (result.succeeded, result.failures) == (1, [])
    assert newsletter.WELCOMED == ["ann@example.com"]
