"""The virtual clock: countdowns, ETAs, backoff and tombstones follow it; advancing it wakes the dispatcher."""

from __future__ import annotations

import pytest
from conftest import API, Handle, MakeEmulator, RecordingApp
from deferred_emulator.api.timefmt import format_ts, parse_ts
from deferred_emulator.clock import US, Clock, VirtualClock

DAY_S = 24 * 3600
#: Task resource names in the default queue start with this.
NAMES = API.removeprefix("/v2/") + "/queues/default/tasks/"


def test_the_virtual_clock_stands_still_until_advanced() -> None:
    # Given a virtual clock started at a known time
    clock = VirtualClock(start_us=1_700_000_000 * US)
    # Then it does not move by itself, and moves by exactly what it is told
    assert clock.now_us() == clock.now_us() == 1_700_000_000 * US
    assert clock.advance(1.5) == 1_700_000_001_500_000
    assert clock.now_us() == 1_700_000_001_500_000
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)


def test_the_wall_clock_cannot_be_advanced() -> None:
    with pytest.raises(RuntimeError, match="--virtual-clock"):
        Clock().advance(1)


async def virtual(make_emulator: MakeEmulator, app_server: RecordingApp, **overrides: object) -> Handle:
    return await make_emulator(app_url=app_server.url, virtual_clock=True, dispatch=False, **overrides)


async def test_clock_endpoints(make_emulator: MakeEmulator, app_server: RecordingApp) -> None:
    # Given an emulator with a virtual clock
    emulator = await virtual(make_emulator, app_server)
    before = await emulator.call("GET", "/_emulator/v1/clock")
    assert before["virtual"] is True
    # When it is advanced by a day
    after = await emulator.call("POST", "/_emulator/v1/clock:advance", {"seconds": DAY_S})
    # Then now moved by exactly a day, and says so
    assert after["nowUs"] - before["nowUs"] == DAY_S * US
    assert (await emulator.call("GET", "/_emulator/v1/clock"))["nowUs"] == after["nowUs"]
    assert parse_ts(after["now"], "now") == after["nowUs"]


@pytest.mark.parametrize("body", [{"seconds": -1}, {"seconds": "60"}, {"seconds": True}, {}, {"seconds": 1e12}])
async def test_advance_refuses_bad_input(make_emulator: MakeEmulator, app_server: RecordingApp, body: object) -> None:
    emulator = await virtual(make_emulator, app_server)
    data = await emulator.call("POST", "/_emulator/v1/clock:advance", body, expect=400)
    assert data["error"]["status"] == "INVALID_ARGUMENT"


async def test_a_real_clock_cannot_be_advanced(emulator: Handle) -> None:
    data = await emulator.call("POST", "/_emulator/v1/clock:advance", {"seconds": 5}, expect=400)
    assert "--virtual-clock" in data["error"]["message"]
    assert (await emulator.call("GET", "/_emulator/v1/clock"))["virtual"] is False


async def test_countdown_counts_from_the_emulators_now(make_emulator: MakeEmulator, app_server: RecordingApp) -> None:
    # Given a virtual clock already a day ahead of the wall clock
    emulator = await virtual(make_emulator, app_server)
    now = (await emulator.call("POST", "/_emulator/v1/clock:advance", {"seconds": DAY_S}))["nowUs"]
    # When a task asks for a one-hour countdown (with the scheduleTime a client computed on its wall clock)
    task = await emulator.add(countdown="3600s", scheduleTime="2001-01-01T00:00:00Z")
    # Then it is due an hour after the emulator's now, not in the past
    assert parse_ts(task["scheduleTime"], "t") == now + 3600 * US
    assert (await emulator.drain())["dispatched"] == 0
    await emulator.call("POST", "/_emulator/v1/clock:advance", {"seconds": 3600})
    assert (await emulator.drain())["succeeded"] == 1


@pytest.mark.parametrize(("countdown", "message"), [("soon", "Task.countdown"), ("2592001s", "too far in the future")])
async def test_bad_countdowns_are_refused(
    make_emulator: MakeEmulator, app_server: RecordingApp, countdown: str, message: str
) -> None:
    emulator = await virtual(make_emulator, app_server)
    data = await emulator.call("POST", f"{API}/queues/default/tasks", {"task": {"countdown": countdown}}, expect=400)
    assert message in data["error"]["message"]


