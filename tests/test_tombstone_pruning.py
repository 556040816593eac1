"""Expired task names are forgotten: in batches, and by the running emulator without being asked."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from conftest import API, MakeEmulator, RecordingApp
from deferred_emulator.store import Store, StoreError


async def tombstone_names(store: Store) -> list[str]:
    return [row[0] for row in await store._all("SELECT name FROM tombstone ORDER BY name")]


async def test_only_expired_names_are_pruned_whatever_the_batch(tmp_path: Path) -> None:
    # Given five expired task names and two still reserved
    store = await Store.open(str(tmp_path / "tasks.sqlite3"))
    try:
        for i in range(5):
            await store._exec("INSERT INTO tombstone (queue, name, until_us) VALUES ('q', ?, ?)", (f"old{i}", 100 + i))
        for name in ("new0", "new1"):
            await store._exec("INSERT INTO tombstone (queue, name, until_us) VALUES ('q', ?, 1000)", (name,))
        # When pruned at time 500 two at a time
        count = await store.prune_tombstones(500, batch=2)
        # Then exactly the expired ones are gone
        assert count == 5
        assert await tombstone_names(store) == ["new0", "new1"]
        assert await store.is_tombstoned("q", "new0", 500)
    finally:
        await store.close()


async def test_a_running_emulator_forgets_expired_names(
    make_emulator: MakeEmulator, app_server: RecordingApp, tmp_path: Path
) -> None:
    # Given a database holding the name of a task delivered long ago, and of one delivered just now
    db = tmp_path / "tasks.sqlite3"
    store = await Store.open(str(db))
    await store._exec("INSERT INTO tombstone (queue, name, until_us) VALUES ('default', 'ancient', 1)")
    await store.close()
    emulator = await make_emulator(app_url=app_server.url, db_path=str(db), ignore_rate_limits=True)
    await emulator.add(name="recent")
    await app_server.wait_for(1)
    await emulator.drain()
    # When the emulator has run, then the expired name is forgotten and the recent one still reserved
    store = emulator.emulator.store
    for _ in range(500):  # the pruning starts with the emulator; at most 5 s
        if await tombstone_names(store) == ["recent"]:
            break
        await asyncio.sleep(0.01)
    assert await tombstone_names(store) == ["recent"]
    refused = await emulator.call("POST", f"{API}/queues/default/tasks", {"task": {"name": "recent"}}, expect=409)
    assert refused["error"]["status"] == "ALREADY_EXISTS"


OLD_TOMBSTONE_TABLE = """
CREATE TABLE tombstone (queue TEXT NOT NULL, name TEXT NOT NULL, until_us INTEGER NOT NULL, PRIMARY KEY (queue, name));
CREATE INDEX tombstone_until ON tombstone (until_us);
"""


async def earlier_release_database(path: str, *names: tuple[str, int]) -> None:
    """A database as an earlier release left it: its tombstone table with a rowid, holding ``names``."""
    store = await Store.open(path)
    try:
        await store._exec("DROP TABLE tombstone")
        for statement in OLD_TOMBSTONE_TABLE.strip().split(";\n"):
            await store._exec(statement)
        for name, until_us in names:
            await store._exec("INSERT INTO tombstone (queue, name, until_us) VALUES ('q', ?, ?)", (name, until_us))
    finally:
        await store.close()


async def test_an_earlier_releases_tombstones_are_kept_in_the_rebuilt_table(tmp_path: Path) -> None:
    # Given a database an earlier release made, its tombstone table with a rowid, holding two names
    path = str(tmp_path / "tasks.sqlite3")
    await earlier_release_database(path, ("kept", 1000), ("old", 10))
    # When this release opens it
    store = await Store.open(path)
    try:
        # Then the table is rebuilt without a rowid, its index too, and the names are all there
        [(sql,)] = await store._all("SELECT sql FROM sqlite_master WHERE type='table' AND name='tombstone'")
        assert "WITHOUT ROWID" in sql
        assert await store._all("SELECT name FROM sqlite_master WHERE tbl_name='tombstone' AND type='index'") == [
            ("tombstone_until",)
        ]
        assert await tombstone_names(store) == ["kept", "old"]
        assert await store.is_tombstoned("q", "kept", 500) and not await store.is_tombstoned("q", "old", 500)
        assert await store.prune_tombstones(500) == 1
        assert await tombstone_names(store) == ["kept"]
    finally:
        await store.close()
    # And opening it again leaves it as it is
    store = await Store.open(path)
    try:
        assert await tombstone_names(store) == ["kept"]
    finally:
        await store.close()


async def test_an_earlier_releases_database_locked_by_another_program_is_one_clear_line(tmp_path: Path) -> None:
    # Given an earlier release's database, and another program holding its write lock
    path = str(tmp_path / "tasks.sqlite3")
    await earlier_release_database(path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        # When this release opens it, then it says who is in the way (not that the file is foreign)
        with pytest.raises(StoreError, match="locked by another program"):
            await Store.open(path)
    finally:
        other.execute("ROLLBACK")
        other.close()
    # And once the lock is gone, the database opens and is brought up to date
    store = await Store.open(path)
    try:
        [(sql,)] = await store._all("SELECT sql FROM sqlite_master WHERE type='table' AND name='tombstone'")
        assert "WITHOUT ROWID" in sql
    finally:
        await store.close()
