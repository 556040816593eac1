"""Attempts per queue over the last minute and the last hour, for the stats, the flow chart and the console."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable

#: What became of an attempt, as the dispatcher settles it: succeeded, will be retried, or gave up.
VERDICTS = ("done", "retry", "failed")
#: (queue, verdict) -> attempts.
Tally = Counter[tuple[str, str]]
#: Minutes the flow chart covers.
FLOW_MINUTES = 60


class Throughput:
    """Counts of recent attempts in per-second and per-minute buckets.

    Buckets rather than one entry per attempt: at thousands of deliveries a second, an hour of
    entries would be millions of objects, while 60 + 60 buckets stay small whatever the rate.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seconds: deque[tuple[int, Tally]] = deque()
        self._minutes: deque[tuple[int, Tally]] = deque()

    def record(self, queue: str, verdict: str) -> None:
        """Count one attempt now, by what became of it (one of VERDICTS)."""
        now = self._clock()
        for buckets, width, keep in ((self._seconds, 1, 60), (self._minutes, 60, FLOW_MINUTES)):
            slot = int(now // width)
            if not buckets or buckets[-1][0] != slot:
                buckets.append((slot, Counter()))
                while buckets[0][0] <= slot - keep:
                    buckets.popleft()
            buckets[-1][1][queue, verdict] += 1

    def last_minute(self) -> dict[str, tuple[int, int]]:
        """Per queue: (succeeded, failed) attempts in the last 60 seconds."""
        return self._sum(self._seconds, int(self._clock()) - 60)

    def last_hour(self) -> dict[str, tuple[int, int]]:
        """Per queue: (succeeded, failed) attempts in the last 60 minutes."""
        return self._sum(self._minutes, int(self._clock() // 60) - 60)

    def per_minute(self) -> dict[str, dict[str, list[int]]]:
        """Per queue and verdict: attempts in each of the last FLOW_MINUTES minutes, oldest first (now's is partial)."""
        current = int(self._clock() // 60)
        first = current - FLOW_MINUTES + 1
        out: dict[str, dict[str, list[int]]] = {}
        for slot, tally in self._minutes:
            if slot < first:
                continue
            for (queue, verdict), count in tally.items():
                series = out.get(queue)
                if series is None:
                    series = out[queue] = {v: [0] * FLOW_MINUTES for v in VERDICTS}
                series[verdict][slot - first] += count
        return out

    @staticmethod
    def _sum(buckets: deque[tuple[int, Tally]], after: int) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for slot, tally in buckets:
            if slot <= after:
                continue
            for (queue, verdict), count in tally.items():
                good, bad = out.get(queue, (0, 0))
                out[queue] = (good + count, bad) if verdict == "done" else (good, bad + count)
        return out
