"""The emulator's SQL: queues, tasks, attempts, tombstones and entities (the schema is in schema.py,
the statements of the hot paths in hotpath.py).

One aiosqlite connection is the single writer. Every method takes ``now`` (microseconds) as an
argument; nothing here reads the clock.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from . import hotpath
from .checkpoint import BACKSTOP_PAGES, Checkpointer
from .dbaccess import Access, NotNow
from .dberrors import explain, is_busy
from .hotpath import TASK_COLUMNS
from .models import Attempt, NewTask, QueueConfig, Task, TaskState
from .schema import (
    ADDED_COLUMNS,
    REBUILD_TOMBSTONES,
    SCHEMA,
    SCHEMA_VERSION,
    TASK_QUEUES,
    queue_from_row,
    queue_to_text,
    task_from_row,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")


class StoreError(Exception):
    """Raised when the database file cannot be used (corrupt, foreign, or another version)."""


def not_usable(exc: sqlite3.Error, path: str) -> str:
    """One line for a database that cannot be used at startup: corrupt (with the way out), or not ours."""
    text = str(exc).lower()
    if "malformed" in text or "corrupt" in text or is_busy(exc):
        # Opening an earlier release's database writes to it once (its schema brought up to date).
        return explain(exc, path)
    return f"{path} is not a deferred-emulator database ({exc})"


#: Every leased task back to waiting (at start), and the leased tasks whose lease ran out: queue by queue,
#: through task_due.
RELEASE_LEASES = (
    f"UPDATE task SET state='waiting', lease_until_us=NULL WHERE queue IN ({TASK_QUEUES}) AND state='running'"
)
EXPIRED_LEASES = f"SELECT id FROM task WHERE queue IN ({TASK_QUEUES}) AND state='running' AND lease_until_us<=?"


class Store(Access):
    """The SQLite database behind the emulator."""

    @classmethod
    async def open(cls, path: str) -> Store:
        """Open (creating if needed) the database at ``path`` and apply the schema."""
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: the hot paths use the connection from the event loop thread (see hotpath).
        # cached_statements: each size of a multi-row insert (see hotpath) is a statement of its own.
        db = await aiosqlite.connect(path, isolation_level=None, check_same_thread=False, cached_statements=512)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            # No waiting inside SQLite: the hot paths run in the event loop's thread (see ``_retrying``).
            await db.execute("PRAGMA busy_timeout=0")
            await cls._check_foreign(db, path)
            await db.executescript(SCHEMA)
            await cls._rebuild_tombstones(db)
            await cls._add_columns(db)
            await cls._check_version(db)
        except sqlite3.DatabaseError as exc:
            await db.close()
            raise StoreError(not_usable(exc, path)) from exc
        except StoreError:
            await db.close()
            raise
        store = cls(db, path)
        if path != ":memory:":
            store._reader = await aiosqlite.connect(path, isolation_level=None)
            await store._reader.execute("PRAGMA busy_timeout=5000")
            await db.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
            store.checkpointer = Checkpointer(path)
        return store

    @staticmethod
    async def _check_foreign(db: aiosqlite.Connection, path: str) -> None:
        """Refuse another program's SQLite database rather than adding our tables to it."""
        async with db.execute("SELECT name FROM sqlite_master WHERE type = 'table'") as cur:
            tables = {row[0] for row in await cur.fetchall()}
        if tables and "meta" not in tables:
            shown = ", ".join(sorted(tables)[:5])
            raise StoreError(
                f"{path} is another program's SQLite database (tables: {shown}), not a deferred-emulator one"
            )

    @staticmethod
    async def _rebuild_tombstones(db: aiosqlite.Connection) -> None:
        """Rebuild an earlier release's tombstone table WITHOUT ROWID (see ``REBUILD_TOMBSTONES``)."""
        async with db.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='tombstone'") as cur:
            row = await cur.fetchone()
        if row is not None and "WITHOUT ROWID" not in row[0].upper():
            try:
                await db.executescript(REBUILD_TOMBSTONES)
            except BaseException:
                if db.in_transaction:
                    await db.execute("ROLLBACK")
                raise

    @staticmethod
    async def _add_columns(db: aiosqlite.Connection) -> None:
        """Add the columns a database made by an earlier release lacks (each is nullable: old rows need nothing)."""
        for table, column, declaration in ADDED_COLUMNS:
            async with db.execute(f"PRAGMA table_info({table})") as cur:
                if column not in {row[1] for row in await cur.fetchall()}:
                    await db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    @staticmethod
    async def _check_version(db: aiosqlite.Connection) -> None:
        async with db.execute("SELECT value FROM meta WHERE key='schema_version'") as cur:
            row = await cur.fetchone()
        if row is None:
            await db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif row[0] != str(SCHEMA_VERSION):
            raise StoreError(f"database schema version {row[0]} is not {SCHEMA_VERSION}")

    async def close(self) -> None:
        """Close the connections."""
        if self.checkpointer is not None:
            await self.checkpointer.close()
        if self._reader is not None:
            await self._reader.close()
        await self.db.close()

    async def delivery_secret(self) -> str:
        """The secret deliveries are signed with when none is configured: made once, kept in the database."""
        row = await self._one("SELECT value FROM meta WHERE key='delivery_secret'")
        if row is not None:
            return str(row[0])
        secret = secrets.token_urlsafe(32)
        await self._exec("INSERT OR IGNORE INTO meta (key, value) VALUES ('delivery_secret', ?)", (secret,))
        row = await self._one("SELECT value FROM meta WHERE key='delivery_secret'")
        return str(row[0])

    # -- queues ---------------------------------------------------------------------------------

    async def load_queues(self) -> list[QueueConfig]:
        """Every stored queue."""
        rows = await self._all("SELECT name, data FROM queue ORDER BY name")
        return [queue_from_row(name, data) for name, data in rows]

    async def save_queue(self, queue: QueueConfig) -> None:
        """Insert or replace a queue's settings."""
        await self._exec(
            "INSERT INTO queue (name, data) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET data=excluded.data",
            (queue.name, queue_to_text(queue)),
        )

    async def delete_queue(self, name: str, until_us: int) -> None:
        """Delete a queue, its tasks and their entities; remember the name until ``until_us``."""
        async with self._tx():
            await self.db.execute("DELETE FROM entity WHERE task_id IN (SELECT id FROM task WHERE queue=?)", (name,))
            await self.db.execute("DELETE FROM attempt WHERE task_id IN (SELECT id FROM task WHERE queue=?)", (name,))
            await self.db.execute("DELETE FROM task WHERE queue=?", (name,))
            await self.db.execute("DELETE FROM tombstone WHERE queue=?", (name,))
            await self.db.execute("DELETE FROM queue WHERE name=?", (name,))
            await self.db.execute(
                "INSERT OR REPLACE INTO queue_tombstone (name, until_us) VALUES (?, ?)", (name, until_us)
            )

    async def queue_deleted_until(self, name: str, now: int) -> int | None:
        """When a recently deleted queue's name becomes free again, or None."""
        row = await self._one("SELECT until_us FROM queue_tombstone WHERE name=? AND until_us>?", (name, now))
        return None if row is None else int(row[0])

    async def forget_queue_tombstone(self, name: str) -> None:
        """Let a deleted queue's name be used again at once."""
        await self._exec("DELETE FROM queue_tombstone WHERE name=?", (name,))

    # -- adding tasks ---------------------------------------------------------------------------

    async def add_tasks(self, tasks: Sequence[NewTask], now: int, lease_until: int | None = None) -> list[Task]:
        """Insert tasks atomically: all of them, or none if a name is taken or tombstoned.

        With ``lease_until`` they are stored leased until then (running), as a claim would leave them.
        """
        return await self._sync(hotpath.add, tasks, now, lease_until)

    # -- claiming and finishing -----------------------------------------------------------------

    async def claim_due(self, queue: str, now: int, limit: int, lease_until: int) -> list[Task]:
        """Lease up to ``limit`` waiting tasks of ``queue`` whose ETA has come, oldest first."""
        rows = await self._sync(hotpath.claim, queue, now, limit, lease_until)
        tasks = [task_from_row(row) for row in rows]
        tasks.sort(key=lambda t: (t.eta_us, t.id))
        return tasks

    async def claim_task(self, queue: str, name: str, lease_until: int) -> Task | None:
        """Lease one task now, whatever its ETA (Run now); None if it is already in flight or gone."""
        row = await self._one(
            "UPDATE task SET state='running', lease_until_us=?, last_schedule_us=eta_us"
            f" WHERE queue=? AND name=? AND state!='running' RETURNING {TASK_COLUMNS}",
            (lease_until, queue, name),
        )
        return None if row is None else task_from_row(row)

    async def next_eta(self, queue: str) -> int | None:
        """The earliest ETA among the queue's waiting tasks."""
        return await self._sync(hotpath.next_eta, queue)

    async def release_leases(self) -> int:
        """Put every leased task back to waiting: called at start, when no delivery can be in flight."""
        return await self._exec(RELEASE_LEASES)

    async def release_tasks(self, ids: Sequence[int]) -> int:
        """Put these leased tasks back to waiting (their deliveries ended unrecorded); how many were leased."""
        count = 0
        for start in range(0, len(ids), 500):  # within SQLite's limit of bound values
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            count += await self._exec(
                f"UPDATE task SET state='waiting', lease_until_us=NULL WHERE state='running' AND id IN ({marks})", chunk
            )
        return count

    async def expire_leases(self, now: int, keep: Collection[int]) -> int:
        """Put tasks whose lease ran out back to waiting, except those in ``keep`` (deliveries under way)."""
        rows = await self._all(EXPIRED_LEASES, (now,))
        ids = [row[0] for row in rows if row[0] not in keep]
        return await self.release_tasks(ids) if ids else 0

    async def finish(self, results: Sequence[tuple[Task, Attempt, str, int]]) -> None:
        """Record several delivery outcomes in one transaction (group commit).

        Each entry is ``(task, attempt, outcome, value)``: outcome ``done`` (value = tombstone
        expiry), ``retry`` (value = next ETA) or ``failed`` (value = tombstone expiry).
        """
        await self._sync(hotpath.finish, results)

    def try_finish(self, results: Sequence[tuple[Task, Attempt, str, int]]) -> None | NotNow:
        """``finish`` at once if the store is free (see ``try_now``); ``NOT_NOW`` if it must wait."""
        return self.try_now(hotpath.finish, results)

    async def _drop(self, task_id: int) -> None:
        await self.db.execute("DELETE FROM entity WHERE task_id=?", (task_id,))
        await self.db.execute("DELETE FROM attempt WHERE task_id=?", (task_id,))
        await self.db.execute("DELETE FROM task WHERE id=?", (task_id,))

    async def _tombstone(self, queue: str, name: str, until_us: int) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO tombstone (queue, name, until_us) VALUES (?, ?, ?)", (queue, name, until_us)
        )

    # -- reading and steering tasks -------------------------------------------------------------

    async def get_task(self, queue: str, name: str) -> Task | None:
        """One task by queue and short name."""
        row = await self._one(f"SELECT {TASK_COLUMNS} FROM task WHERE queue=? AND name=?", (queue, name))
        return None if row is None else task_from_row(row)

    async def is_tombstoned(self, queue: str, name: str, now: int) -> bool:
        """Whether a task name was used recently."""
        row = await self._one("SELECT 1 FROM tombstone WHERE queue=? AND name=? AND until_us>?", (queue, name, now))
        return row is not None

    async def list_tasks(
        self,
        queue: str,
        states: Sequence[TaskState] | None = None,
        limit: int = 100,
        after: tuple[int, int] | None = None,
        newest_first: bool = False,
        name_prefix: str = "",
        body_has: Sequence[Sequence[bytes]] = (),
    ) -> list[Task]:
        """A page of a queue's tasks ordered by ETA (``after`` is the last (eta_us, id) seen).

        ``name_prefix`` keeps the names that start with it; ``body_has`` keeps the bodies that contain
        every byte string of one of its groups (a coarse first cut the caller refines).
        """
        sql = f"SELECT {TASK_COLUMNS} FROM task WHERE queue=?"
        params: list[Any] = [queue]
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            params += [s.value for s in states]
        if name_prefix:
            # A range rather than LIKE: no wildcard to escape, and the (queue, name) index serves it.
            sql += " AND name >= ? AND name < ?"
            params += [name_prefix, name_prefix + "\U0010ffff"]
        if body_has:
            groups = [" AND ".join(["instr(body, ?) > 0"] * len(group)) or "1" for group in body_has]
            sql += " AND ((" + ") OR (".join(groups) + "))"
            params += [term for group in body_has for term in group]
        if after is not None:
            sql += " AND (eta_us, id) < (?, ?)" if newest_first else " AND (eta_us, id) > (?, ?)"
            params += list(after)
        sql += " ORDER BY eta_us DESC, id DESC" if newest_first else " ORDER BY eta_us, id"
        sql += " LIMIT ?"
        params.append(limit)
        return [task_from_row(row) for row in await self._all(sql, params)]

    async def delete_task(self, queue: str, name: str, until_us: int) -> bool:
        """Delete a task (and its entity) and tombstone its name; False if there was none."""
        async with self._tx():
            row = await self._raw_one("SELECT id FROM task WHERE queue=? AND name=?", (queue, name))
            if row is None:
                return False
            await self._drop(int(row[0]))
            await self._tombstone(queue, name, until_us)
        return True

    async def purge(self, queue: str, until_us: int, states: Sequence[TaskState] | None = None) -> int:
        """Delete a queue's tasks (all, or those in ``states``), tombstoning their names."""
        where = "queue=?"
        params: list[Any] = [queue]
        if states:
            where += f" AND state IN ({','.join('?' * len(states))})"
            params += [s.value for s in states]
        async with self._tx():
            await self.db.execute(
                "INSERT OR REPLACE INTO tombstone (queue, name, until_us)"
                f" SELECT queue, name, ? FROM task WHERE {where}",
                (until_us, *params),
            )
            await self.db.execute(f"DELETE FROM entity WHERE task_id IN (SELECT id FROM task WHERE {where})", params)
            await self.db.execute(f"DELETE FROM attempt WHERE task_id IN (SELECT id FROM task WHERE {where})", params)
            async with self.db.execute(f"DELETE FROM task WHERE {where}", params) as cur:
                count = cur.rowcount
        return count

    async def retry_failed(self, queue: str, now: int, name: str | None = None) -> int:
        """Put FAILED tasks back to waiting, due now, with fresh counters; their tombstones are lifted."""
        where = "queue=? AND state='failed'" + (" AND name=?" if name else "")
        params: list[Any] = [queue] + ([name] if name else [])
        async with self._tx():
            await self.db.execute(
                f"DELETE FROM tombstone WHERE queue=? AND name IN (SELECT name FROM task WHERE {where})",
                (queue, *params),
            )
            async with self.db.execute(
                f"UPDATE task SET state='waiting', eta_us=?, retry_count=0, execution_count=0,"
                f" previous_response=NULL, retry_reason='', first_attempt_us=NULL WHERE {where}",
                (now, *params),
            ) as cur:
                count = cur.rowcount
        return count

    async def attempts(self, task_id: int) -> list[Attempt]:
        """Every recorded attempt of a task, first to last."""
        rows = await self._all(
            "SELECT task_id, number, schedule_us, dispatch_us, response_us, status, reason, excerpt"
            " FROM attempt WHERE task_id=? ORDER BY number",
            (task_id,),
        )
        return [Attempt(*row) for row in rows]

    async def counts(self, now: int) -> dict[str, dict[str, Any]]:
        """Per queue: waiting, due, running and failed counts and the oldest ETA.

        Counting walks the task index (half a second per million tasks here), so it runs on a
        connection of its own, where the hot paths do not wait behind it; and a tally is used again
        while nothing in the database has changed (the console asks every three seconds), only the
        due count, which moves with the clock, being taken anew.
        """
        # data_version changes whenever another connection (the writer) commits a change. It is read
        # before the count: a change committed during it makes the next call count again.
        version = (await self._read("PRAGMA data_version"))[0][0] if self._reader is not None else None
        if version is not None and self._tally is not None and self._tally[0] == version:
            rows = self._tally[1]
        else:
            rows = await self._read("SELECT queue, state, COUNT(*), MIN(eta_us) FROM task GROUP BY queue, state")
            if version is not None:
                self._tally = (version, rows)
        due_sql = "SELECT COUNT(*) FROM task WHERE queue=? AND state='waiting' AND eta_us<=?"
        out: dict[str, dict[str, Any]] = {}
        for queue, state, count, oldest in rows:
            entry = out.setdefault(queue, {"waiting": 0, "due": 0, "running": 0, "failed": 0, "oldest_eta_us": None})
            entry[state] = count
            if state == TaskState.WAITING.value:
                due = oldest is not None and oldest <= now
                entry["due"] = (await self._read(due_sql, (queue, now)))[0][0] if due else 0
            if state != TaskState.FAILED.value and oldest is not None:
                prev = entry["oldest_eta_us"]
                entry["oldest_eta_us"] = oldest if prev is None else min(prev, oldest)
        return out

    # -- entities -------------------------------------------------------------------------------

    async def put_entity(self, body: bytes, now: int, key: str | None = None) -> str:
        """Store a large payload and return its key (a new one, or ``key``, replacing what it held)."""
        key = key or "dee_" + secrets.token_hex(16)
        await self._exec(
            "INSERT INTO entity (key, body, created_us) VALUES (?, ?, ?)"
            " ON CONFLICT(key) DO UPDATE SET body=excluded.body",
            (key, body, now),
        )
        return key

    async def link_entity(self, key: str, task_id: int) -> None:
        """Tie a payload to the task that runs it, so it goes when the task is deleted or gives up."""
        await self._exec("UPDATE entity SET task_id=? WHERE key=?", (task_id, key))

    async def get_entity(self, key: str) -> bytes | None:
        """A stored payload, or None."""
        row = await self._one("SELECT body FROM entity WHERE key=?", (key,))
        return None if row is None else bytes(row[0])

    async def delete_entity(self, key: str) -> bool:
        """Delete a stored payload; False if there was none."""
        return await self._exec("DELETE FROM entity WHERE key=?", (key,)) > 0

    async def list_entities(self, limit: int = 100) -> list[tuple[str, int, int, int | None]]:
        """(key, size, created_us, task_id) of stored payloads, newest first."""
        rows = await self._all(
            "SELECT key, length(body), created_us, task_id FROM entity ORDER BY created_us DESC LIMIT ?", (limit,)
        )
        return [(r[0], int(r[1]), int(r[2]), r[3]) for r in rows]

    # -- housekeeping ---------------------------------------------------------------------------

    async def prune_tombstones(self, now: int, batch: int = 10_000) -> int:
        """Forget task and queue names whose reservation has run out; how many task names.

        In batches, each its own statement, so that a backlog of expired names (one per task delivered)
        never holds the hot paths up for long.
        """
        sql = (
            "DELETE FROM tombstone WHERE (queue, name) IN"
            " (SELECT queue, name FROM tombstone WHERE until_us<=? ORDER BY until_us LIMIT ?)"
        )
        total = 0
        while True:
            count = await self._exec(sql, (now, batch))
            total += count
            if count < batch:
                break
        await self._exec("DELETE FROM queue_tombstone WHERE until_us<=?", (now,))
        return total

    async def reset(self) -> None:
        """Delete every task, attempt, tombstone and entity; keep the queues."""
        async with self._tx():
            for table in ("task", "attempt", "tombstone", "queue_tombstone", "entity"):
                await self.db.execute(f"DELETE FROM {table}")

    async def get_meta(self, key: str) -> str | None:
        """A value the emulator keeps for itself (its signing key, ...), or None."""
        row = await self._one("SELECT value FROM meta WHERE key=?", (key,))
        return None if row is None else str(row[0])

    async def put_meta(self, key: str, value: str, *, replace: bool = True) -> str:
        """Keep a value; with ``replace=False`` a value already kept wins. The value kept."""
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        async with self._tx():
            await self.db.execute(f"{verb} INTO meta (key, value) VALUES (?, ?)", (key, value))
            row = await self._raw_one("SELECT value FROM meta WHERE key=?", (key,))
        return str(row[0])

    async def delete_meta(self, key: str) -> None:
        """Forget a kept value."""
        await self._exec("DELETE FROM meta WHERE key=?", (key,))

    async def stored_bytes(self) -> int:
        """What the stored tasks weigh for ``total_storage_limit``: method, URL and body bytes, summed."""
        row = await self._one(
            "SELECT COALESCE(SUM(LENGTH(method) + LENGTH(CAST(url AS BLOB)) + LENGTH(body)), 0) FROM task"
        )
        return int(row[0])

    async def count_due(self, queues: Sequence[str], now: int) -> int:
        """Waiting tasks whose ETA has come, in the given queues."""
        if not queues:
            return 0
        marks = ",".join("?" * len(queues))
        row = await self._one(
            f"SELECT COUNT(*) FROM task WHERE queue IN ({marks}) AND state='waiting' AND eta_us<=?", (*queues, now)
        )
        return int(row[0])
