"""The dispatcher against apps that fail: statuses, hangs, closed ports, and the spacing of retries."""

from __future__ import annotations

import socket
from datetime import datetime
from pathlib import Path

import pytest
from aiohttp import web
from conftest import API, Handle, MakeEmulator, RecordingApp
from deferred_emulator.api.common import runtime_key
from deferred_emulator.app import create_app
from deferred_emulator.dispatcher import Dispatcher
from deferred_emulator.settings import Settings


def seconds(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


async def test_attempts_are_spaced_by_the_backoff_formula(emulator: Handle, app_server: RecordingApp) -> None:
    # Given an app that always fails and a task with a 0.1 s doubling backoff and 3 retries
    app_server.statuses = [500] * 4
    retry = {"minBackoff": "0.1s", "maxBackoff": "10s", "maxDoublings": 5, "maxAttempts": 4}
    await emulator.add(name="flaky", retryConfig=retry)
    # When it is retried until it gives up
    requests = await app_server.wait_for(4)
    await emulator.drain()
    task = await emulator.call("GET", f"{API}/queues/default/tasks/flaky")
    assert task["state"] == "FAILED"
    # Then each retry was scheduled 0.1, 0.2, 0.4 s after the previous answer
    attempts = await emulator.emulator.store.attempts(await _task_id(emulator))
    scheduled = [(b.schedule_us - a.response_us) / 1e6 for a, b in zip(attempts, attempts[1:])]
    assert [round(s, 2) for s in scheduled] == [0.1, 0.2, 0.4], scheduled
    # And the app never saw an attempt early
    gaps = [b.time - a.time for a, b in zip(requests, requests[1:])]
    assert all(gap >= expected - 0.01 for gap, expected in zip(gaps, [0.1, 0.2, 0.4])), gaps


async def _task_id(emulator: Handle) -> int:
    task = await emulator.emulator.store.get_task("default", "flaky")
    assert task is not None
    return task.id


async def test_backoff_sequence_on_the_virtual_clock(make_emulator: MakeEmulator, app_server: RecordingApp) -> None:
    # Given an app that always fails, and a queue with min 10 s, max 300 s, 3 doublings
    emulator = await make_emulator(app_url=app_server.url, virtual_clock=True, dispatch=False)
    app_server.statuses = [500] * 20
    retry = {"minBackoff": "10s", "maxBackoff": "300s", "maxDoublings": 3}
    await emulator.call("PATCH", f"{API}/queues/default?updateMask=retryConfig", {"retryConfig": retry})
    created = await emulator.add(name="failing")
    waits = []
    for _ in range(8):
        # When the due attempt runs and fails
        report = await emulator.drain()
        assert report["dispatched"] == 1, report
        task = await emulator.call("GET", f"{API}/queues/default/tasks/failing")
        now = seconds((await emulator.call("GET", "/_emulator/v1/clock"))["now"])
        waits.append(round(seconds(task["scheduleTime"]) - seconds(task["lastAttempt"]["dispatchTime"])))
        wait = seconds(task["scheduleTime"]) - now
        # Then nothing is due until the backoff has passed
        await emulator.call("POST", "/_emulator/v1/clock:advance", {"seconds": wait - 5})
        assert (await emulator.drain())["dispatched"] == 0
        await emulator.call("POST", "/_emulator/v1/clock:advance", {"seconds": 5})
    assert waits == [10, 20, 40, 80, 160, 240, 300, 300]
    assert task["name"] == created["name"]
    assert task["dispatchCount"] == 8


async def test_a_hung_handler_is_retried_as_instance_unavailable(
    make_emulator: MakeEmulator, app_server: RecordingApp
) -> None:
    # Given an app that hangs longer than the dispatch deadline (the virtual clock keeps the retry
    # from coming due inside drain, however slowly the machine runs)
    emulator = await make_emulator(
        app_url=app_server.url, dispatch=False, ignore_rate_limits=True, dispatch_deadline_s=0.2, virtual_clock=True
    )
    app_server.hang_s = 2.0
    await emulator.add(name="slow-default")
    # When the deadline passes
    report = await emulator.drain(queues=["default"], timeout=10.0)
    # Then the short-deadline attempt counts as failed without a response, and the server lives on
    failures = {f["task"]: f for f in report["failures"]}
    assert failures["slow-default"]["status"] == 0
    assert "deadline" in failures["slow-default"]["response"]
    task = await emulator.call("GET", f"{API}/queues/default/tasks/slow-default")
    assert task["retryCount"] == 1
    assert task["executionCount"] == 0
    assert (await emulator.call("GET", "/_emulator/v1/health"))["ok"] is True
    # And the next attempt says why
    app_server.hang_s = 0
    # (on a loaded machine the first attempt can hit its deadline before the app even reads it)
    before = len(app_server.requests)
    await emulator.call("POST", f"{API}/queues/default/tasks/slow-default:run", {})
    requests = await app_server.wait_for(before + 1)
    retried = [r for r in requests if r.headers["X-AppEngine-TaskName"] == "slow-default"][-1]
    assert retried.headers["X-AppEngine-TaskRetryCount"] == "1"
    assert retried.headers["X-AppEngine-TaskPreviousResponse"] == "0"
    assert retried.headers["X-AppEngine-TaskRetryReason"] == "Instance Unavailable"


async def test_a_closed_port_and_a_redirect_are_failures(make_emulator: MakeEmulator, app_server: RecordingApp) -> None:
    # Given an app URL where nothing listens
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    emulator = await make_emulator(app_url=f"http://127.0.0.1:{closed}", dispatch=False, ignore_rate_limits=True)
    await emulator.add(name="nowhere")
    # When it is drained
    report = await emulator.drain()
    # Then the attempt failed without a response and the task waits for its retry
    assert report["failures"][0]["status"] == 0
    task = await emulator.call("GET", f"{API}/queues/default/tasks/nowhere")
    assert (task["retryCount"], task["state"]) == (1, "WAITING")
    # And a redirect is a failure too, not followed
    other = await make_emulator(app_url=app_server.url, dispatch=False, ignore_rate_limits=True, db_path=":memory:")
    app_server.statuses = [302]
    await other.add(name="moved")
    report = await other.drain()
    assert [f["status"] for f in report["failures"]] == [302]
    assert [r.path for r in app_server.requests] == ["/work"]


async def test_a_failing_step_of_shutdown_still_closes_the_connections_and_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a running app whose dispatcher fails to stop
    async def broken(self: Dispatcher) -> None:
        raise RuntimeError("dispatcher stuck")

    monkeypatch.setattr(Dispatcher, "close", broken)
    runner = web.AppRunner(create_app(Settings(db_path=str(tmp_path / "t.sqlite3"), port=0)), access_log=None)
    await runner.setup()
    runtime = runner.app[runtime_key]
    session, store = runtime.dispatcher.session, runtime.emulator.store
    # When the app shuts down, then the failure is raised, and the session and the database are closed all the same
    with pytest.raises(RuntimeError, match="dispatcher stuck"):
        await runner.cleanup()
    assert session.closed
    assert store.db._connection is None
