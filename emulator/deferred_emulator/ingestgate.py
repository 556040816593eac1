"""Adding tasks yields to delivering them: while due tasks wait for a delivery slot, adds get a bounded share.

Adds and deliveries share one event loop. An add costs about three deliveries of the loop's time,
so with many clients adding as fast as they can, plain turn-taking left deliveries a fifth of their
idle rate. While the dispatcher has more due tasks than it could start (``busy``), each add first
waits for credit: credit accrues at ``share`` seconds per second and an add spends the time it took,
times ``OVERHEAD`` for what the loop spends on a request outside the measured part (reading and
routing it, parsing its JSON, writing the answer). The time is wall time, so a busy machine's
preemptions count against adds (they wait more, never less); nothing is timed while deliveries keep
up. The adds that wait are parked futures, released in order by one timer; they cost nothing
meanwhile, and their clients simply wait longer.
When the dispatcher catches up, every waiting add goes on at once and adds are not metered at all.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

#: Share of the loop's time adds may take while deliveries are behind.
SHARE = 0.25
#: A request costs the loop about this many times the part measured around the store's add.
OVERHEAD = 3.0
#: Most credit saved up (seconds): a burst of adds after a quiet spell.
BURST_S = 0.005
#: Shortest wait of the release timer (seconds), so it does not spin.
MIN_WAIT_S = 0.001


class IngestGate:
    """Meters adds while deliveries are behind (see the module docstring)."""

    def __init__(self, share: float = SHARE, clock: Callable[[], float] = time.perf_counter) -> None:
        self.share = share
        self._clock = clock
        self.busy = False
        self._credit = BURST_S
        self._refilled = clock()
        #: The expected cost of the next add (seconds), charged when it is let in and corrected after.
        self._cost = 0.0003
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        #: Adds that had to wait, for the curious and the tests.
        self.delayed = 0

    def __repr__(self) -> str:
        return f"<IngestGate busy={self.busy} waiting={len(self._waiting)} delayed={self.delayed}>"

    def set_busy(self, busy: bool) -> None:
        """The dispatcher has more due tasks than it could start (True), or has caught up (False)."""
        if busy == self.busy:
            return
        self.busy = busy
        if busy:
            self._refilled, self._credit = self._clock(), BURST_S
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            self._let_in(self._waiting.popleft())

    async def admit(self) -> float:
        """Wait for this add's turn (at once unless deliveries are behind); what to pass to ``spent``."""
        if not self.busy:
            return 0.0
        self._refill()
        if self._waiting or self._credit <= 0:
            self.delayed += 1
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            self._schedule()
            try:
                await waiter
            except asyncio.CancelledError:
                if not waiter.done():
                    self._waiting.remove(waiter)
                raise
        else:
            self._credit -= self._cost
        return self._clock()

    def spent(self, since: float) -> None:
        """An admitted add has ended: charge what it really cost instead of the estimate."""
        if not since:
            return  # let in unmetered
        cost = (self._clock() - since) * OVERHEAD
        if self.busy:
            self._credit -= cost - self._cost
        self._cost = 0.8 * self._cost + 0.2 * cost

    def _refill(self) -> None:
        now = self._clock()
        self._credit = min(BURST_S, self._credit + (now - self._refilled) * self.share)
        self._refilled = now

    def _let_in(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_result(None)

    def _schedule(self) -> None:
        if self._timer is None:
            wait = max(MIN_WAIT_S, -self._credit / self.share)
            self._timer = asyncio.get_running_loop().call_later(wait, self._release)

    def _release(self) -> None:
        self._timer = None
        self._refill()
        while self._waiting and self._credit > 0:
            waiter = self._waiting.popleft()
            if not waiter.done():
                self._credit -= self._cost
                self._let_in(waiter)
        if self._waiting:
            self._schedule()
