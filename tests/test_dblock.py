"""A corrupt, foreign or busy database stops ``serve`` with one clear line (exit 2), never a traceback."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from deferred_emulator.cli import cli
from deferred_emulator.dblock import DatabaseInUse, DatabaseLock
from deferred_emulator.store import Store, StoreError


def serve(db: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["serve", "--port", "0", "--db", str(db)])
    return result.exit_code, result.output


def test_a_corrupt_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    # Given a db path holding something that is not SQLite
    db = tmp_path / "tasks.sqlite3"
    db.write_bytes(b"this is not a database\n" * 400)
    # When serve starts on it
    code, output = serve(db)
    # Then it says so in one line and exits with 2
    assert code == 2
    assert output.count("\n") == 1
    assert "not a deferred-emulator database" in output
    assert "Traceback" not in output


def test_another_programs_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    # Given a SQLite database of another program
    db = tmp_path / "other.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
    # When serve starts on it
    code, output = serve(db)
    # Then it is refused with one line, and none of the emulator's tables were added to it
    assert code == 2
    assert output.count("\n") == 1
    assert "another program's SQLite database (tables: users)" in output
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"users"}


async def test_the_store_refuses_a_foreign_database(tmp_path: Path) -> None:
    db = tmp_path / "other.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="another program"):
        await Store.open(str(db))


async def test_an_emulator_database_opens_again(tmp_path: Path) -> None:
    # An existing emulator database (it has the meta table) is not mistaken for a foreign one.
    db = str(tmp_path / "tasks.sqlite3")
    await (await Store.open(db)).close()
    await (await Store.open(db)).close()


def test_a_database_in_use_by_another_emulator_is_refused(tmp_path: Path) -> None:
    # Given a database held by a running emulator
    db = tmp_path / "tasks.sqlite3"
    holder = DatabaseLock(str(db))
    holder.acquire()
    try:
        # When a second serve starts on it
        code, output = serve(db)
    finally:
        holder.release()
    # Then it refuses in one line, naming the holder
    assert code == 2
    assert output.count("\n") == 1
    assert "in use by another running deferred-emulator" in output
    assert "pid" in output


def test_the_lock_is_released_and_taken_again(tmp_path: Path) -> None:
    db = str(tmp_path / "tasks.sqlite3")
    first = DatabaseLock(db)
    first.acquire()
    with pytest.raises(DatabaseInUse):
        DatabaseLock(db).acquire()
    first.release()
    second = DatabaseLock(db)
    second.acquire()  # a stale lock file never blocks: only a live holder does
    second.release()


def test_an_unusable_path_is_one_line(tmp_path: Path) -> None:
    # Given a db path under a regular file (the directory cannot be created)
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, output = serve(blocker / "tasks.sqlite3")
    assert code == 2
    assert output.count("\n") == 1
    assert "cannot use database" in output
