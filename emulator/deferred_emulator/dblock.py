"""One running emulator per database: an exclusive lock on the database file itself, held while ``serve`` runs.

The lock is taken on the file (its inode), not on a name beside it: a symlink, a hard link or another
spelling of the path reaches the same inode, so a second emulator cannot get past it and deliver the
same tasks twice. ``flock`` locks do not mix with the POSIX locks SQLite takes on the same file. The
kernel drops the lock when the process ends, however it ends (``kill -9`` included), so a stale lock
never blocks a restart. The holder's pid is written to ``<real path>.lock``, for the error message.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: SQLite's own locking is all there is
    fcntl = None  # type: ignore[assignment]


class DatabaseInUse(Exception):
    """Raised when another running emulator holds the database."""


class DatabaseLock:
    """An exclusive, non-blocking lock on a database file."""

    def __init__(self, db_path: str) -> None:
        self.db_path = Path(db_path)
        self.path = Path(os.path.realpath(db_path) + ".lock")
        self._fd: int | None = None
        #: (device, inode) of the database file locked, to tell when the path no longer leads to it.
        self.identity: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"<DatabaseLock {self.db_path} held={self._fd is not None}>"

    def acquire(self) -> None:
        """Take the lock, or raise DatabaseInUse naming the process that has it."""
        if fcntl is None:
            return
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        # An empty new file is what SQLite makes of a new database anyway.
        fd = os.open(self.db_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            holder = self._holder()
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise DatabaseInUse(
                f"database {self.db_path} is in use by another running deferred-emulator{who};"
                " stop it or pass another --db"
            ) from None
        self._fd = fd
        stat = os.fstat(fd)
        self.identity = (stat.st_dev, stat.st_ino)
        try:
            self.path.write_text(str(os.getpid()))
        except OSError:
            pass  # the pid is only for the message

    def _holder(self) -> str:
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def release(self) -> None:
        """Drop the lock (closing the file releases it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
