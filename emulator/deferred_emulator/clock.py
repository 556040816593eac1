"""Real and virtual clocks; all times are integer microseconds since the epoch."""

from __future__ import annotations

import time

US = 1_000_000


class Clock:
    """The wall clock."""

    virtual = False

    def now_us(self) -> int:
        """Microseconds since the epoch."""
        return time.time_ns() // 1000

    def advance(self, seconds: float) -> int:
        """Only a virtual clock can be moved."""
        raise RuntimeError("the clock can only be advanced with --virtual-clock")


class VirtualClock(Clock):
    """A clock that stands still and moves only through ``advance``: tests decide when time passes.

    It starts at the wall time. Countdowns, ETAs, backoff, age limits and tombstone lifetimes follow
    it, so a retry 60 s away is exactly 60 s away until a test advances the clock; dispatch deadlines
    and rate limits keep using real time.
    """

    virtual = True

    def __init__(self, start_us: int | None = None) -> None:
        self._now_us = time.time_ns() // 1000 if start_us is None else start_us

    def now_us(self) -> int:
        """The clock's current time (the same until the next ``advance``)."""
        return self._now_us

    def advance(self, seconds: float) -> int:
        """Move time forward by ``seconds`` (never backward) and return the new now."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._now_us += int(seconds * US)
        return self._now_us
