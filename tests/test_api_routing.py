"""GET/PATCH /_emulator/v1/routing: the app URL (and service targets) change while the emulator runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import MakeEmulator, RecordingApp

ROUTING = "/_emulator/v1/routing"


async def other_app(aiohttp_server: Callable[..., Awaitable[TestServer]], seen: list[str]) -> str:
    async def handle(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("")).rstrip("/")


async def test_tasks_go_to_the_new_app_url(
    make_emulator: MakeEmulator, app_server: RecordingApp, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    # Given an emulator delivering to one app
    emulator = await make_emulator(app_url=app_server.url, dispatch=False)
    seen: list[str] = []
    second = await other_app(aiohttp_server, seen)
    assert await emulator.call("GET", ROUTING) == {"appUrl": app_server.url, "targets": {}}
    # When its app URL is changed while it runs
    changed = await emulator.call("PATCH", ROUTING, {"appUrl": second + "/"})
    await emulator.add()
    report = await emulator.drain()
    # Then the next delivery goes to the new app
    assert changed == {"appUrl": second, "targets": {}}
    assert (report["succeeded"], seen, app_server.requests) == (1, ["/work"], [])


async def test_targets_can_be_replaced(
    make_emulator: MakeEmulator, app_server: RecordingApp, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    # Given a task routed to the "worker" service
    emulator = await make_emulator(app_url=app_server.url, dispatch=False)
    seen: list[str] = []
    worker = await other_app(aiohttp_server, seen)
    # When "worker" is given a URL at runtime
    changed = await emulator.call("PATCH", ROUTING, {"targets": {"worker": worker}})
    await emulator.add(appEngineHttpRequest={"relativeUri": "/job", "appEngineRouting": {"service": "worker"}})
    await emulator.drain()
    # Then the task goes there, and the app URL is unchanged
    assert changed == {"appUrl": app_server.url, "targets": {"worker": worker}}
    assert seen == ["/job"]


@pytest.mark.parametrize(
    "body",
    [
        {"appUrl": "localhost:8080"},
        {"appUrl": "ftp://127.0.0.1"},
        {"appUrl": "http://127.0.0.1:99999"},
        {"appUrl": "http://127.0.0.1/?q=1"},
        {"appUrl": 8080},
        {"targets": ["worker"]},
        {"targets": {"worker": "nowhere"}},
        {"secret": "s"},
    ],
)
async def test_bad_routing_is_refused(make_emulator: MakeEmulator, app_server: RecordingApp, body: Any) -> None:
    # Given a running emulator
    emulator = await make_emulator(app_url=app_server.url, dispatch=False)
    # When a bad change is asked for, then it is refused and nothing changes
    data = await emulator.call("PATCH", ROUTING, body, expect=400)
    assert data["error"]["status"] == "INVALID_ARGUMENT"
    assert (await emulator.call("GET", ROUTING))["appUrl"] == app_server.url
