"""The dispatch loop wakes only when there may be something to deliver."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

from conftest import API, Handle, MakeEmulator, RecordingApp


def rfc3339(delta_s: float) -> str:
    """Now plus ``delta_s`` as Cloud Tasks writes times."""
    return (datetime.now(timezone.utc) + timedelta(seconds=delta_s)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def asleep(emulator: Handle) -> int:
    """Wait (bounded) until the loop sleeps; when it will look again."""
    async with asyncio.timeout(2):
        while emulator.dispatcher._sleeping_until is None:
            await asyncio.sleep(0.005)
    return emulator.dispatcher._sleeping_until


async def test_a_task_due_after_the_next_look_does_not_wake_the_loop(
    emulator: Handle, app_server: RecordingApp
) -> None:
    # Given the loop asleep until a task due in an hour
    await emulator.add(scheduleTime=rfc3339(3600))
    until = await asleep(emulator)
    store = emulator.emulator.store
    claims: list[Any] = []
    original = store.claim_due

    async def counting(*args: Any) -> Any:
        claims.append(args)
        return await original(*args)

    store.claim_due = counting  # type: ignore[method-assign]
    # When a task due in two hours is added
    await emulator.add(scheduleTime=rfc3339(7200))
    # (the add answered after notice() ran: had it woken the loop, the event would be set now)
    assert not emulator.dispatcher._event.is_set()
    await asyncio.sleep(0)
    # Then the loop did not look for due tasks and still sleeps until the first one
    assert claims == []
    assert emulator.dispatcher._sleeping_until == until
    # When a task due now is added
    await emulator.add()
    # Then it is delivered, handed over as it was added: no claim, and the loop sleeps on
    [req] = await app_server.wait_for(1)
    assert req.path == "/work"
    assert claims == []
    assert emulator.dispatcher._sleeping_until == until


async def test_a_retry_is_delivered_after_its_backoff_without_other_wakeups(
    emulator: Handle, app_server: RecordingApp
) -> None:
    # Given an app that fails once, and a task with a 0.2 s backoff
    app_server.statuses = [500]
    await emulator.add(retryConfig={"minBackoff": "0.2s", "maxBackoff": "0.2s"})
    # When it is delivered, fails, and nothing else happens
    first, second = await app_server.wait_for(2, timeout=10)
    # Then the retry came after its backoff, not before
    assert second.time - first.time >= 0.19
    assert second.headers["X-AppEngine-TaskRetryCount"] == "1"


async def test_deliveries_beyond_the_in_flight_limit_all_arrive(make_emulator: Any, app_server: RecordingApp) -> None:
    # Given an emulator that delivers at most 3 tasks at once, and a slow app
    emulator = await make_emulator(app_url=app_server.url, ignore_rate_limits=True, max_in_flight=3)
    app_server.hang_s = 0.02
    # When 10 tasks are added at once
    for _ in range(10):
        await emulator.add()
    # Then each finished delivery makes room for the next, until all arrived
    # (a lost wake-up stalls for good; the bound only has to outlast a slow machine)
    assert len(await app_server.wait_for(10, timeout=60)) == 10


async def test_a_task_added_due_now_never_overtakes_one_that_waits(
    make_emulator: MakeEmulator, app_server: RecordingApp
) -> None:
    # Given one delivery slot for the queue, held by an app that does not answer yet, and two tasks waiting
    emulator = await make_emulator(app_url=app_server.url, ignore_rate_limits=True, max_in_flight=2)
    app_server.hold = asyncio.Event()
    for name in ("a", "b", "c"):
        await emulator.add(name=name)
    await app_server.wait_for(1, timeout=5)
    # When a fourth task due now is added
    await emulator.add(name="d")
    # Then, once the app answers, the tasks arrive in the order they were added
    app_server.hold.set()
    got = await app_server.wait_for(4, timeout=10)
    assert [r.headers["X-AppEngine-TaskName"] for r in got] == ["a", "b", "c", "d"]


async def test_a_task_added_to_a_paused_queue_waits_for_resume(emulator: Handle, app_server: RecordingApp) -> None:
    # Given the queue asleep and paused
    await asleep(emulator)
    await emulator.call("POST", f"{API}/queues/default:pause", {})
    # When a task due now is added
    await emulator.add(name="later")
    await asyncio.sleep(0.05)
    # Then it is not delivered until the queue is resumed
    assert app_server.requests == []
    await emulator.call("POST", f"{API}/queues/default:resume", {})
    [req] = await app_server.wait_for(1, timeout=5)
    assert req.headers["X-AppEngine-TaskName"] == "later"
