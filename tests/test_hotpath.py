"""The store's hot paths (add, claim, finish) and the indexes that keep them off full scans."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from deferred_emulator.errors import TaskExists, TaskTombstoned
from deferred_emulator.models import Attempt, NewTask, RetryConfig, TargetKind, TaskState
from deferred_emulator.store import EXPIRED_LEASES, RELEASE_LEASES, Store

NOW = 1_700_000_000_000_000


def new(name: str = "", eta_us: int = NOW, body: bytes = b"payload") -> NewTask:
    """An App Engine task for the default queue."""
    return NewTask(queue="default", name=name or f"gen{eta_us}", eta_us=eta_us, body=body, generated_name=not name)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A store on a fresh file."""
    s = await Store.open(str(tmp_path / "tasks.sqlite3"))
    yield s
    await s.close()


async def test_added_task_reads_back_as_stored(store: Store) -> None:
    # Given a task with headers and a body
    task = NewTask(queue="default", name="t1", eta_us=NOW + 5, headers={"X-A": "b"}, body=b"\x00\x01", url="/w")
    # When it is added
    [added] = await store.add_tasks([task], NOW)
    # Then the Task built in memory equals the row read back
    assert await store.get_task("default", "t1") == added
    assert added.state is TaskState.WAITING and added.created_us == NOW


async def test_a_taken_name_rolls_back_the_whole_batch(store: Store) -> None:
    # Given a task named "dup"
    await store.add_tasks([new("dup")], NOW)
    # When a batch adds a fresh task and "dup" again
    with pytest.raises(TaskExists):
        await store.add_tasks([new("fresh"), new("dup")], NOW)
    # Then neither is stored
    assert await store.get_task("default", "fresh") is None


async def test_claim_leases_due_tasks_oldest_first_and_leaves_the_rest(store: Store) -> None:
    # Given three due tasks and one due later
    await store.add_tasks([new(eta_us=NOW - 3), new(eta_us=NOW - 1), new(eta_us=NOW - 2), new(eta_us=NOW + 10)], NOW)
    # When two are claimed
    claimed = await store.claim_due("default", NOW, 2, NOW + 100)
    # Then the two oldest come back, running, and the next ETA is the third
    assert [t.eta_us for t in claimed] == [NOW - 3, NOW - 2]
    assert await store.next_eta("default") == NOW - 1
    assert [t.state for t in await store.list_tasks("default", [TaskState.RUNNING])] == [TaskState.RUNNING] * 2


async def test_finish_done_deletes_and_tombstones_retry_reschedules(store: Store) -> None:
    # Given two claimed tasks
    await store.add_tasks([new("ok"), new("again")], NOW)
    ok, again = await store.claim_due("default", NOW, 10, NOW + 100)
    attempt = Attempt(again.id, 1, NOW, NOW, NOW + 1, 500, "App Error", "boom")
    # When one succeeds and the other is to be retried in a second
    await store.finish([(ok, attempt, "done", NOW + 10**9), (again, attempt, "retry", NOW + 10**6)])
    # Then the first is gone with its name reserved, the second waits with its attempt recorded
    assert await store.get_task("default", "ok") is None
    with pytest.raises(TaskTombstoned):
        await store.add_tasks([new("ok")], NOW)
    waiting = await store.get_task("default", "again")
    assert waiting is not None and waiting.state is TaskState.WAITING and waiting.eta_us == NOW + 10**6
    assert [a.status for a in await store.attempts(again.id)] == [500]


async def test_startup_and_claims_use_indexes_not_full_scans(store: Store) -> None:
    # Given the statements run at startup and on every dispatch pass
    plans = {
        "release": RELEASE_LEASES,
        "expired": EXPIRED_LEASES.replace("?", "0"),
        "next_eta": "SELECT MIN(eta_us) FROM task WHERE queue='default' AND state='waiting'",
        "claim": "SELECT id FROM task WHERE queue='default' AND state='waiting' AND eta_us<=0 ORDER BY eta_us, id",
    }
    for name, sql in plans.items():
        # When SQLite plans them
        rows = await store._all("EXPLAIN QUERY PLAN " + sql)
        detail = " ".join(str(r[-1]) for r in rows)
        # Then each searches an index
        assert "INDEX" in detail, (name, detail)
        assert not re.search(r"SCAN task(?! USING)", detail), (name, detail)


async def test_released_leases_are_due_again(store: Store) -> None:
    # Given a task claimed before a crash
    await store.add_tasks([new("leased")], NOW)
    await store.claim_due("default", NOW, 10, NOW + 100)
    # When the store releases leases at start
    released = await store.release_leases()
    # Then the task can be claimed again
    assert released == 1
    assert [t.name for t in await store.claim_due("default", NOW, 10, NOW + 100)] == ["leased"]


async def test_a_mixed_batch_reads_back_as_stored_with_rising_ids(store: Store) -> None:
    # Given a batch mixing plain tasks with tasks that set headers, routing, a retry config or a deadline
    # (plain runs and the others go in with two different statements)
    retry = RetryConfig(retry_limit=3, min_backoff_s=1.0)
    batch = [
        new("p1"),
        NewTask(queue="default", name="h", eta_us=NOW, headers={"X-A": "1"}, body=b"h"),
        new("p2"),
        new("p3"),
        NewTask(queue="default", name="r", eta_us=NOW, service="svc", version="v2", retry=retry, deadline_s=30.0),
        NewTask(queue="default", name="k", eta_us=NOW, kind=TargetKind.HTTP, url="http://127.0.0.1:1/x"),
        new("p4"),
    ]
    # When it is added to a store that already holds a task
    [first] = await store.add_tasks([new("before")], NOW)
    added = await store.add_tasks(batch, NOW)
    # Then the tasks keep the batch's order, with ids rising from the one after the existing task's
    assert [t.name for t in added] == ["p1", "h", "p2", "p3", "r", "k", "p4"]
    assert [t.id for t in added] == list(range(first.id + 1, first.id + 1 + len(batch)))
    # And each row read back equals the Task built in memory
    for task in added:
        assert await store.get_task("default", task.name) == task


async def test_a_generated_name_that_collides_adds_nothing_and_names_the_task(store: Store) -> None:
    # Given a stored task
    await store.add_tasks([new("12345678901234567890")], NOW)
    # When a batch brings a fresh task and a generated name equal to it (names are checked only for
    # user-chosen names, so the insert itself must catch this)
    collide = NewTask(queue="default", name="12345678901234567890", eta_us=NOW, generated_name=True)
    with pytest.raises(TaskExists) as caught:
        await store.add_tasks([new("fresh2"), collide], NOW)
    # Then the error names it and nothing of the batch is stored
    assert caught.value.name == "12345678901234567890"
    assert await store.get_task("default", "fresh2") is None
