"""Copying the WAL back into the database file, mostly from a thread of its own.

SQLite checkpoints by itself inside the COMMIT that takes the WAL past its mark. Every hot-path
COMMIT runs on the event loop's thread (see hotpath.py), so each of those checkpoints, about 4 MB
copied and two fsyncs, 25 to 50 ms on a VM's disk, stalled every request and delivery; adding tasks
as fast as possible, they took a sixth of the time.

Here a second connection, in a worker thread, makes a PASSIVE checkpoint a little after writes: it
never waits for the writer, nor the writer for it, and the store's lock is not taken. It cannot
finish the job alone: the writer starts the WAL over only once every frame is copied, and under
steady writes new frames land while the thread copies (each of its rounds takes two fsyncs). So
once the WAL holds 1,000 pages, the writer copies what is left itself, between two of its
transactions: a few pages and two fsyncs, a few milliseconds, after which its next transaction
starts the WAL over. SQLite's own checkpoints stay on, at a higher mark, in case this falls behind.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

logger = logging.getLogger(__name__)

#: The writer's own checkpoints, in pages: four times SQLite's default, so they are rare, yet the WAL stays bounded.
BACKSTOP_PAGES = 4000
#: Commits between two looks at the clock; and the least time between two checkpoints, whose fsyncs cost the disk.
EVERY_COMMITS = 8
MIN_INTERVAL_S = 0.1
#: The writer copies the rest once the WAL holds this many frames (pages): SQLite's own mark.
FINISH_FRAMES = 1000


class Checkpointer:
    """PASSIVE checkpoints of one database file, off the event loop, a little after writes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal-checkpoint")
        # Opened and used only in the executor's thread, but closed from the loop's.
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._commits = 0
        self._last = 0.0
        self._running: asyncio.Future[int] | None = None
        #: The thread made a round: the writer should copy the rest (``finish``).
        self.finish_pending = False
        #: Checkpoints made, for tests and the curious.
        self.rounds = 0

    def written(self) -> None:
        """Note a commit; now and then, start a checkpoint in the worker thread."""
        self._commits += 1
        if self._commits < EVERY_COMMITS or self._running is not None:
            return
        now = time.monotonic()
        if now - self._last < MIN_INTERVAL_S:
            return
        self._commits = 0
        self._last = now
        self._running = asyncio.get_running_loop().run_in_executor(self._executor, self._checkpoint)
        self._running.add_done_callback(self._done)

    def _checkpoint(self) -> int:
        # fetchall, not fetchone: a statement left unfinished would keep a read lock, and with it the
        # writer could never start the WAL over.
        ((_, frames, _),) = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        self.rounds += 1
        return int(frames)

    def _done(self, future: asyncio.Future[int]) -> None:
        self._running = None
        if future.cancelled():
            return
        if future.exception() is not None:
            logger.warning("WAL checkpoint failed (SQLite's own will do): %s", future.exception())
        elif future.result() >= FINISH_FRAMES:
            self.finish_pending = True

    def finish(self, conn: sqlite3.Connection) -> None:
        """Copy what the thread left, on the writer's connection, between its transactions (see above)."""
        if self.finish_pending:
            self.finish_pending = False
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                # The add or delivery that comes next must not fail for want of a checkpoint.
                logger.warning("WAL checkpoint failed (SQLite's own will do): %s", exc)

    async def wait(self) -> None:
        """Wait for the round under way, if any, to end (a failed one is logged, not raised)."""
        if self._running is not None:
            await asyncio.wait([self._running])

    async def close(self) -> None:
        """Finish the round under way and close the connection."""
        await self.wait()
        self._executor.shutdown(wait=True)
        self._conn.close()
