"""drain, reset and --no-dispatch: tests decide when tasks run, and see what happened."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import API, Handle, MakeEmulator, RecordingApp

NAMES = API.removeprefix("/v2/") + "/queues/{queue}/tasks/{name}"


def named(name: str, queue: str = "default") -> str:
    return NAMES.format(queue=queue, name=name)


async def manual(make_emulator: MakeEmulator, app_server: RecordingApp, **overrides: Any) -> Handle:
    return await make_emulator(app_url=app_server.url, dispatch=False, virtual_clock=True, **overrides)


async def test_drain_delivers_what_is_due_and_reports_it(make_emulator: MakeEmulator, app_server: RecordingApp) -> None:
    # Given two due tasks, one the app will refuse, and one due in an hour
    emulator = await manual(make_emulator, app_server)
    app_server.statuses = [500]
    await emulator.add(name=named("first"))
    await emulator.add(name=named("second"))
    await emulator.add(name=named("later"), countdown="3600s")
    # When the queues are drained
    report = await emulator.drain()
    # Then only the due tasks ran, and the failure comes with the app's status and answer
    assert {k: report[k] for k in ("dispatched", "succeeded", "retried", "failed", "timedOut")} == {
        "dispatched": 2,
        "succeeded": 1,
        "retried": 1,
        "failed": 0,
        "timedOut": False,
    }
    [failure] = report["failures"]
    # The two go out together, so either may reach the app first: the report names the one refused
    refused = app_server.requests[0].headers["X-AppEngine-TaskName"]
    assert refused in ("first", "second")
    expected = {"queue": "default", "task": refused, "status": 500, "response": "answered 500", "willRetry": True}
    assert failure == expected
    assert len(app_server.requests) == 2


async def test_drain_reports_a_task_giving_up(make_emulator: MakeEmulator, app_server: RecordingApp) -> None:
    # Given a task allowed a single attempt, which fails
    emulator = await manual(make_emulator, app_server)
    app_server.statuses = [404]
    await emulator.add(name=named("once"), retryConfig={"maxAttempts": 1})
    # When drained, it is reported as failed for good
    report = await emulator.drain()
    assert (report["failed"], report["failures"][0]["willRetry"], report["failures"][0]["status"]) == (1, False, 404)


async def test_drain_runs_only_the_queues_asked_for(make_emulator: MakeEmulator, app_server: RecordingApp) -> None:
    # Given due tasks in two queues
    emulator = await manual(make_emulator, app_server, auto_create_queues=True)
    await emulator.add("mail")
    await emulator.add("reports")
    # When only "mail" is drained
    report = await emulator.drain(queues=["mail"])
    # Then the "reports" task still waits
    assert report["dispatched"] == 1
    assert [r.headers["X-AppEngine-QueueName"] for r in app_server.requests] == ["mail"]
    assert len((await emulator.call("GET", f"{API}/queues/reports/tasks"))["tasks"]) == 1


async def test_drain_ignores_rate_limits(make_emulator: MakeEmulator, app_server: RecordingApp) -> None:
    # Given a queue allowed one dispatch every 100 seconds, with five tasks due
    emulator = await manual(make_emulator, app_server)
    parent = API.removeprefix("/v2/")
    slow = {"name": f"{parent}/queues/slow", "rateLimits": {"maxDispatchesPerSecond": 0.01, "maxBurstSize": 1}}
    await emulator.call("POST", f"{API}/queues", slow)
    for _ in range(5):
        await emulator.add("slow")
    # When drained, all five are delivered, long before the rate would allow a second one
    report = await asyncio.wait_for(emulator.drain(queues=["slow"], timeout=60), timeout=90)
    assert report["succeeded"] == 5
    assert not report["timedOut"]


async def drain_started(emulator: Handle) -> None:
    """Wait (bounded) until a drain is under way in the emulator: it listens for outcomes while it runs."""
    for _ in range(1000):
        if emulator.dispatcher._listeners:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the drain did not start within 10 s")


async def test_drain_waits_for_deliveries_in_flight(make_emulator: MakeEmulator, app_server: RecordingApp) -> None:
    # Given a task started with :run whose handler answers only when the test lets it
    emulator = await manual(make_emulator, app_server)
    app_server.hold = asyncio.Event()
    await emulator.add(name=named("slow"))
    await emulator.call("POST", f"{API}/queues/default/tasks/slow:run", {})
    await app_server.wait_for(1)
    # When drained, and the handler answers while the drain waits
    draining = asyncio.create_task(emulator.drain())
    await drain_started(emulator)
    assert not draining.done()
    app_server.hold.set()
    report = await draining
    # Then drain returned only once the delivery had finished, and counted it
    assert report["succeeded"] == 1
    assert (await emulator.call("GET", f"{API}/queues/default/tasks"))["tasks"] == []


async def test_drain_does_not_wait_for_other_queues(make_emulator: MakeEmulator, app_server: RecordingApp) -> None:
    # Given a delivery in flight in "default" that answers only when the test lets it
    emulator = await manual(make_emulator, app_server, auto_create_queues=True)
    app_server.hold = asyncio.Event()
    await emulator.add(name=named("slow"))
    await emulator.call("POST", f"{API}/queues/default/tasks/slow:run", {})
    await app_server.wait_for(1)
    # When the empty "other" queue is drained
    await emulator.add("other", countdown="60s")
    report = await emulator.drain(queues=["other"], timeout=30)
    # Then it answers without waiting for "default" (which would have held it until its timeout)
    assert (report["dispatched"], report["timedOut"]) == (0, False)
    assert emulator.dispatcher.in_flight("default") == 1
    app_server.hold.set()


async def test_drain_delivers_tasks_that_deliveries_make_due(
    make_emulator: MakeEmulator, app_server: RecordingApp
) -> None:
    # Given a task whose retry is due at once (a zero backoff)
    emulator = await manual(make_emulator, app_server)
    app_server.statuses = [500, 500]
    await emulator.add(retryConfig={"minBackoff": "0s", "maxBackoff": "0s"})
    # When drained, the retries that fall due during the drain run too, until nothing is due
    report = await emulator.drain()
    assert (report["dispatched"], report["retried"], report["succeeded"]) == (3, 2, 1)


async def test_drain_times_out(
    make_emulator: MakeEmulator, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    # Given an app whose handler answers only when the test lets it
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    app = web.Application()
    app.router.add_post("/work", handler)
    server = await aiohttp_server(app, host="127.0.0.1")
    emulator = await make_emulator(app_url=str(server.make_url("")).rstrip("/"), dispatch=False)
    await emulator.add()
    # When drained with a short timeout, then it says it timed out
    report = await emulator.drain(timeout=0.1)
    assert (report["timedOut"], report["dispatched"]) == (True, 0)
    # And once the handler answers, the next drain reports the delivery
    release.set()
    assert (await emulator.drain())["succeeded"] == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"queues": "default"}, 400),
        ({"queues": [1]}, 400),
        ({"timeout": 0}, 400),
        ({"timeout": "10"}, 400),
        ({"timeout": 3601}, 400),
        ({"queues": ["missing"]}, 404),
    ],
)
async def test_drain_refuses_bad_input(
    make_emulator: MakeEmulator, app_server: RecordingApp, body: dict[str, Any], status: int
) -> None:
    emulator = await manual(make_emulator, app_server)
    data = await emulator.call("POST", "/_emulator/v1/drain", body, expect=status)
    assert data["error"]["code"] == status


async def test_no_dispatch_stores_tasks_until_asked(make_emulator: MakeEmulator, app_server: RecordingApp) -> None:
    # Given an emulator with automatic dispatch off (the real clock) and two due tasks
    emulator = await make_emulator(app_url=app_server.url, dispatch=False)
    await emulator.add(name=named("one"))
    await emulator.add(name=named("two"))
    health = await emulator.call("GET", "/_emulator/v1/health")
    assert health["dispatch"] is False
    # When nothing asks for them, nothing is delivered, and they are listed
    with pytest.raises(TimeoutError):
        await app_server.wait_for(1, timeout=0.3)
    listed = (await emulator.call("GET", f"{API}/queues/default/tasks"))["tasks"]
    assert [t["name"].rsplit("/", 1)[1] for t in listed] == ["one", "two"]
    # Then :run delivers one, and drain the other
    await emulator.call("POST", f"{API}/queues/default/tasks/one:run", {})
    await app_server.wait_for(1)
    assert [r.headers["X-AppEngine-TaskName"] for r in app_server.requests] == ["one"]
    report = await emulator.drain()  # also waits for "one" to finish, if it has not yet
    assert (report["failures"], report["timedOut"]) == ([], False)
    assert [r.headers["X-AppEngine-TaskName"] for r in app_server.requests] == ["one", "two"]
    assert (await emulator.call("GET", f"{API}/queues/default/tasks"))["tasks"] == []


async def test_reset_forgets_tasks_failures_and_tombstones(
    make_emulator: MakeEmulator, app_server: RecordingApp
) -> None:
    # Given a waiting task, a FAILED task, a tombstoned name and a custom queue
    emulator = await manual(make_emulator, app_server, auto_create_queues=True)
    await emulator.add("custom", name=named("waiting", "custom"), countdown="60s")
    app_server.statuses = [500]
    await emulator.add(name=named("failing"), retryConfig={"maxAttempts": 1})
    await emulator.add(name=named("done"))
    await emulator.drain()
    stored = await emulator.call("POST", "/_emulator/v1/entities", None)
    # When the emulator is reset
    assert await emulator.call("POST", "/_emulator/v1/reset", {}) == {}
    # Then no task, failed task, payload or tombstone is left, and the queue is kept
    for queue in ("default", "custom"):
        assert (await emulator.call("GET", f"{API}/queues/{queue}/tasks"))["tasks"] == []
    await emulator.call("GET", f"/_emulator/v1/entities/{stored['key']}", expect=404)
    assert (await emulator.add(name=named("done")))["name"] == named("done")
    assert (await emulator.call("GET", f"{API}/queues/custom"))["name"].endswith("/custom")


async def test_reset_abandons_deliveries_in_flight(make_emulator: MakeEmulator, app_server: RecordingApp) -> None:
    # Given a delivery in flight, held by the app until the test lets it answer
    emulator = await manual(make_emulator, app_server)
    app_server.hold = asyncio.Event()
    await emulator.add(name=named("busy"))
    await emulator.call("POST", f"{API}/queues/default/tasks/busy:run", {})
    await app_server.wait_for(1)
    # When the emulator is reset (and then the app answers)
    await emulator.call("POST", "/_emulator/v1/reset", {})
    app_server.hold.set()
    # Then nothing is recorded for it afterwards: its name is free and nothing is in flight
    assert emulator.dispatcher.in_flight() == 0
    assert (await emulator.add(name=named("busy")))["name"] == named("busy")
