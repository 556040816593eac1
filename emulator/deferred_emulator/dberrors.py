"""What SQLite's failures mean for the user: a 503 that names the cause, instead of a bare 500."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from .errors import EmulatorError


class StoreUnavailable(EmulatorError):
    """Raised when the database cannot be read or written now (disk full, locked, gone, corrupt)."""

    status = 503
    rpc_status = "UNAVAILABLE"


def explain(exc: sqlite3.Error, path: str) -> str:
    """One sentence naming what went wrong with the database at ``path``, and what to do."""
    text = str(exc)
    lower = text.lower()
    if "full" in lower:
        return f"The disk holding {path} is full: the change was not saved (SQLite: {text}). Free some space."
    if "locked" in lower or "busy" in lower:
        return (
            f"The database {path} is locked by another program (a DB browser, or a sqlite3 shell with a write"
            f" transaction open): the change was not saved (SQLite: {text}). Close that program and try again."
        )
    if "malformed" in lower or "not a database" in lower or "corrupt" in lower:
        return f"The database {path} is corrupt (SQLite: {text}); recover it with `sqlite3 {path} .recover`."
    if "readonly" in lower or "read-only" in lower:
        return f"The database {path} cannot be written (SQLite: {text}): check its permissions."
    return f"The database {path} could not be used (SQLite: {text})."


def unavailable(exc: sqlite3.Error, path: str) -> StoreUnavailable:
    """The API error for a failed database operation."""
    return StoreUnavailable(explain(exc, path))


def is_busy(exc: BaseException) -> bool:
    """Whether SQLite refused because another connection holds a lock (worth waiting for)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def waits(budget_s: float) -> Iterator[float]:
    """Pauses between tries while another program holds the write lock: short at first, ``budget_s`` in all."""
    spent, pause = 0.0, 0.001
    while spent < budget_s:
        pause = min(pause, budget_s - spent)
        yield pause
        spent += pause
        pause = min(pause * 2, 0.1)
