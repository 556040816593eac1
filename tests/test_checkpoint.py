"""The WAL is copied back into the database off the event loop's thread, and stays bounded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from deferred_emulator import store as store_module
from deferred_emulator.models import NewTask
from deferred_emulator.store import Store

NOW = 1_700_000_000_000_000


def batch(start: int) -> list[NewTask]:
    return [
        NewTask(queue="default", name=f"t{start + i}", eta_us=NOW + i, body=b"x" * 500, generated_name=True)
        for i in range(100)
    ]


async def test_the_wal_is_checkpointed_by_the_store_and_stays_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a store that looks at its WAL every other transaction and checkpoints once it holds 64 KiB
    monkeypatch.setattr(store_module, "CHECKPOINT_BYTES", 64 * 1024)
    monkeypatch.setattr(store_module, "LOOK_AT_WAL_EVERY", 2)
    path = tmp_path / "tasks.sqlite3"
    store = await Store.open(str(path))
    try:
        assert (await store._raw_one("PRAGMA wal_autocheckpoint"))[0] == 0
        # When far more than that is written
        for i in range(30):
            await store.add_tasks(batch(i * 100), NOW)
            if store._checkpointing is not None:
                await store._checkpointing
        # Then the WAL was emptied along the way (unchecked, it grows to about 5 MB): it never holds much
        # more than the limit plus two transactions' writes
        assert os.stat(str(path) + "-wal").st_size < 64 * 1024 + 2 * 200 * 1024
        assert (await store._raw_one("SELECT COUNT(*) FROM task"))[0] == 3000
    finally:
        await store.close()
    # And everything is in the database file itself after closing
    assert not os.path.exists(str(path) + "-wal") or os.stat(str(path) + "-wal").st_size == 0
    reopened = await Store.open(str(path))
    try:
        assert (await reopened._raw_one("SELECT COUNT(*) FROM task"))[0] == 3000
    finally:
        await reopened.close()


async def test_memory_databases_keep_sqlite_s_own_checkpoints() -> None:
    store = await Store.open(":memory:")
    try:
        await store.add_tasks(batch(0), NOW)
        assert store._checkpointing is None
    finally:
        await store.close()