async def test_an_eta_becomes_due_when_the_clock_reaches_it(
    make_emulator: MakeEmulator, app_server: RecordingApp
) -> None:
    # Given a task scheduled 90 s after the emulator's now
    emulator = await virtual(make_emulator, app_server)
    now = (await emulator.call("GET", "/_emulator/v1/clock"))["nowUs"]
    eta = now + 90 * US
    await emulator.add(scheduleTime=format_ts(eta))
    # When the clock reaches one microsecond short of it, then the ETA itself
    await emulator.call("POST", "/_emulator/v1/clock:advance", {"seconds": 89.999999})
    early = await emulator.drain()
    await emulator.call("POST", "/_emulator/v1/clock:advance", {"seconds": 0.000001})
    on_time = await emulator.drain()
    # Then it runs only at its ETA
    assert (early["dispatched"], on_time["succeeded"]) == (0, 1)


async def test_backoff_follows_the_virtual_clock(make_emulator: MakeEmulator, app_server: RecordingApp) -> None:
    # Given a task whose first two attempts fail, with a 10 s minimum backoff
    emulator = await virtual(make_emulator, app_server)
    app_server.statuses = [500, 503]
    await emulator.add(name=NAMES + "flaky", retryConfig={"minBackoff": "10s", "maxDoublings": 4})
    # When it fails once
    first = await emulator.drain()
    now = (await emulator.call("GET", "/_emulator/v1/clock"))["nowUs"]
    task = await emulator.call("GET", f"{API}/queues/default/tasks/flaky")
    # Then it is due exactly 10 s later on the emulator's clock, and not before
    assert first["retried"] == 1
    assert parse_ts(task["scheduleTime"], "t") == now + 10 * US
    assert (await emulator.drain())["dispatched"] == 0
    # When 10 s pass it fails again, and waits 20 s (the backoff doubled)
    await emulator.call("POST", "/_emulator/v1/clock:advance", {"seconds": 10})
    second = await emulator.drain()
    task = await emulator.call("GET", f"{API}/queues/default/tasks/flaky")
    assert [f["status"] for f in second["failures"]] == [503]
    assert parse_ts(task["scheduleTime"], "t") == now + 30 * US
    await emulator.call("POST", "/_emulator/v1/clock:advance", {"seconds": 20})
    assert (await emulator.drain())["succeeded"] == 1
    assert [r.headers["X-AppEngine-TaskRetryCount"] for r in app_server.requests] == ["0", "1", "2"]


async def test_the_age_limit_follows_the_virtual_clock(make_emulator: MakeEmulator, app_server: RecordingApp) -> None:
    # Given a task that always fails, may retry for 60 s after its first attempt
    emulator = await virtual(make_emulator, app_server)
    app_server.statuses = [500] * 5
    retry = {"minBackoff": "30s", "maxBackoff": "30s", "maxRetryDuration": "60s"}
    await emulator.add(name=NAMES + "aging", retryConfig=retry)
    verdicts = []
    for _ in range(4):
        report = await emulator.drain()
        verdicts += [f["willRetry"] for f in report["failures"]]
        await emulator.call("POST", "/_emulator/v1/clock:advance", {"seconds": 30})
    # Then it gives up once more than 60 virtual seconds have passed since the first attempt
    assert verdicts == [True, True, True, False]


async def test_tombstones_expire_on_the_virtual_clock(make_emulator: MakeEmulator, app_server: RecordingApp) -> None:
    # Given a named task that ran
    emulator = await virtual(make_emulator, app_server, tombstone_ttl_s=7 * DAY_S)
    name = NAMES + "once"
    await emulator.add(name=name)
    assert (await emulator.drain())["succeeded"] == 1
    # Then its name stays reserved until the tombstone's lifetime has passed on the emulator's clock
    await emulator.call("POST", "/_emulator/v1/clock:advance", {"seconds": 7 * DAY_S - 1})
    refused = await emulator.call(
        "POST", f"{API}/queues/default/tasks", {"task": {"name": name, "appEngineHttpRequest": {}}}, expect=409
    )
    assert refused["error"]["status"] == "ALREADY_EXISTS"
    await emulator.call("POST", "/_emulator/v1/clock:advance", {"seconds": 1})
    assert (await emulator.add(name=name))["name"] == name


async def test_advancing_wakes_the_dispatcher(make_emulator: MakeEmulator, app_server: RecordingApp) -> None:
    # Given automatic dispatch and a task an hour away (the dispatcher sleeps until its ETA)
    emulator = await make_emulator(app_url=app_server.url, virtual_clock=True, dispatch=True)
    await emulator.add(countdown="3600s")
    # When the clock is advanced by an hour
    await emulator.call("POST", "/_emulator/v1/clock:advance", {"seconds": 3600})
    # Then the task is delivered at once, without waiting out the dispatcher's sleep
    [request] = await app_server.wait_for(1, timeout=30)
    assert request.path == "/work"
