"""Leases that end while the emulator runs: deliveries whose outcome was lost, and leases left behind.

A claimed task is ``running`` with a lease. Its delivery normally records the outcome and ends the
lease; if that write fails (a full disk, another program holding the database), the task would stay
``running`` until the next start. Here such tasks are kept in memory, counted as in flight, and put
back to ``waiting`` as soon as the database takes the change (tried every second), so they are
delivered again within seconds: at least once, never lost. Leases that ran out with no delivery of
this process behind them are released the same way, every few seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Collection

from .dberrors import StoreUnavailable
from .models import Task
from .store import Store

logger = logging.getLogger(__name__)

#: Seconds between tries to release tasks whose outcome was lost; and between looks for expired leases.
RETRY_S = 1.0
EXPIRED_EVERY_S = 5.0


class Leases:
    """Tasks whose outcome could not be recorded, and the loop that gives them back."""

    def __init__(
        self,
        store: Store,
        now_us: Callable[[], int],
        delivering: Callable[[], Collection[int]],
        released: Callable[[], None],
    ) -> None:
        self.store = store
        self._now_us = now_us
        self._delivering = delivering
        self._released = released
        #: task id -> queue, for tasks still leased in the database whose delivery is over.
        self.lost: dict[int, str] = {}
        self._per_queue: Counter[str] = Counter()
        self._kick = asyncio.Event()
        self._warned = ""

    def lose(self, task: Task) -> None:
        """A delivery ended but its outcome was not written: give the task back as soon as possible."""
        if task.id not in self.lost:
            self.lost[task.id] = task.queue
            self._per_queue[task.queue] += 1
        self._kick.set()

    def count(self, queue: str | None = None) -> int:
        """Tasks waiting to be given back (in one queue, or in all): still in flight as far as users see."""
        return self._per_queue[queue] if queue else len(self.lost)

    async def run(self) -> None:
        """Give back lost tasks every second and expired leases every few seconds, until cancelled."""
        loop = asyncio.get_running_loop()
        next_expiry = loop.time() + EXPIRED_EVERY_S
        while True:
            wait = RETRY_S if self.lost else max(0.0, next_expiry - loop.time())
            try:
                await asyncio.wait_for(self._kick.wait(), wait)
                await asyncio.sleep(RETRY_S)  # let the database recover before the first try
            except TimeoutError:
                pass
            self._kick.clear()
            check_expired = loop.time() >= next_expiry
            if check_expired:
                next_expiry = loop.time() + EXPIRED_EVERY_S
            await self.sweep(expired=check_expired)

    async def sweep(self, expired: bool = True) -> int:
        """Put lost tasks (and, with ``expired``, tasks whose lease ran out) back to waiting; how many."""
        count = 0
        try:
            if self.lost:
                ids = list(self.lost)
                count += await self.store.release_tasks(ids)
                for task_id in ids:
                    self._per_queue[self.lost.pop(task_id)] -= 1
            if expired:
                count += await self.store.expire_leases(self._now_us(), set(self._delivering()))
        except StoreUnavailable as exc:
            if exc.message != self._warned:
                logger.warning("%d delivered task(s) wait to be retried: %s", len(self.lost), exc.message)
                self._warned = exc.message
            return count
        if self._warned:
            logger.warning("the database takes changes again")
            self._warned = ""
        if count:
            logger.info("%d task(s) whose outcome was not recorded will be delivered again", count)
            self._released()
        return count
