"""How the store reaches SQLite: one lock, write transactions, and waits that never block the event loop.

One aiosqlite connection is the single writer; the hot paths use it from the event loop's thread
(see hotpath.py). Its busy timeout is 0, so SQLite never sleeps in that thread when another program
holds the database's write lock: it answers "locked" at once, and ``_retrying`` waits here, asleep,
with the store's lock let go so that reads go on. Every SQLite failure becomes a 503 that names its
cause (dberrors.py).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import aiosqlite

from .checkpoint import Checkpointer
from .dberrors import is_busy, unavailable, waits

T = TypeVar("T")
#: Seconds a write waits for another program's lock (SQLite's busy timeout was 5 s, spent blocking the loop).
BUSY_BUDGET_S = 5.0


class Access:
    """The connections and the lock around them; ``Store`` adds the statements."""

    def __init__(self, db: aiosqlite.Connection, path: str) -> None:
        self.db = db
        self.path = path
        # One connection serves every coroutine: the lock keeps one coroutine's statements out
        # of another's transaction.
        self._lock = asyncio.Lock()
        #: A second connection for long reads (see ``counts``); none for ``:memory:``, which it would not see.
        self._reader: aiosqlite.Connection | None = None
        #: Checkpoints the WAL off the event loop (see checkpoint.py); none for ``:memory:``, which has no WAL.
        self.checkpointer: Checkpointer | None = None
        #: How long a write waits for another program's lock on the database before answering 503.
        self.busy_budget_s = BUSY_BUDGET_S
        #: The last whole-table tally of ``counts``, with the reader's ``data_version`` it was taken at.
        self._tally: tuple[int, list[Any]] | None = None

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[None]:
        """A write transaction: BEGIN IMMEDIATE, waited for off the event loop (see ``_retrying``)."""
        await self._retrying(lambda: self.db.execute("BEGIN IMMEDIATE"), hold=True)
        try:
            try:
                yield
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as exc:
                raise unavailable(exc, self.path) from exc
            try:
                await self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise unavailable(exc, self.path) from exc
        except BaseException:
            if self.db._conn.in_transaction:  # SQLite ends some failed transactions itself (a full disk)
                await self.db.execute("ROLLBACK")
            raise
        finally:
            self._lock.release()

    async def _retrying(self, op: Callable[[], Awaitable[T]], hold: bool = False) -> T:
        """Run ``op`` under the store's lock; while another program holds the database's write lock, try again.

        The writer's busy timeout is 0, so SQLite never sleeps in the event loop's thread (the hot
        paths run there): it answers "locked" at once, and the wait happens here, asleep, with the
        lock let go so that reads go on. After ``busy_budget_s`` the caller gets a 503 naming the cause.
        With ``hold``, the lock is kept after a success (``_tx`` releases it).
        """
        last: sqlite3.Error | None = None
        for pause in (*waits(self.busy_budget_s), None):
            await self._lock.acquire()
            try:
                result = await op()
            except sqlite3.IntegrityError:
                self._lock.release()
                raise
            except sqlite3.Error as exc:
                self._lock.release()
                if not is_busy(exc) or pause is None:
                    raise unavailable(exc, self.path) from exc
                last = exc
                await asyncio.sleep(pause)
                continue
            except BaseException:
                self._lock.release()
                raise
            if not hold:
                self._lock.release()
            return result
        raise unavailable(last or sqlite3.OperationalError("database is locked"), self.path)

    async def _sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a hotpath function on the connection in this thread, between other coroutines' statements."""
        conn = self.db._conn

        async def op() -> T:
            if self.checkpointer is not None:
                self.checkpointer.finish(conn)
            return fn(conn, *args)

        result = await self._retrying(op)
        if self.checkpointer is not None:
            self.checkpointer.written()
        return result

    async def _exec(self, sql: str, params: Iterable[Any] = ()) -> int:
        async def op() -> int:
            async with self.db.execute(sql, tuple(params)) as cur:
                return cur.rowcount

        return await self._retrying(op)

    async def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        """Rows of a long read-only query, from the reader connection (WAL lets it read beside the writer)."""
        if self._reader is None:
            return await self._all(sql, params)
        try:
            async with self._reader.execute(sql, tuple(params)) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as exc:
            raise unavailable(exc, self.path) from exc

    async def _raw_one(self, sql: str, params: Iterable[Any] = ()) -> Any:
        async with self.db.execute(sql, tuple(params)) as cur:
            return await cur.fetchone()

    async def _raw_all(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        async with self.db.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())

    async def _one(self, sql: str, params: Iterable[Any] = ()) -> Any:
        return await self._retrying(lambda: self._raw_one(sql, params))

    async def _all(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        return await self._retrying(lambda: self._raw_all(sql, params))
