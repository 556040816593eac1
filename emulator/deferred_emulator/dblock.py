"""One running emulator per database: an exclusive lock on ``<db>.lock`` held while ``serve`` runs.

The kernel drops the lock when the process ends, however it ends (``kill -9`` included), so a stale
lock file never blocks a restart.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: SQLite's own locking is all there is
    fcntl = None  # type: ignore[assignment]


class DatabaseInUse(Exception):
    """Raised when another running emulator holds the database."""


class DatabaseLock:
    """An exclusive, non-blocking lock beside a database file."""

    def __init__(self, db_path: str) -> None:
        self.path = Path(db_path + ".lock")
        self._file: IO[str] | None = None

    def __repr__(self) -> str:
        return f"<DatabaseLock {self.path} held={self._file is not None}>"

    def acquire(self) -> None:
        """Take the lock, or raise DatabaseInUse naming the process that has it."""
        if fcntl is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # held open for the server's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise DatabaseInUse(
                f"database {self.path.with_suffix('')} is in use by another running deferred-emulator{who};"
                " stop it or pass another --db"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        """Drop the lock (closing the file releases it)."""
        if self._file is not None:
            self._file.close()
            self._file = None
