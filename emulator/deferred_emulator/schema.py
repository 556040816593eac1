"""The database's schema, and how its rows map to the models."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .models import AuthToken, HttpTarget, QueueConfig, QueueState, RetryConfig, TargetKind, Task, TaskState

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queue (name TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queue_tombstone (name TEXT PRIMARY KEY, until_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS task (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    eta_us INTEGER NOT NULL,
    created_us INTEGER NOT NULL,
    lease_until_us INTEGER,
    kind TEXT NOT NULL,
    method TEXT NOT NULL,
    url TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    service TEXT NOT NULL DEFAULT '',
    version TEXT NOT NULL DEFAULT '',
    instance TEXT NOT NULL DEFAULT '',
    host TEXT NOT NULL DEFAULT '',
    retry TEXT,
    deadline_s REAL,
    retry_count INTEGER NOT NULL DEFAULT 0,
    execution_count INTEGER NOT NULL DEFAULT 0,
    dispatch_count INTEGER NOT NULL DEFAULT 0,
    response_count INTEGER NOT NULL DEFAULT 0,
    previous_response INTEGER,
    retry_reason TEXT NOT NULL DEFAULT '',
    first_attempt_us INTEGER,
    last_schedule_us INTEGER,
    last_dispatch_us INTEGER,
    last_response_us INTEGER,
    last_status INTEGER,
    last_excerpt TEXT NOT NULL DEFAULT '',
    auth TEXT,
    UNIQUE (queue, name)
);
CREATE INDEX IF NOT EXISTS task_due ON task (queue, state, eta_us);
DROP INDEX IF EXISTS task_running;
CREATE TABLE IF NOT EXISTS attempt (
    task_id INTEGER NOT NULL,
    number INTEGER NOT NULL,
    schedule_us INTEGER NOT NULL,
    dispatch_us INTEGER NOT NULL,
    response_us INTEGER NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    excerpt TEXT NOT NULL,
    PRIMARY KEY (task_id, number)
);
CREATE TABLE IF NOT EXISTS tombstone (
    queue TEXT NOT NULL,
    name TEXT NOT NULL,
    until_us INTEGER NOT NULL,
    PRIMARY KEY (queue, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tombstone_until ON tombstone (until_us);
CREATE TABLE IF NOT EXISTS entity (
    key TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    created_us INTEGER NOT NULL,
    task_id INTEGER
);
CREATE INDEX IF NOT EXISTS entity_task ON entity (task_id);
"""
# task_running (queue) WHERE state='running' is dropped where an older version made it: task_due finds a
# queue's leased tasks as well, and the index cost two page writes to every delivered task (about 13 us).

#: Distinct queues of the task table, each found by one index step (a loose index scan), for statements
#: that concern the leased tasks of every queue: ``queue IN (TASK_QUEUES) AND state='running'`` uses task_due.
TASK_QUEUES = (
    "SELECT name FROM (WITH RECURSIVE q(name) AS (SELECT (SELECT MIN(queue) FROM task) UNION ALL"
    " SELECT (SELECT MIN(queue) FROM task WHERE queue > q.name) FROM q WHERE q.name IS NOT NULL)"
    " SELECT name FROM q WHERE name IS NOT NULL)"
)
#: Older databases' tombstone table had a rowid: a third b-tree, and a third page written for every task
#: delivered. It is rebuilt WITHOUT ROWID, rows and all, in one transaction when such a database is opened.
REBUILD_TOMBSTONES = """
BEGIN IMMEDIATE;
CREATE TABLE tombstone_new (
    queue TEXT NOT NULL, name TEXT NOT NULL, until_us INTEGER NOT NULL, PRIMARY KEY (queue, name)
) WITHOUT ROWID;
INSERT INTO tombstone_new (queue, name, until_us) SELECT queue, name, until_us FROM tombstone;
DROP TABLE tombstone;
ALTER TABLE tombstone_new RENAME TO tombstone;
CREATE INDEX tombstone_until ON tombstone (until_us);
COMMIT;
"""
#: Columns added since a table was first created: (table, column, declaration), added to older databases.
ADDED_COLUMNS = (("task", "auth", "TEXT"),)


def task_from_row(row: Sequence[Any]) -> Task:
    """Build a Task from a row selected with TASK_COLUMNS."""
    return Task(
        id=row[0],
        queue=row[1],
        name=row[2],
        state=TaskState(row[3]),
        eta_us=row[4],
        created_us=row[5],
        kind=TargetKind(row[6]),
        method=row[7],
        url=row[8],
        headers=json.loads(row[9]),
        body=bytes(row[10]),
        service=row[11],
        version=row[12],
        instance=row[13],
        host=row[14],
        retry=RetryConfig.from_text(row[15]),
        deadline_s=row[16],
        retry_count=row[17],
        execution_count=row[18],
        dispatch_count=row[19],
        response_count=row[20],
        previous_response=row[21],
        retry_reason=row[22],
        first_attempt_us=row[23],
        last_schedule_us=row[24],
        last_dispatch_us=row[25],
        last_response_us=row[26],
        last_status=row[27],
        last_excerpt=row[28],
        auth=AuthToken.from_text(row[29]) if row[29] else None,
    )


def queue_to_text(queue: QueueConfig) -> str:
    """JSON text of a queue's settings."""
    data = {
        "state": queue.state.value,
        "rate_per_s": queue.rate_per_s,
        "rate_text": queue.rate_text,
        "bucket_size": queue.bucket_size,
        "max_concurrent": queue.max_concurrent,
        "target": queue.target,
        "retry": queue.retry.to_dict(),
        "mode": queue.mode,
        "source": queue.source,
        "created_us": queue.created_us,
        "purge_us": queue.purge_us,
        "routing_version": queue.routing_version,
        "routing_instance": queue.routing_instance,
        "http_target": None if queue.http_target is None else queue.http_target.to_dict(),
    }
    return json.dumps(data)


def queue_from_row(name: str, text: str) -> QueueConfig:
    """The inverse of ``queue_to_text``."""
    data = json.loads(text)
    data["state"] = QueueState(data["state"])
    data["retry"] = RetryConfig.from_dict(data["retry"])
    data["http_target"] = HttpTarget.from_dict(data.get("http_target"))
    return QueueConfig(name=name, **data)
