"""The dispatcher: claims due tasks, delivers them within rate limits, and records the outcome."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from .attemptfeed import AttemptFeed
from .clock import US
from .dbaccess import NotNow
from .dberrors import StoreUnavailable
from .delivery import Outcome, build_headers, deliver, target_url
from .httptarget import apply_http_target
from .leases import Leases
from .models import Attempt, QueueConfig, QueueState, TargetKind, Task
from .outcomes import drain_report, settle
from .plainhttp import Pool
from .ratelimit import TokenBucket
from .service import Emulator, Hooks
from .settings import Settings
from .throughput import Throughput

logger = logging.getLogger(__name__)

#: Most tasks claimed from one queue in one statement.
CLAIM_BATCH = 100
#: "No timer": the loop sleeps until something wakes it.
FOREVER_US = 2**62
#: How long close() lets deliveries in flight finish before it cancels them.
CLOSE_GRACE_S = 5.0
#: Shortest timed wait of the loop under a virtual clock.
VIRTUAL_POLL_S = 0.01

Listener = Callable[[Task, Outcome, str], None]


class Dispatcher:
    """Delivers due tasks: event-driven, bounded in flight, token bucket and concurrency per queue."""

    def __init__(self, emulator: Emulator, session: aiohttp.ClientSession) -> None:
        self.emulator = emulator
        self.store = emulator.store
        self.session = session
        #: Kept-alive connections for plain-HTTP deliveries (the others go through ``session``).
        self.pool = Pool()
        self._event = asyncio.Event()
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._per_queue: Counter[str] = Counter()
        self._buckets: dict[str, TokenBucket] = {}
        self._listeners: list[Listener] = []
        self._closing = False
        #: When the loop will look again by itself (emulator µs); None while it is awake.
        self._sleeping_until: int | None = None
        #: Whether the last pass stopped at a concurrency limit (a finishing delivery should wake it).
        self._starved = False
        #: Whether the last pass left due tasks for want of a free slot (not for a queue's own rate or limit).
        self._behind = False
        #: Outcomes waiting to be written together, and the task writing them (group commit).
        self._to_commit: list[tuple[tuple[Task, Attempt, str, int], asyncio.Future[None]]] = []
        self._committer: asyncio.Task[None] | None = None
        self._flush_soon = False
        #: Recent attempts per queue, for the stats.
        self.throughput = Throughput()
        #: The latest attempts, for followers (``GET /_emulator/v1/attempts``, ``deferred-emulator tail``).
        self.feed = AttemptFeed()
        self.delivered = 0
        self.failures = 0
        #: Tasks whose delivery ended with its outcome unrecorded; given back to the queue within seconds.
        self.leases = Leases(self.store, emulator.now_us, self._inflight.keys, self.wake)
        self._store_warning = ""
        emulator.hooks = Hooks(
            wake=self.wake,
            run_now=self.start_delivery,
            queue_changed=self._queue_changed,
            added=self.notice,
            take_now=self.take_now,
        )

    def __repr__(self) -> str:
        return f"<Dispatcher in_flight={len(self._inflight)} delivered={self.delivered} failures={self.failures}>"

    @property
    def settings(self) -> Settings:
        """The emulator's settings, read at each use: the app URL can change while it runs."""
        return self.emulator.settings

    def wake(self) -> None:
        """Look for due tasks again (a task was added, time moved, a slot freed up)."""
        self._event.set()

    def notice(self, eta_us: int) -> None:
        """A task became due at ``eta_us``: wake up only if the loop would not look by then anyway."""
        if self._sleeping_until is None or eta_us < self._sleeping_until:
            self._event.set()

    def take_now(self, queue_name: str, now: int) -> bool:
        """Whether a task about to be added to ``queue_name``, due now, goes straight to delivery.

        Then the store adds it leased and ``start_delivery`` starts it: no wake-up, claim or look for
        the next ETA, which cost a due-now task as much as its adding. Only while the loop sleeps with
        nothing due before now, and a slot (and a token) is free: it never overtakes a waiting task.
        """
        if self._closing or self._event.is_set() or self._sleeping_until is None or now >= self._sleeping_until:
            return False
        queue = self.emulator.queues.get(queue_name)
        if queue is None or not self._dispatchable(queue):
            return False
        if len(self._inflight) >= self.settings.max_in_flight or self._share(queue_name) < 1:
            return False
        if self.settings.ignore_rate_limits:
            return True
        if queue.rate_per_s <= 0 or (
            queue.max_concurrent is not None and self._per_queue[queue_name] >= queue.max_concurrent
        ):
            return False
        mono = time.monotonic()
        bucket = self._bucket(queue, mono)
        if bucket.available(mono) < 1:
            return False
        bucket.take(1, mono)
        return True

    def in_flight(self, queue: str | None = None) -> int:
        """Deliveries under way (in one queue, or in all), counting those whose outcome waits to be written."""
        return (self._per_queue[queue] if queue else len(self._inflight)) + self.leases.count(queue)

    def _queue_changed(self, queue: QueueConfig) -> None:
        bucket = self._buckets.get(queue.name)
        if bucket is not None:
            bucket.configure(queue.rate_per_s, queue.bucket_size, time.monotonic())

    def _bucket(self, queue: QueueConfig, now_s: float) -> TokenBucket:
        bucket = self._buckets.get(queue.name)
        if bucket is None:
            bucket = self._buckets[queue.name] = TokenBucket(queue.rate_per_s, queue.bucket_size, now_s)
        return bucket

    async def run(self) -> None:
        """Deliver tasks until cancelled, sleeping until the earliest ETA or a wake-up."""
        keeper = asyncio.create_task(self.leases.run(), name="leases")
        try:
            await self._loop()
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)

    async def _loop(self) -> None:
        while not self._closing:
            self._event.clear()
            self._sleeping_until = None
            try:
                delay = await self.run_once()
                self._store_warning = ""
            except StoreUnavailable as exc:
                if exc.message != self._store_warning:  # once, not every second while it lasts
                    logger.warning("cannot claim due tasks: %s", exc.message)
                    self._store_warning = exc.message
                delay = 1.0
            except Exception:
                logger.exception("dispatch loop error; retrying in 1s")
                delay = 1.0
            if delay == 0:
                await asyncio.sleep(0)
                continue
            if delay is not None and self.emulator.clock.virtual:
                # A virtual clock stands still: clock:advance wakes the loop, so near ETAs need no busy polling.
                delay = max(delay, VIRTUAL_POLL_S)
            self._sleeping_until = FOREVER_US if delay is None else self.emulator.now_us() + int(delay * US)
            try:
                await asyncio.wait_for(self._event.wait(), delay)
            except TimeoutError:
                pass

    async def run_once(self, *, ignore_limits: bool | None = None, only: Sequence[str] | None = None) -> float | None:
        """Claim and start every delivery allowed now; return seconds until there may be more (None: no timer)."""
        ignore = self.settings.ignore_rate_limits if ignore_limits is None else ignore_limits
        now = self.emulator.now_us()
        mono = time.monotonic()
        delays: list[float] = []
        self._starved = self._behind = False
        for queue in list(self.emulator.queues.values()):
            if (only is not None and queue.name not in only) or not self._dispatchable(queue):
                continue
            if len(self._inflight) >= self.settings.max_in_flight:
                self._starved = self._behind = True
                break
            delay = await self._claim_queue(queue, now, mono, ignore)
            if delay is not None:
                delays.append(delay)
        # Due tasks wait for a slot: adds get a bounded share of the loop until they have one (ingestgate.py).
        self.emulator.gate.set_busy(self._behind)
        return min(delays) if delays else None

    @staticmethod
    def _dispatchable(queue: QueueConfig) -> bool:
        return queue.state is QueueState.RUNNING and queue.mode == "push"

    async def _claim_queue(self, queue: QueueConfig, now: int, mono: float, ignore: bool) -> float | None:
        """Start what one queue may deliver now; return when to look at it again."""
        allowance = min(self.settings.max_in_flight - len(self._inflight), CLAIM_BATCH, self._share(queue.name))
        bucket = None
        if not ignore:
            if queue.rate_per_s <= 0:
                return None  # rate 0 dispatches nothing, as in production; a PATCH or reload wakes the loop
            if queue.max_concurrent is not None:
                allowance = min(allowance, queue.max_concurrent - self._per_queue[queue.name])
            bucket = self._bucket(queue, mono)
            tokens = bucket.available(mono)
            if tokens < 1:
                return bucket.wait_s(mono)
            allowance = min(allowance, tokens)
        if allowance <= 0:
            self._starved = True
            # Held back by the slots all queues share, not by this queue's own max_concurrent.
            self._behind = self._behind or queue.max_concurrent is None or ignore
            return None  # a finishing delivery wakes the loop
        tasks = await self.store.claim_due(queue.name, now, allowance, now + self._lease_us())
        if bucket is not None and tasks:
            bucket.take(len(tasks), mono)
        for task in tasks:
            self.start_delivery(task)
        if len(tasks) == allowance:
            self._behind = self._behind or bucket is None or allowance < tokens
            return 0.0
        eta = await self.store.next_eta(queue.name)
        return None if eta is None else max(0.0, (eta - now) / US)

    def _share(self, name: str) -> int:
        """Room one queue may still take: with k other queues busy it holds at most 1/(k+2) of the slots.

        A queue whose handler hangs would otherwise fill every slot and stall all the others.
        """
        others = sum(1 for queue, count in self._per_queue.items() if count > 0 and queue != name)
        return max(1, self.settings.max_in_flight // (others + 2)) - self._per_queue[name]

    def _lease_us(self) -> int:
        return int((self.settings.dispatch_deadline_s + 30) * US)

    def start_delivery(self, task: Task) -> None:
        """Deliver a claimed task in the background."""
        self._per_queue[task.queue] += 1
        self._inflight[task.id] = asyncio.create_task(self._attempt(task), name=f"deliver {task.queue}/{task.name}")

    async def _attempt(self, task: Task) -> None:
        try:
            queue = self.emulator.queues.get(task.queue)
            sent = task
            if queue is not None and queue.http_target is not None and task.kind is TargetKind.HTTP:
                sent = apply_http_target(task, queue.http_target)
            url = target_url(sent, queue, self.settings)
            headers = build_headers(sent, self.settings)
            if sent.auth is not None:
                # Signed per attempt, as production does (the key object is cached by the issuer).
                headers["Authorization"] = await self.emulator.issuer.authorization(sent.auth, url)
            deadline = task.deadline_s or self.settings.dispatch_deadline_s
            outcome = await deliver(self.session, sent, url, headers, deadline, self.emulator.now_us, self.pool)
            await self._record(task, queue, outcome)
        except asyncio.CancelledError:
            raise
        except StoreUnavailable as exc:
            # The task stays leased in the database; the lease keeper puts it back once it can.
            logger.warning("could not record the delivery of %s/%s: %s", task.queue, task.name, exc.message)
            self.leases.lose(task)
        except Exception:
            logger.exception("could not record the delivery of %s/%s", task.queue, task.name)
            self.leases.lose(task)
        finally:
            self._inflight.pop(task.id, None)
            self._per_queue[task.queue] -= 1
            if self._starved:
                self.wake()

    async def _record(self, task: Task, queue: QueueConfig | None, outcome: Outcome) -> None:
        now = self.emulator.now_us()
        retry_default = queue.retry if queue else self.emulator.queues["default"].retry
        updated, attempt, verdict, value = settle(task, outcome, retry_default, now)
        if verdict != "retry":
            value = self.emulator.tombstone_until()
        await self._commit((updated, attempt, verdict, value))
        if verdict == "retry":
            self.notice(value)
        self.throughput.record(task.queue, verdict)
        times = (outcome.dispatch_us, outcome.response_us)
        request = (task.method, task.url, task.body)
        self.feed.record(task.queue, task.name, attempt.number, times, outcome.status, attempt.reason, verdict, request)
        if outcome.ok:
            self.delivered += 1
        else:
            self.failures += 1
            log = logger.warning if verdict == "failed" else logger.info
            log(
                "task %s/%s attempt %d: %s%s",
                task.queue,
                task.name,
                attempt.number,
                outcome.status or outcome.excerpt,
                " - giving up" if verdict == "failed" else f" - retry in {(value - now) / US:.3g}s",
            )
        for listener in list(self._listeners):
            listener(updated, outcome, verdict)

    async def _commit(self, entry: tuple[Task, Attempt, str, int]) -> None:
        """Record an outcome in one transaction with the others that finish in the same pass (group commit)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._to_commit.append((entry, done))
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)
        await done

    def _flush(self) -> None:
        """At the end of this pass of the loop: write the outcomes at once if the store is free, else wait for it."""
        self._flush_soon = False
        if self._committer is not None or not self._to_commit:
            return  # the committer writing an earlier batch takes these after it
        try:
            written = not isinstance(self.store.try_finish([entry for entry, _ in self._to_commit]), NotNow)
        except Exception:
            written = False  # the committer tells each outcome what went wrong, as it would have
        if not written:
            self._committer = asyncio.create_task(self._commit_pending(), name="commit outcomes")
            return
        batch, self._to_commit = self._to_commit, []
        _tell(batch, [None] * len(batch))

    async def _commit_pending(self) -> None:
        try:
            await asyncio.sleep(0)  # deliveries answered in this pass of the loop join the batch
            batch, self._to_commit = self._to_commit, []
            try:
                await self.store.finish([entry for entry, _ in batch])
                outcomes: list[BaseException | None] = [None] * len(batch)
            except StoreUnavailable as exc:
                # The database takes no change now (locked, full, gone): each alone would wait as long again.
                outcomes = [exc] * len(batch)
            except Exception:
                # One bad entry must not keep the others from being recorded.
                outcomes = [await self._finish_alone(entry) for entry, _ in batch]
            _tell(batch, outcomes)
        finally:
            self._committer = None
            if self._to_commit:
                self._committer = asyncio.create_task(self._commit_pending(), name="commit outcomes")

    async def _finish_alone(self, entry: tuple[Task, Attempt, str, int]) -> BaseException | None:
        try:
            await self.store.finish([entry])
        except Exception as exc:
            return exc
        return None

    def last_minute(self) -> dict[str, tuple[int, int]]:
        """Per queue: (succeeded, failed) attempts in the last 60 seconds."""
        return self.throughput.last_minute()

    def last_hour(self) -> dict[str, tuple[int, int]]:
        """Per queue: (succeeded, failed) attempts in the last hour."""
        return self.throughput.last_hour()

    async def drain(self, queues: Sequence[str] | None = None, timeout_s: float = 10.0) -> dict[str, Any]:
        """Deliver every due task now (ignoring rate limits) until none is due or in flight."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        seen: list[tuple[Task, Outcome, str]] = []

        def listener(task: Task, outcome: Outcome, verdict: str) -> None:
            if queues is None or task.queue in queues:
                seen.append((task, outcome, verdict))

        self._listeners.append(listener)
        timed_out = False
        try:
            while True:
                await self.run_once(ignore_limits=True, only=queues)
                pending = [t for t in self._inflight.values() if self._matches(t, queues)]
                remaining = deadline - loop.time()
                if remaining <= 0:
                    timed_out = bool(pending) or await self._due(queues) > 0
                    break
                if pending:
                    await asyncio.wait(pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                    continue
                if not await self._due(queues):
                    break
                # Due but not claimed: other queues' deliveries hold every slot; wait for one to end.
                others = list(self._inflight.values())
                if others:
                    await asyncio.wait(others, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                else:
                    await asyncio.sleep(min(remaining, VIRTUAL_POLL_S))
        finally:
            self._listeners.remove(listener)
        return drain_report(seen, timed_out)

    def _matches(self, delivery: asyncio.Task[None], queues: Sequence[str] | None) -> bool:
        if queues is None:
            return True
        name = delivery.get_name().removeprefix("deliver ")
        return name.split("/", 1)[0] in queues

    async def _due(self, queues: Sequence[str] | None) -> int:
        names = [
            q.name
            for q in self.emulator.queues.values()
            if q.state is QueueState.RUNNING and q.mode == "push" and (queues is None or q.name in queues)
        ]
        return await self.store.count_due(names, self.emulator.now_us())

    async def cancel_all(self) -> None:
        """Abandon every delivery under way without recording it (``reset`` deletes their tasks)."""
        pending = list(self._inflight.values())
        for delivery in pending:
            delivery.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def close(self) -> None:
        """Stop: let deliveries in flight finish for a few seconds, then cancel the rest (they stay leased)."""
        self._closing = True
        self.wake()
        pending = list(self._inflight.values())
        if pending:
            done, still = await asyncio.wait(pending, timeout=CLOSE_GRACE_S)
            for delivery in still:
                delivery.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        self.pool.close()


def _tell(batch: Sequence[tuple[Any, asyncio.Future[None]]], errors: Sequence[BaseException | None]) -> None:
    """Tell each waiting delivery how writing its outcome went."""
    for (_, done), error in zip(batch, errors):
        if done.done():
            continue  # its delivery was cancelled (shutdown)
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)
