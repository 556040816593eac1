"""Rate limits: the token bucket, max_concurrent_requests, pause/resume, and queues kept apart."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import API, Handle, MakeEmulator
from deferred_emulator.ratelimit import TokenBucket

# -- the bucket on its own -----------------------------------------------------------------------


def test_bucket_starts_full_and_refills_at_the_rate() -> None:
    # Given a bucket of 2 refilled at 2 per second
    bucket = TokenBucket(2.0, 2, now_s=100.0)
    # Then two tokens are there at once, and none after they are spent
    assert bucket.available(100.0) == 2
    bucket.take(2, 100.0)
    assert bucket.available(100.0) == 0
    assert bucket.wait_s(100.0) == pytest.approx(0.5)
    # And one comes back every half second, never more than the bucket holds
    assert bucket.available(100.5) == 1
    assert bucket.available(110.0) == 2


def test_rate_zero_never_refills() -> None:
    bucket = TokenBucket(0.0, 1, now_s=0.0)
    bucket.take(1, 0.0)
    assert bucket.wait_s(1000.0) is None
    assert bucket.available(1000.0) == 0


def test_configure_keeps_earned_tokens_up_to_the_new_size() -> None:
    # Given an empty bucket refilling at 1/s
    bucket = TokenBucket(1.0, 10, now_s=0.0)
    bucket.take(10, 0.0)
    # When, 4 seconds later, it becomes 100/s with room for 3
    bucket.configure(100.0, 3, now_s=4.0)
    # Then the 4 tokens earned at the old rate are kept, capped at 3, and the new rate applies from then on
    assert bucket.available(4.0) == 3
    bucket.take(3, 4.0)
    assert bucket.available(4.02) == 2


# -- delivery against a real app -----------------------------------------------------------------


@dataclass
class Probe:
    """An app that records arrival times and how many deliveries are in flight at once, per path."""

    url: str = ""
    arrivals: list[tuple[str, float]] = field(default_factory=list)
    in_flight: Counter[str] = field(default_factory=Counter)
    most: Counter[str] = field(default_factory=Counter)
    hold_s: float = 0.0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def times(self, path: str) -> list[float]:
        return [t for p, t in self.arrivals if p == path]

    async def wait_for(self, path: str, count: int, timeout: float = 8.0) -> list[float]:
        async with asyncio.timeout(timeout):
            while len(self.times(path)) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.times(path)


@pytest.fixture
async def probe(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Probe:
    rec = Probe()

    async def handle(request: web.Request) -> web.Response:
        path = request.path
        rec.arrivals.append((path, asyncio.get_running_loop().time()))
        rec.in_flight[path] += 1
        rec.most[path] = max(rec.most[path], rec.in_flight[path])
        rec.arrived.set()
        try:
            if path == "/slow":
                # Hangs until the test lets go (bounded, so a failing test cannot hang the run).
                await asyncio.wait_for(rec.release.wait(), 5)
            elif rec.hold_s:
                await asyncio.sleep(rec.hold_s)
        finally:
            rec.in_flight[path] -= 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    rec.url = str(server.make_url("")).rstrip("/")
    return rec


async def emulator_with(make_emulator: MakeEmulator, probe: Probe, tmp_path: Path, yaml: str, **kw: object) -> Handle:
    path = tmp_path / "queue.yaml"
    path.write_text(yaml)
    return await make_emulator(app_url=probe.url, queue_yaml=str(path), **kw)


async def add_many(emu: Handle, queue: str, count: int, uri: str = "/work") -> None:
    """Add ``count`` tasks in one atomic batch, so they are all due at the same moment."""
    tasks = [{"queue": queue, "task": {"appEngineHttpRequest": {"relativeUri": uri}}} for _ in range(count)]
    await emu.call("POST", "/_emulator/v1/tasks:batchAdd", {"tasks": tasks})


class LagMeter:
    """Measures how long this event loop was held up beyond a 10 ms tick, in total.

    On a busy machine the process can be descheduled for a second or more; the emulator's dispatcher
    runs in this loop, so such a stall delays deliveries by as much. Upper bounds add the stall back.
    """

    TICK_S = 0.01

    def __init__(self) -> None:
        self.lag_s = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.TICK_S)
            self.lag_s += max(0.0, loop.time() - before - self.TICK_S)

    def __enter__(self) -> LagMeter:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def assert_within_bucket(times: list[float], rate: float, bucket: int, stalls_s: float) -> None:
    """No prefix of the deliveries outran a full bucket plus what the rate refilled since the first.

    Arrival times are seen by an app in this same process, so a stall of the process can bunch
    deliveries that left on time; the measured stall time is allowed for (it is ~0 on an idle machine).
    """
    slack_s = 0.05 + stalls_s
    for count, t in enumerate(times, start=1):
        allowed = bucket + rate * (t - times[0] + slack_s)
        assert count <= allowed, f"{count} deliveries by {t - times[0]:.3f}s: {[round(x - times[0], 3) for x in times]}"


async def test_two_per_second_with_a_bucket_of_two_spreads_ten_tasks_over_four_seconds(
    make_emulator: MakeEmulator, probe: Probe, tmp_path: Path
) -> None:
    # Given a queue at 2/s with a bucket of 2
    emu = await emulator_with(make_emulator, probe, tmp_path, "queue:\n- name: slow\n  rate: 2/s\n  bucket_size: 2\n")
    # When 10 tasks are due at once
    with LagMeter() as stalls:
        await add_many(emu, "slow", 10)
        times = await probe.wait_for("/work", 10, timeout=30)
    # Then two may go at once (the bucket), then one per half second: about 4 s from first to last
    assert_within_bucket(times, rate=2, bucket=2, stalls_s=stalls.lag_s)
    span = times[-1] - times[0]
    assert 3.9 - stalls.lag_s <= span <= 4.5 + stalls.lag_s, (span, stalls.lag_s)


async def test_a_bucket_smaller_than_the_rate(make_emulator: MakeEmulator, probe: Probe, tmp_path: Path) -> None:
    # Given a queue at 10/s with a bucket of 2
    emu = await emulator_with(make_emulator, probe, tmp_path, "queue:\n- name: q\n  rate: 10/s\n  bucket_size: 2\n")
    # When 12 tasks are due at once
    with LagMeter() as stalls:
        await add_many(emu, "q", 12)
        times = await probe.wait_for("/work", 12, timeout=30)
    # Then at most 2 go at once and the rest follow at 10 a second: about 1 s in all
    assert_within_bucket(times, rate=10, bucket=2, stalls_s=stalls.lag_s)
    span = times[-1] - times[0]
    assert 0.95 - stalls.lag_s <= span <= 1.4 + stalls.lag_s, (span, stalls.lag_s)


async def test_ignore_rate_limits_delivers_at_once(make_emulator: MakeEmulator, probe: Probe, tmp_path: Path) -> None:
    # Given the same 2/s queue, with --ignore-rate-limits
    yaml = "queue:\n- name: slow\n  rate: 2/s\n  bucket_size: 2\n  max_concurrent_requests: 1\n"
    emu = await emulator_with(make_emulator, probe, tmp_path, yaml, ignore_rate_limits=True)
    probe.hold_s = 0.05
    # When 10 tasks are due at once
    with LagMeter() as stalls:
        await add_many(emu, "slow", 10)
        times = await probe.wait_for("/work", 10, timeout=30)
    # Then they are all delivered together (no half-second spacing), concurrency limit ignored too
    assert times[-1] - times[0] < 0.5 + stalls.lag_s, (times[-1] - times[0], stalls.lag_s)
    assert probe.most["/work"] > 1


@pytest.mark.parametrize("limit", [1, 3])
async def test_max_concurrent_requests(make_emulator: MakeEmulator, probe: Probe, tmp_path: Path, limit: int) -> None:
    # Given a fast queue that allows `limit` deliveries at once, and a handler that takes 100 ms
    yaml = f"queue:\n- name: q\n  rate: 500/s\n  bucket_size: 500\n  max_concurrent_requests: {limit}\n"
    emu = await emulator_with(make_emulator, probe, tmp_path, yaml)
    probe.hold_s = 0.1
    # When 6 tasks are due at once
    await add_many(emu, "q", 6)
    await probe.wait_for("/work", 6, timeout=30)
    await until_idle(emu)
    # Then never more than `limit` were in flight, and the limit was reached
    assert probe.most["/work"] == limit


async def until_idle(emu: Handle) -> None:
    async with asyncio.timeout(15):
        while emu.dispatcher.in_flight():
            await asyncio.sleep(0.01)


async def test_pause_and_resume(make_emulator: MakeEmulator, probe: Probe, tmp_path: Path) -> None:
    # Given a paused queue
    emu = await emulator_with(make_emulator, probe, tmp_path, "queue:\n- name: q\n  rate: 50/s\n")
    paused = await emu.call("POST", f"{API}/queues/q:pause", {})
    assert paused["state"] == "PAUSED"
    # When tasks are added, they are accepted but nothing is dispatched, even by drain
    await add_many(emu, "q", 3)
    assert (await emu.drain())["dispatched"] == 0
    assert probe.arrivals == []
    # When it is resumed, they are delivered
    resumed = await emu.call("POST", f"{API}/queues/q:resume", {})
    assert resumed["state"] == "RUNNING"
    assert len(await probe.wait_for("/work", 3)) == 3


async def test_rate_zero_through_the_api_dispatches_nothing(make_emulator: MakeEmulator, probe: Probe) -> None:
    # Given a running queue whose rate was set to 0 through the API, holding a due task
    emu = await make_emulator(app_url=probe.url, dispatch=False)
    await emu.call("PATCH", f"{API}/queues/default", {"rateLimits": {"maxDispatchesPerSecond": 0}})
    await emu.add("default")
    # When the dispatcher looks for work
    delay = await emu.dispatcher.run_once()
    # Then it starts nothing and sets no timer for that queue
    assert emu.dispatcher.in_flight() == 0
    assert delay is None


async def test_a_slow_queue_never_delays_another(make_emulator: MakeEmulator, probe: Probe, tmp_path: Path) -> None:
    # Given a queue whose handler hangs, enough of its tasks to fill every delivery slot, and a second queue
    yaml = "queue:\n- name: stuck\n  rate: 500/s\n  bucket_size: 500\n- name: quick\n  rate: 500/s\n"
    emu = await emulator_with(make_emulator, probe, tmp_path, yaml, max_in_flight=4)
    try:
        await add_many(emu, "stuck", 10, "/slow")
        await probe.wait_for("/slow", 2)
        # When tasks arrive in the other queue while the first is stuck
        await add_many(emu, "quick", 3)
        await probe.wait_for("/work", 3, timeout=10)
        # Then they are delivered while the stuck deliveries still hang, and the stuck queue never
        # held more than its share of the slots
        assert probe.in_flight["/slow"] == 2
        assert probe.most["/slow"] == 2
    finally:
        probe.release.set()
    assert len(await probe.wait_for("/slow", 10)) == 10
