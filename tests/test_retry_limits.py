"""Retry limits end to end: task_retry_limit, task_age_limit, both together, task versus queue options."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import API, Handle, MakeEmulator, RecordingApp
from deferred_emulator.api.timefmt import format_ts, parse_ts

US = 1_000_000


async def start(make_emulator: MakeEmulator, app: RecordingApp, tmp_path: Path, yaml: str, **kw: Any) -> Handle:
    path = tmp_path / "queue.yaml"
    path.write_text(yaml)
    return await make_emulator(app_url=app.url, queue_yaml=str(path), **kw)


def queue_yaml(retry: dict[str, Any], name: str = "q") -> str:
    lines = "".join(f"    {k}: {v}\n" for k, v in retry.items())
    return f"queue:\n- name: {name}\n  rate: 500/s\n  bucket_size: 500\n  retry_parameters:\n{lines}"


async def get_task(emu: Handle, name: str, queue: str = "q") -> dict[str, Any]:
    return dict(await emu.call("GET", f"{API}/queues/{queue}/tasks/{name}"))


async def advance(emu: Handle, seconds: float) -> None:
    await emu.call("POST", "/_emulator/v1/clock:advance", {"seconds": seconds})


async def run_until_failed(emu: Handle, step_s: float, name: str = "t", rounds: int = 12) -> int:
    """Drain, move the virtual clock by ``step_s``, and repeat until the task gives up; return the attempts."""
    for _ in range(rounds):
        await emu.drain()
        task = await get_task(emu, name)
        if task["state"] == "FAILED":
            return int(task["dispatchCount"])
        await advance(emu, step_s)
    raise AssertionError(f"task {name} still retrying after {rounds} rounds")


async def test_retry_limit_two_gives_three_attempts_then_failed(
    make_emulator: MakeEmulator, app_server: RecordingApp, tmp_path: Path
) -> None:
    # Given a queue with task_retry_limit 2 and no backoff, and an app that always fails
    yaml = queue_yaml({"task_retry_limit": 2, "min_backoff_seconds": 0, "max_backoff_seconds": 0})
    emu = await start(make_emulator, app_server, tmp_path, yaml)
    app_server.statuses = [500] * 10
    # When a task is added and dispatched automatically
    await emu.add("q", name="t")
    requests = await app_server.wait_for(3)
    async with asyncio.timeout(5):
        while (await get_task(emu, "t"))["state"] != "FAILED":
            await asyncio.sleep(0.02)
    # Then it was attempted exactly 3 times (first attempt + 2 retries) and is kept as FAILED
    assert (await emu.drain())["dispatched"] == 0
    assert len(app_server.requests) == 3
    assert [r.headers["X-AppEngine-TaskRetryCount"] for r in requests] == ["0", "1", "2"]
    task = await get_task(emu, "t")
    assert task["dispatchCount"] == 3
    assert task["lastResponse"]["status"] == 500
    listed = await emu.call("GET", f"{API}/queues/q/tasks")
    assert [t["state"] for t in listed["tasks"]] == ["FAILED"]
    # And its name is tombstoned
    again = await emu.call("POST", f"{API}/queues/q/tasks", {"task": {"name": "t"}}, expect=409)
    assert "tombstoned" in again["error"]["message"]


async def test_retry_limit_zero_means_no_retry(
    make_emulator: MakeEmulator, app_server: RecordingApp, tmp_path: Path
) -> None:
    yaml = queue_yaml({"task_retry_limit": 0})
    emu = await start(make_emulator, app_server, tmp_path, yaml, dispatch=False)
    app_server.statuses = [500]
    await emu.add("q", name="t")
    report = await emu.drain()
    assert (report["dispatched"], report["failed"], report["retried"]) == (1, 1, 0)
    assert (await get_task(emu, "t"))["state"] == "FAILED"


@pytest.mark.parametrize(
    ("retry_limit", "age_limit", "attempts"),
    [
        (1, None, 2),  # retry limit alone
        (None, "10s", 4),  # age limit alone: attempts at 0, 4, 8, 12 s; the one at 12 s is past 10 s
        (1, "10s", 4),  # both: the retry limit is used up first, the age limit decides
        (5, "2s", 6),  # both: the age limit is passed first, the retry limit decides
    ],
)
async def test_retry_and_age_limits(
    make_emulator: MakeEmulator,
    app_server: RecordingApp,
    tmp_path: Path,
    retry_limit: int | None,
    age_limit: str | None,
    attempts: int,
) -> None:
    # Given a queue retrying every 4 s with these limits, on the virtual clock
    retry: dict[str, Any] = {"min_backoff_seconds": 4, "max_backoff_seconds": 4}
    if retry_limit is not None:
        retry["task_retry_limit"] = retry_limit
    if age_limit is not None:
        retry["task_age_limit"] = age_limit
    emu = await start(make_emulator, app_server, tmp_path, queue_yaml(retry), dispatch=False, virtual_clock=True)
    app_server.statuses = [500] * 20
    await emu.add("q", name="t")
    # When it fails every time
    # Then it gives up after the expected number of attempts (both limits must be exceeded when both are set)
    assert await run_until_failed(emu, 4) == attempts
    assert len(app_server.requests) == attempts


async def test_age_counts_from_the_first_attempt(
    make_emulator: MakeEmulator, app_server: RecordingApp, tmp_path: Path
) -> None:
    # Given a task created now but scheduled 100 s ahead, with a 10 s age limit
    yaml = queue_yaml({"task_age_limit": "10s", "min_backoff_seconds": 4, "max_backoff_seconds": 4})
    emu = await start(make_emulator, app_server, tmp_path, yaml, dispatch=False, virtual_clock=True)
    app_server.statuses = [500] * 20
    await emu.add("q", name="t", scheduleTime=format_ts(emu.emulator.now_us() + 100 * US))
    await advance(emu, 100)
    # When it fails every time
    # Then the 100 s it waited do not count: it still gets 12 s of retries (4 attempts)
    assert await run_until_failed(emu, 4) == 4


async def test_task_retry_options_replace_the_queues(
    make_emulator: MakeEmulator, app_server: RecordingApp, tmp_path: Path
) -> None:
    # Given a queue that never retries and backs off 100 s, and a task with its own options (3 attempts)
    yaml = queue_yaml({"task_retry_limit": 0, "min_backoff_seconds": 100})
    emu = await start(make_emulator, app_server, tmp_path, yaml, dispatch=False, virtual_clock=True)
    app_server.statuses = [500] * 10
    await emu.add("q", name="t", retryConfig={"maxAttempts": 3})
    # When the first attempt fails
    await emu.drain()
    task = await get_task(emu, "t")
    # Then the task's options apply as a whole: it will retry, after the default 0.1 s (not the queue's 100 s)
    assert task["state"] == "WAITING"
    wait_s = (parse_ts(task["scheduleTime"], "") - emu.emulator.now_us()) / US
    assert wait_s < 1
    # And it gives up after its own 3 attempts
    assert await run_until_failed(emu, 1) == 3


async def test_backoff_sequence_on_the_clock(
    make_emulator: MakeEmulator, app_server: RecordingApp, tmp_path: Path
) -> None:
    # Given a queue with min 10 s, max 300 s and 3 doublings, and an app that keeps failing
    yaml = queue_yaml({"min_backoff_seconds": 10, "max_backoff_seconds": 300, "max_doublings": 3})
    emu = await start(make_emulator, app_server, tmp_path, yaml, dispatch=False, virtual_clock=True)
    app_server.statuses = [500] * 10
    await emu.add("q", name="t")
    waits = []
    for _ in range(7):
        # When an attempt fails
        await emu.drain()
        task = await get_task(emu, "t")
        failed_at = parse_ts(task["lastAttempt"]["responseTime"], "")
        wait_s = (parse_ts(task["scheduleTime"], "") - failed_at) / US
        waits.append(round(wait_s))
        # (and nothing is delivered before the wait is over)
        await advance(emu, wait_s - 1)
        assert (await emu.drain())["dispatched"] == 0
        await advance(emu, 1)
    # Then the waits are App Engine's: doubling three times, then linear, then capped
    assert waits == [10, 20, 40, 80, 160, 240, 300]
    assert len(app_server.requests) == 7
