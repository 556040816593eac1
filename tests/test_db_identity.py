"""The database file's identity: deleted, moved or replaced while running, links, and corruption."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import API, Handle, MakeEmulator, RecordingApp
from deferred_emulator.dberrors import StoreUnavailable
from deferred_emulator.dblock import DatabaseInUse, DatabaseLock
from deferred_emulator.store import Store
from test_serve import SCRIPT


@pytest.fixture
async def emu(make_emulator: MakeEmulator, app_server: RecordingApp, tmp_path: Path) -> Handle:
    return await make_emulator(app_url=app_server.url, ignore_rate_limits=True, db_path=str(tmp_path / "db" / "t.db"))


async def assert_writes_refused(emu: Handle, why: str, caplog: pytest.LogCaptureFixture) -> None:
    data = await emu.call("POST", f"{API}/queues/default/tasks", {"task": {}}, expect=503)
    assert data["error"]["status"] == "UNAVAILABLE"
    assert why in data["error"]["message"] and "Restart" in data["error"]["message"]
    # And the log says so loudly, once
    errors = [r for r in caplog.records if r.name.endswith("dbaccess") and why in r.getMessage()]
    assert len(errors) == 1
    # While health keeps answering, and reads answer what the open file still gives, or the same clear error
    await emu.call("GET", "/_emulator/v1/health")
    for path in (f"{API}/queues/default/tasks", f"{API}/queues", "/_emulator/v1/stats"):
        data = await emu.call("GET", path, expect=None)
        assert "error" not in data or why in data["error"]["message"], data


async def test_a_database_deleted_while_running_refuses_writes(
    emu: Handle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await emu.call("POST", f"{API}/queues/default:pause")
    await emu.add(name="kept")
    # When the database folder is deleted (rm -rf .deferred-emulator, git clean -xdf)
    for path in (tmp_path / "db").iterdir():
        path.unlink()
    # Then adding answers 503 naming what happened, never a 200 that the next start would lose
    await assert_writes_refused(emu, "was deleted or moved away", caplog)


async def test_a_database_replaced_while_running_refuses_writes(
    emu: Handle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await emu.call("POST", f"{API}/queues/default:pause")
    await emu.add(name="kept")
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    os.replace(other, tmp_path / "db" / "t.db")
    await assert_writes_refused(emu, "was replaced by another file", caplog)


@pytest.mark.parametrize("link", ["symlink", "hardlink", "other spelling"])
def test_the_lock_follows_the_real_file(tmp_path: Path, link: str) -> None:
    db = tmp_path / "tasks.sqlite3"
    holder = DatabaseLock(str(db))
    holder.acquire()
    try:
        alias = tmp_path / "alias.sqlite3"
        if link == "symlink":
            alias.symlink_to(db)
        elif link == "hardlink":
            os.link(db, alias)
        else:
            (tmp_path / "sub").mkdir()
            alias = tmp_path / "sub" / ".." / "tasks.sqlite3"
        with pytest.raises(DatabaseInUse, match="in use by another running deferred-emulator"):
            DatabaseLock(str(alias)).acquire()
    finally:
        holder.release()


def corrupt_table(db: Path, table: str) -> None:
    """Overwrite the root page of ``table`` with garbage."""
    conn = sqlite3.connect(db)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (table,)).fetchone()
    conn.close()
    with open(db, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xa5" * page_size)


async def make_db(db: Path, tasks: int = 50) -> None:
    from deferred_emulator.models import NewTask, QueueConfig

    store = await Store.open(str(db))
    await store.save_queue(QueueConfig("default"))
    await store.add_tasks([NewTask("default", f"t{i}", 0, body=b"x" * 500) for i in range(tasks)], 0)
    await store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    await store.close()


@pytest.mark.subprocess
@pytest.mark.timeout(120)
async def test_a_corrupt_database_at_startup_is_one_line_and_exit_2_within_seconds(tmp_path: Path) -> None:
    db = tmp_path / "tasks.sqlite3"
    await make_db(db)
    corrupt_table(db, "queue")
    started = time.monotonic()
    done = subprocess.run([SCRIPT, "serve", "--port", "0", "--db", str(db)], capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert done.returncode == 2, done
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert str(db) in lines[0] and ".recover" in lines[0] and "corrupt" in lines[0]
    assert took < 20


async def test_a_corrupt_page_met_while_running_is_a_clear_503_error(tmp_path: Path) -> None:
    db = tmp_path / "tasks.sqlite3"
    await make_db(db)
    corrupt_table(db, "task")
    store = await Store.open(str(db))
    try:
        # What touches the corrupt page gets an error that names the file and the way out
        with pytest.raises(StoreUnavailable, match=r"corrupt.*sqlite3 .*\.recover"):
            await store.list_tasks("default")
        # And what does not still works
        assert [q.name for q in await store.load_queues()] == ["default"]
    finally:
        await store.close()


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_serve_through_a_link_to_a_database_in_use_is_one_line_and_exit_2(tmp_path: Path, link: str) -> None:
    from click.testing import CliRunner
    from deferred_emulator.cli import cli

    db = tmp_path / "tasks.sqlite3"
    holder = DatabaseLock(str(db))
    holder.acquire()
    try:
        alias = tmp_path / "alias.sqlite3"
        alias.symlink_to(db) if link == "symlink" else os.link(db, alias)
        result = CliRunner().invoke(cli, ["serve", "--port", "0", "--db", str(alias)])
    finally:
        holder.release()
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "in use by another running deferred-emulator" in result.output
