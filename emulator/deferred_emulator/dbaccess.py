"""How the store reaches SQLite: one lock, write transactions, and waits that never block the event loop.

One aiosqlite connection is the single writer; the hot paths use it from the event loop's thread
(see hotpath.py). Its busy timeout is 0, so SQLite never sleeps in that thread when another program
holds the database's write lock: it answers "locked" at once, and ``_retrying`` waits here, asleep,
with the store's lock let go so that reads go on. Every SQLite failure becomes a 503 that names its
cause (dberrors.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from itertools import chain
from typing import Any, TypeVar

import aiosqlite

from .checkpoint import Checkpointer
from .dberrors import StoreUnavailable, is_busy, unavailable, waits

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: Seconds a write waits for another program's lock (SQLite's busy timeout was 5 s, spent blocking the loop).
BUSY_BUDGET_S = 5.0


class NotNow:
    """What ``Access.try_now`` answers when the write must wait its turn."""


NOT_NOW = NotNow()


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
        #: (device, inode) of the file opened; None for ``:memory:``.
        self.identity: tuple[int, int] | None = None
        #: Why writes are refused for good: the file was deleted, moved or replaced while open.
        self.gone: str | None = None
        if path != ":memory:":
            stat = os.stat(path)
            self.identity = (stat.st_dev, stat.st_ino)

    def _failure(self, exc: sqlite3.Error) -> StoreUnavailable:
        """The error for a failed statement: the file's disappearance if that is the cause, else SQLite's."""
        try:
            self.check_file()
        except StoreUnavailable as gone:
            return gone
        return unavailable(exc, self.path)

    def check_file(self) -> None:
        """Raise StoreUnavailable if the path no longer leads to the file opened (deleted, moved, replaced).

        Writes would go on into a file nobody will open again (``rm -rf .deferred-emulator``,
        ``git clean -xdf``) and be lost at the next start; so they are refused, loudly, and reads of
        what the open file holds go on. A stat is a microsecond or two, next to tens for a write.
        """
        if self.gone is not None:
            raise StoreUnavailable(self.gone)
        if self.identity is None:
            return
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            why = "was deleted or moved away"
        except OSError as exc:
            why = f"cannot be reached ({exc.strerror or exc})"
        else:
            if (stat.st_dev, stat.st_ino) == self.identity:
                return
            why = "was replaced by another file"
        self.gone = (
            f"The database {self.path} {why} while the emulator was running: changes are refused, since they"
            " would be lost. Restart the emulator to start from what the path holds now."
        )
        logger.error("%s", self.gone)
        raise StoreUnavailable(self.gone)

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[None]:
        """A write transaction: BEGIN IMMEDIATE, waited for off the event loop (see ``_retrying``)."""
        await self._retrying(lambda: self.db.execute("BEGIN IMMEDIATE"), hold=True, write=True)
        try:
            try:
                yield
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as exc:
                raise self._failure(exc) from exc
            try:
                await self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._failure(exc) from exc
        except BaseException:
            if self.db._conn.in_transaction:  # SQLite ends some failed transactions itself (a full disk)
                await self.db.execute("ROLLBACK")
            raise
        finally:
            self._lock.release()

    async def _retrying(self, op: Callable[[], Awaitable[T]], hold: bool = False, write: bool = False) -> T:
        """Run ``op`` under the store's lock; while another program holds the database's write lock, try again.

        The writer's busy timeout is 0, so SQLite never sleeps in the event loop's thread (the hot
        paths run there): it answers "locked" at once, and the wait happens here, asleep, with the
        lock let go so that reads go on. After ``busy_budget_s`` the caller gets a 503 naming the cause.
        With ``hold``, the lock is kept after a success (``_tx`` releases it). A ``write`` is refused
        when the database file is gone (``check_file``).
        """
        if write:
            self.check_file()
        last: sqlite3.Error | None = None
        # Lazily: the pauses of a whole budget (about fifty) used to be listed before every statement.
        for pause in chain(waits(self.busy_budget_s), (None,)):
            await self._lock.acquire()
            try:
                result = await op()
            except sqlite3.IntegrityError:
                self._lock.release()
                raise
            except sqlite3.Error as exc:
                self._lock.release()
                if not is_busy(exc) or pause is None:
                    raise self._failure(exc) from exc
                last = exc
                await asyncio.sleep(pause)
                continue
            except BaseException:
                self._lock.release()
                raise
            if not hold:
                self._lock.release()
            return result
        raise self._failure(last or sqlite3.OperationalError("database is locked"))

    def try_now(self, fn: Callable[..., T], *args: Any) -> T | NotNow:
        """Run a hotpath function at once when nothing else holds the store and SQLite takes it without
        waiting; else ``NOT_NOW``, nothing done, for the caller to go the waiting way (``_sync``).

        What ``_sync`` does when its lock is free, without the coroutine machinery around it: most
        writes find the store free, and the machinery cost as much as a small statement.
        """
        if self._lock.locked():
            return NOT_NOW
        self.check_file()
        try:
            result = self._hot(fn, args)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            if is_busy(exc):
                return NOT_NOW
            raise self._failure(exc) from exc
        if self.checkpointer is not None:
            self.checkpointer.written()
        return result

    def _hot(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        """A hotpath function on the writer's connection, after the rest of a pending checkpoint."""
        conn = self.db._conn
        if self.checkpointer is not None:
            self.checkpointer.finish(conn)
        return fn(conn, *args)

    async def _sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a hotpath function on the connection in this thread, between other coroutines' statements."""
        result = self.try_now(fn, *args)
        if not isinstance(result, NotNow):
            return result

        async def op() -> T:
            return self._hot(fn, args)

        result = await self._retrying(op, write=True)
        if self.checkpointer is not None:
            self.checkpointer.written()
        return result

    async def _exec(self, sql: str, params: Iterable[Any] = ()) -> int:
        async def op() -> int:
            async with self.db.execute(sql, tuple(params)) as cur:
                return cur.rowcount

        return await self._retrying(op, write=True)

    async def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        """Rows of a long read-only query, from the reader connection (WAL lets it read beside the writer)."""
        if self._reader is None:
            return await self._all(sql, params)
        try:
            async with self._reader.execute(sql, tuple(params)) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as exc:
            raise self._failure(exc) from exc

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
