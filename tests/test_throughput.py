"""Recent attempts per queue, in buckets: exact to the second over a minute, to the minute over an hour."""

from __future__ import annotations

from deferred_emulator.throughput import Throughput


class FakeClock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


def test_attempts_count_for_a_minute_and_for_an_hour() -> None:
    clock = FakeClock()
    counts = Throughput(clock)
    # Given attempts now, 30 s ago and 20 minutes ago, in two queues
    clock.now -= 20 * 60
    counts.record("mail", "done")
    clock.now += 20 * 60 - 30
    counts.record("default", "retry")
    clock.now += 30
    counts.record("default", "done")
    counts.record("default", "done")
    # Then the minute holds the last two seconds' attempts, the hour all of them
    assert counts.last_minute() == {"default": (2, 1)}
    assert counts.last_hour() == {"default": (2, 1), "mail": (1, 0)}
    # And a minute later the minute is empty while the hour still holds them
    clock.now += 61
    assert counts.last_minute() == {}
    assert counts.last_hour() == {"default": (2, 1), "mail": (1, 0)}
    # And after an hour nothing is left
    clock.now += 3600
    assert counts.last_hour() == {}


def test_memory_stays_bounded_whatever_the_rate() -> None:
    clock = FakeClock()
    counts = Throughput(clock)
    for _ in range(3 * 3600):  # three hours, ten attempts a second
        clock.now += 1
        for _ in range(10):
            counts.record("default", "done")
    assert len(counts._seconds) <= 61 and len(counts._minutes) <= 61
    assert counts.last_minute() == {"default": (600, 0)}
    assert counts.last_hour()["default"][0] in range(3600 * 10 - 600, 3600 * 10 + 1)


def test_per_minute_series_cover_the_hour_by_verdict() -> None:
    clock = FakeClock()
    counts = Throughput(clock)
    clock.now = 60 * 1000.0  # the start of a minute
    # Given attempts 61 minutes ago (out of the window), 59 minutes ago and in the current minute
    clock.now -= 61 * 60
    counts.record("mail", "done")
    clock.now += 2 * 60
    counts.record("mail", "failed")
    clock.now += 59 * 60 + 5
    counts.record("mail", "done")
    counts.record("mail", "retry")
    counts.record("mail", "retry")
    # Then each verdict has 60 points, oldest first, with the current minute last
    series = counts.per_minute()["mail"]
    assert set(series) == {"done", "retry", "failed"}
    assert all(len(points) == 60 for points in series.values())
    assert series["failed"][0] == 1 and sum(series["failed"]) == 1
    assert series["done"][-1] == 1 and sum(series["done"]) == 1
    assert series["retry"][-1] == 2
    # And a queue with no attempt in the hour has no series
    clock.now += 3600
    assert counts.per_minute() == {}
