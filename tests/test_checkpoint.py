"""The WAL is copied back off the event loop's thread, and the writer still starts it over."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest
from deferred_emulator import checkpoint
from deferred_emulator.models import NewTask
from deferred_emulator.store import Store

NOW = 1_700_000_000_000_000


def batch(start: int) -> list[NewTask]:
    """100 tasks of 500 bytes: 60 to 140 pages of WAL, with the indexes' pages, as the table grows."""
    return [
        NewTask(queue="default", name=f"t{start + i}", eta_us=NOW + i, body=b"x" * 500, generated_name=True)
        for i in range(100)
    ]


def wal_pages(path: Path) -> int:
    """The most pages the WAL ever held: its file only grows, written over from the start each time
    the writer starts the WAL over."""
    return os.path.getsize(f"{path}-wal") // 4096


@pytest.fixture
def eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpointer that starts a round after every commit and hands over at 50 pages."""
    monkeypatch.setattr(checkpoint, "EVERY_COMMITS", 1)
    monkeypatch.setattr(checkpoint, "MIN_INTERVAL_S", 0.0)
    monkeypatch.setattr(checkpoint, "FINISH_FRAMES", 50)


@pytest.mark.usefixtures("eager")
async def test_under_steady_writes_the_thread_copies_and_the_writer_starts_the_wal_over(tmp_path: Path) -> None:
    # Given a store with an eager checkpointer
    path = tmp_path / "tasks.sqlite3"
    store = await Store.open(str(path))
    try:
        assert store.checkpointer is not None
        # SQLite's own checkpoints are pushed back, as the backstop
        assert (await store._raw_one("PRAGMA wal_autocheckpoint"))[0] == checkpoint.BACKSTOP_PAGES
        # When 200 batches, about 20,000 pages, are written back to back, the thread's rounds running meanwhile
        # (and the event loop turning between two, as between two requests). Every third batch waits for
        # the round under way to end: how long a thread waits for a core is the machine's business, and
        # while it waits the writer goes on alone, the WAL growing towards the backstop as designed.
        for i in range(200):
            await store.add_tasks(batch(i * 100), NOW)
            await asyncio.sleep(0)
            if i % 3 == 2:
                await store.checkpointer.wait()
        await store.checkpointer.wait()
        # Then the thread made rounds, and the WAL was started over along the way: it never held more
        # than a few batches (a WAL nobody copies back grows to the backstop, 4,000 pages)
        assert store.checkpointer.rounds >= 2
        assert wal_pages(path) < 1500
        assert (await store._raw_one("SELECT COUNT(*) FROM task"))[0] == 20_000
    finally:
        await store.close()
    # And every task is there after a reopen
    reopened = await Store.open(str(path))
    try:
        assert (await reopened._raw_one("SELECT COUNT(*) FROM task"))[0] == 20_000
    finally:
        await reopened.close()


async def test_the_writer_copies_what_the_thread_left_and_its_next_write_starts_the_wal_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a store whose thread makes no rounds, and a WAL of about 1,000 pages nobody has copied back
    monkeypatch.setattr(checkpoint, "EVERY_COMMITS", 10**9)
    path = tmp_path / "tasks.sqlite3"
    store = await Store.open(str(path))
    try:
        assert store.checkpointer is not None
        for i in range(10):
            await store.add_tasks(batch(i * 100), NOW)
        full = wal_pages(path)
        assert 200 < full < checkpoint.BACKSTOP_PAGES
        # When a round has asked for the hand-over, and five more batches are written
        store.checkpointer.finish_pending = True
        for i in range(10, 15):
            await store.add_tasks(batch(i * 100), NOW)
        # Then the first of them copied the rest and the next started the WAL over, written from its start
        # again: the file did not grow (without the hand-over, it grows by every batch)
        assert not store.checkpointer.finish_pending
        assert store.checkpointer.rounds == 0
        assert wal_pages(path) == full
        assert (await store._raw_one("SELECT COUNT(*) FROM task"))[0] == 1500
    finally:
        await store.close()


@pytest.mark.usefixtures("eager")
async def test_a_failing_round_is_logged_and_the_store_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a checkpointer whose rounds fail
    def broken(self: checkpoint.Checkpointer) -> int:
        raise OSError("disk gone")

    monkeypatch.setattr(checkpoint.Checkpointer, "_checkpoint", broken)
    store = await Store.open(str(tmp_path / "tasks.sqlite3"))
    try:
        assert store.checkpointer is not None
        # When tasks are added
        await store.add_tasks(batch(0), NOW)
        await store.checkpointer.wait()
        await store.add_tasks(batch(100), NOW)
        # Then the failure is logged, no hand-over is asked for, and the tasks are stored all the same
        assert "WAL checkpoint failed" in caplog.text
        assert not store.checkpointer.finish_pending
        assert (await store._raw_one("SELECT COUNT(*) FROM task"))[0] == 200
    finally:
        await store.close()


async def test_a_failing_hand_over_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Given a checkpointer with a hand-over pending, and a connection that cannot run it
    store = await Store.open(str(tmp_path / "tasks.sqlite3"))
    try:
        assert store.checkpointer is not None
        store.checkpointer.finish_pending = True
        closed = sqlite3.connect(":memory:")
        closed.close()
        # When the writer hands over, then the failure is logged, not raised
        store.checkpointer.finish(closed)
        assert "WAL checkpoint failed" in caplog.text
        assert not store.checkpointer.finish_pending
    finally:
        await store.close()


async def test_memory_databases_have_no_checkpointer() -> None:
    store = await Store.open(":memory:")
    try:
        await store.add_tasks(batch(0), NOW)
        assert store.checkpointer is None
    finally:
        await store.close()
