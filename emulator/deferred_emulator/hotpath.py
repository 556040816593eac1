"""The statements of the hot paths (adding, claiming, finishing tasks), run synchronously.

Each function takes the store's sqlite3 connection and runs one whole transaction without
yielding. The store calls them in the event loop thread while it holds its lock, so they never
interleave with the statements aiosqlite's thread runs for the other (colder) operations. On the
hot paths a statement takes tens of microseconds, while handing it to aiosqlite's thread costs
a thread switch and an event loop wake-up each way, several per operation: that hand-off was most
of the CPU an enqueue or a delivery cost, and its latency grew with the machine's load.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from .errors import TaskExists, TaskTombstoned
from .models import Attempt, NewTask, Task, TaskState

#: Columns of a Task, in the order ``task_from_row`` reads them.
TASK_COLUMNS = (
    "id, queue, name, state, eta_us, created_us, kind, method, url, headers, body, service, version, instance,"
    " host, retry, deadline_s, retry_count, execution_count, dispatch_count, response_count, previous_response,"
    " retry_reason, first_attempt_us, last_schedule_us, last_dispatch_us, last_response_us, last_status,"
    " last_excerpt, auth"
)
#: Entity keys look like this, so a task body that names one can be linked to it.
ENTITY_KEY_RE = re.compile(rb"dee_[0-9a-f]{32}")
#: Adding a task: columns, and the values of one row. A request's tasks go in as one statement of
#: many rows (``_inserts``), which costs SQLite a third of what as many one-row statements did.
INSERT_TASK = (
    "INSERT INTO task (id, queue, name, state, eta_us, created_us, kind, method, url, headers, body,"
    " service, version, instance, host, retry, deadline_s, auth) VALUES ",
    "(?, ?, ?, 'waiting', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
)
#: The same for a task with no headers, routing, retry, deadline or token: each bound value costs about
#: as much as the rest of the insert, so the defaults are written into the statement.
INSERT_PLAIN_TASK = (
    "INSERT INTO task (id, queue, name, state, eta_us, created_us, kind, method, url, headers, body) VALUES ",
    "(?, ?, ?, 'waiting', ?, ?, ?, ?, ?, '{}', ?)",
)
#: One task stored leased (running), as ``claim`` would leave it: a task due now, delivered at once.
INSERT_LEASED = (
    "INSERT INTO task (id, queue, name, state, eta_us, created_us, kind, method, url, headers, body, service,"
    " version, instance, host, retry, deadline_s, auth, lease_until_us, last_schedule_us)"
    " VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
TASK_NAMED = "SELECT 1 FROM task WHERE queue=? AND name=?"
TOMBSTONED = "SELECT 1 FROM tombstone WHERE queue=? AND name=? AND until_us>?"
CLAIM = (
    "UPDATE task SET state='running', lease_until_us=?, last_schedule_us=eta_us"
    " WHERE id IN (SELECT id FROM task WHERE queue=? AND state='waiting' AND eta_us<=?"
    " ORDER BY eta_us, id LIMIT ?)"
    f" RETURNING {TASK_COLUMNS}"
)
LEASE_NEW = "UPDATE task SET state='running', lease_until_us=?, last_schedule_us=eta_us WHERE id=?"
NEXT_ETA = "SELECT MIN(eta_us) FROM task WHERE queue=? AND state='waiting'"
UPDATE_AFTER_ATTEMPT = (
    "UPDATE task SET state=?, eta_us=?, lease_until_us=NULL, retry_count=?, execution_count=?,"
    " dispatch_count=?, response_count=?, previous_response=?, retry_reason=?, first_attempt_us=?,"
    " last_schedule_us=?, last_dispatch_us=?, last_response_us=?, last_status=?, last_excerpt=?"
    " WHERE id=?"
)
INSERT_ATTEMPT = (
    "INSERT OR REPLACE INTO attempt (task_id, number, schedule_us, dispatch_us, response_us, status, reason,"
    " excerpt) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
TOMBSTONE = "INSERT OR REPLACE INTO tombstone (queue, name, until_us) VALUES (?, ?, ?)"


def add(conn: sqlite3.Connection, tasks: Sequence[NewTask], now: int, lease_until: int | None = None) -> list[Task]:
    """Insert tasks in one transaction: all of them, or none if a name is taken or tombstoned.

    With ``lease_until``, they are leased until then in the same transaction, as ``claim`` leaves them.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        for new in tasks:
            if not new.generated_name:
                _check_name_free(conn, new, now)
        # Ids given here are the ones SQLite would pick (one past the largest), so the rows of a whole
        # request go in as one statement and the Tasks need no lastrowid read back.
        first = (conn.execute("SELECT max(id) FROM task").fetchone()[0] or 0) + 1
        added = [_task(new, task_id, now) for task_id, new in enumerate(tasks, first)]
        if lease_until is not None and len(added) == 1:
            # Stored leased as it is written: an UPDATE after the INSERT cost a fifth of the add.
            conn.execute(INSERT_LEASED, (*_full_values(added[0]), lease_until, added[0].eta_us))
        else:
            _insert_rows(conn, added)
            if lease_until is not None:
                conn.executemany(LEASE_NEW, [(lease_until, task.id) for task in added])
        for task in added:
            # The substring test first: it is far cheaper than the regex, and most bodies name no entity.
            if len(task.body) < 65536 and b"dee_" in task.body:
                _link_entities(conn, task)
    except sqlite3.IntegrityError as exc:
        _rollback(conn)
        # Names were checked above, so only a generated name can have collided: find which one.
        taken = [t.name for t in tasks if conn.execute(TASK_NAMED, (t.queue, t.name)).fetchone()]
        raise TaskExists(taken[0] if taken else "") from exc
    except BaseException:
        _rollback(conn)
        raise
    _commit(conn)
    return added


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite ends some failed transactions by itself (a full disk, for one): a second ROLLBACK would fail.
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _commit(conn: sqlite3.Connection) -> None:
    # A COMMIT that fails (the disk filled up) leaves the transaction open: end it, or every later
    # BEGIN would fail too.
    try:
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _check_name_free(conn: sqlite3.Connection, new: NewTask, now: int) -> None:
    row = conn.execute("SELECT state FROM task WHERE queue=? AND name=?", (new.queue, new.name)).fetchone()
    if row is not None:
        # A FAILED task gave up: its name is tombstoned, even though the task is kept for inspection.
        raise TaskTombstoned(new.name) if row[0] == TaskState.FAILED.value else TaskExists(new.name)
    if conn.execute(TOMBSTONED, (new.queue, new.name, now)).fetchone():
        raise TaskTombstoned(new.name)


