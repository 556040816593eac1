"""The latest attempts, in memory, for followers such as ``deferred-emulator tail``.

Recording must stay cheap (it runs once per delivery): one tuple appended to a bounded deque. What
a follower reads (the call a deferred body makes) is worked out when it reads, and only for the
entries it asks for.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import NamedTuple

#: Attempts kept for followers; older ones are dropped (a follower that fell behind is told how many).
FEED_SIZE = 2000
#: Bodies up to this size are kept with their entry, so a follower can see the deferred call (deferred
#: payloads are mostly a few hundred bytes; a full feed of the largest holds 16 MB).
BODY_KEPT = 8 * 1024


class FeedEntry(NamedTuple):
    """One attempt as followers see it."""

    seq: int
    queue: str
    task: str
    number: int
    dispatch_us: int
    response_us: int
    status: int
    reason: str
    #: "done", "retry" or "failed" (gave up).
    verdict: str
    method: str
    url: str
    #: The task's body when small enough to keep, else None.
    body: bytes | None


class AttemptFeed:
    """A numbered, bounded log of recent attempts that followers can wait on."""

    def __init__(self, size: int = FEED_SIZE) -> None:
        self._entries: deque[FeedEntry] = deque(maxlen=size)
        self.last_seq = 0
        self._event: asyncio.Event | None = None
        self.closed = False

    def record(
        self,
        queue: str,
        task: str,
        number: int,
        times: tuple[int, int],
        status: int,
        reason: str,
        verdict: str,
        request: tuple[str, str, bytes],
    ) -> None:
        """Append an attempt and wake the followers waiting for one."""
        self.last_seq += 1
        method, url, body = request
        kept = body if len(body) <= BODY_KEPT else None
        self._entries.append(
            FeedEntry(self.last_seq, queue, task, number, *times, status, reason, verdict, method, url, kept)
        )
        if self._event is not None:
            self._event.set()
            self._event = None

    def since(self, seq: int, queue: str | None = None, limit: int = 200) -> tuple[list[FeedEntry], int, int]:
        """Entries after ``seq`` (in ``queue``), at most ``limit``; the next cursor; how many were dropped unseen."""
        oldest = self._entries[0].seq if self._entries else self.last_seq + 1
        missed = max(0, oldest - seq - 1) if seq < self.last_seq else 0
        out: list[FeedEntry] = []
        cursor = max(seq, oldest - 1)
        # Entries are numbered without gaps, so the first wanted one sits at a known index.
        for entry in list(self._entries)[max(0, seq + 1 - oldest) :]:
            cursor = entry.seq
            if queue is None or entry.queue == queue:
                out.append(entry)
                if len(out) >= limit:
                    break
        else:
            cursor = self.last_seq
        return out, cursor, missed

    def latest(self, count: int, queue: str | None = None) -> list[FeedEntry]:
        """The last ``count`` entries (in ``queue``), oldest first."""
        if count <= 0:
            return []
        found = [e for e in reversed(self._entries) if queue is None or e.queue == queue][:count]
        return found[::-1]

    async def wait(self, timeout_s: float) -> bool:
        """Wait until an attempt is recorded (True) or ``timeout_s`` passes or the feed closes (False)."""
        if self.closed:
            return False
        if self._event is None:
            self._event = asyncio.Event()
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            return False
        return not self.closed

    def close(self) -> None:
        """Release every follower (the server is stopping)."""
        self.closed = True
        if self._event is not None:
            self._event.set()
            self._event = None