def _task(new: NewTask, task_id: int, now: int) -> Task:
    # The row holds exactly what was given, so the Task is built here rather than read back.
    return Task(
        task_id,
        new.queue,
        new.name,
        TaskState.WAITING,
        new.eta_us,
        now,
        new.kind,
        new.method,
        new.url,
        dict(new.headers),
        new.body,
        new.service,
        new.version,
        new.instance,
        new.host,
        new.retry,
        new.deadline_s,
        auth=new.auth,
    )


def _insert_rows(conn: sqlite3.Connection, tasks: list[Task]) -> None:
    """Insert the tasks, in order: runs of plain ones (no headers, routing, retry, deadline or token) with the
    short statement, the others with the full one, each run as multi-row statements."""
    plain: list[Any] = []
    full: list[Any] = []
    for t in tasks:
        if t.headers or t.service or t.version or t.instance or t.host or t.retry or t.deadline_s is not None or t.auth:
            if plain:
                _insert(conn, INSERT_PLAIN_TASK, plain, PLAIN_VALUES)
                plain = []
            full += _full_values(t)
        else:
            if full:
                _insert(conn, INSERT_TASK, full, FULL_VALUES)
                full = []
            plain += (t.id, t.queue, t.name, t.eta_us, t.created_us, t.kind.value, t.method, t.url, t.body)
    if plain:
        _insert(conn, INSERT_PLAIN_TASK, plain, PLAIN_VALUES)
    if full:
        _insert(conn, INSERT_TASK, full, FULL_VALUES)


def _full_values(t: Task) -> tuple[Any, ...]:
    """The values INSERT_TASK binds for ``t``."""
    return (
        t.id,
        t.queue,
        t.name,
        t.eta_us,
        t.created_us,
        t.kind.value,
        t.method,
        t.url,
        json.dumps(t.headers) if t.headers else "{}",
        t.body,
        t.service,
        t.version,
        t.instance,
        t.host,
        t.retry.to_text() if t.retry else None,
        t.deadline_s,
        t.auth.to_text() if t.auth else None,
    )


#: Values bound per row by INSERT_PLAIN_TASK and INSERT_TASK.
PLAIN_VALUES = 9
FULL_VALUES = 17
#: Rows per statement: 100 rows bind at most 1,700 values, far below SQLite's limit (32,766).
ROWS_PER_STATEMENT = 100


def _insert(conn: sqlite3.Connection, insert: tuple[str, str], values: list[Any], per_row: int) -> None:
    step = ROWS_PER_STATEMENT * per_row
    for start in range(0, len(values), step):
        chunk = values[start : start + step]
        conn.execute(_statement(insert, len(chunk) // per_row), chunk)


@lru_cache(maxsize=256)
def _statement(insert: tuple[str, str], rows: int) -> str:
    columns, row = insert
    return columns + ",".join([row] * rows)


def _link_entities(conn: sqlite3.Connection, task: Task) -> None:
    keys = {key.decode() for key in ENTITY_KEY_RE.findall(task.body)}
    if keys:
        marks = ",".join("?" * len(keys))
        conn.execute(f"UPDATE entity SET task_id=? WHERE key IN ({marks})", (task.id, *keys))


def claim(conn: sqlite3.Connection, queue: str, now: int, limit: int, lease_until: int) -> list[Any]:
    """Lease up to ``limit`` due waiting tasks of ``queue``; their rows (TASK_COLUMNS), in no set order."""
    return conn.execute(CLAIM, (lease_until, queue, now, limit)).fetchall()


def next_eta(conn: sqlite3.Connection, queue: str) -> int | None:
    """The earliest ETA among the queue's waiting tasks."""
    row = conn.execute(NEXT_ETA, (queue,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def finish(conn: sqlite3.Connection, results: Sequence[tuple[Task, Attempt, str, int]]) -> None:
    """Record delivery outcomes in one transaction (see ``Store.finish``)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for task, attempt, outcome, value in results:
            _finish_one(conn, task, attempt, outcome, value)
    except BaseException:
        _rollback(conn)
        raise
    _commit(conn)


def _finish_one(conn: sqlite3.Connection, task: Task, attempt: Attempt, outcome: str, value: int) -> None:
    if outcome == "done":
        if task.dispatch_count > 1:  # only attempts that did not succeed are kept: a first one left none
            conn.execute("DELETE FROM attempt WHERE task_id=?", (task.id,))
        conn.execute("DELETE FROM entity WHERE task_id=?", (task.id,))
        conn.execute("DELETE FROM task WHERE id=?", (task.id,))
        conn.execute(TOMBSTONE, (task.queue, task.name, value))
        return
    conn.execute(
        INSERT_ATTEMPT,
        (
            attempt.task_id,
            attempt.number,
            attempt.schedule_us,
            attempt.dispatch_us,
            attempt.response_us,
            attempt.status,
            attempt.reason,
            attempt.excerpt,
        ),
    )
    state = TaskState.WAITING.value if outcome == "retry" else TaskState.FAILED.value
    eta = value if outcome == "retry" else task.eta_us
    conn.execute(
        UPDATE_AFTER_ATTEMPT,
        (
            state,
            eta,
            task.retry_count,
            task.execution_count,
            task.dispatch_count,
            task.response_count,
            task.previous_response,
            task.retry_reason,
            task.first_attempt_us,
            task.last_schedule_us,
            task.last_dispatch_us,
            task.last_response_us,
            task.last_status,
            task.last_excerpt,
            task.id,
        ),
    )
    if outcome == "failed":
        conn.execute(TOMBSTONE, (task.queue, task.name, value))
        conn.execute("DELETE FROM entity WHERE task_id=?", (task.id,))
