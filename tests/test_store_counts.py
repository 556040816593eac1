"""Queue counts: a tally is used again while no task changes, and every change makes it count anew."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from deferred_emulator.models import Attempt, NewTask
from deferred_emulator.store import Store

NOW = 1_700_000_000_000_000
LATER = NOW + 3_600_000_000


def new(name: str, eta_us: int = NOW) -> NewTask:
    """A task for the default queue."""
    return NewTask(queue="default", name=name, eta_us=eta_us, body=b"x")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A store on a fresh file, with the reader connection the counts use."""
    s = await Store.open(str(tmp_path / "tasks.sqlite3"))
    yield s
    await s.close()


def tallies(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The whole-table counts the store makes from now on (one entry each)."""
    made: list[str] = []
    read = store._read

    async def spy(sql: str, params: Any = ()) -> list[Any]:
        if "GROUP BY" in sql:
            made.append(sql)
        return await read(sql, params)

    monkeypatch.setattr(store, "_read", spy)
    return made


async def shown(store: Store, now: int = NOW) -> dict[str, int]:
    """The default queue's counts."""
    entry = (await store.counts(now)).get("default", {})
    return {k: entry.get(k, 0) for k in ("waiting", "due", "running", "failed")}


async def test_a_tally_is_used_again_while_nothing_changes_but_due_follows_the_clock(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a task due in ten seconds, counted once
    await store.add_tasks([new("soon", NOW + 10_000_000)], NOW)
    made = tallies(store, monkeypatch)
    assert await shown(store) == {"waiting": 1, "due": 0, "running": 0, "failed": 0}
    # When the counts are asked for again, before and after its ETA, with no change in between
    again = await shown(store)
    later = await shown(store, NOW + 20_000_000)
    # Then the table was counted once, and the due count still moved with the clock
    assert len(made) == 1
    assert again == {"waiting": 1, "due": 0, "running": 0, "failed": 0}
    assert later == {"waiting": 1, "due": 1, "running": 0, "failed": 0}


async def test_every_kind_of_change_is_counted_afresh(store: Store) -> None:
    # Each step changes the tasks through another path of the store, and the counts taken right after
    # (a tally of the step before would be wrong) show the change.
    await shown(store)
    await store.add_tasks([new("a"), new("b"), new("c", LATER)], NOW)
    assert await shown(store) == {"waiting": 3, "due": 2, "running": 0, "failed": 0}
    [a, b] = await store.claim_due("default", NOW, 2, NOW + 1)
    assert await shown(store) == {"waiting": 1, "due": 0, "running": 2, "failed": 0}
    attempt = Attempt(a.id, 1, NOW, NOW, NOW + 1, 500, "App Error", "boom")
    await store.finish([(a, attempt, "failed", LATER)])
    assert await shown(store) == {"waiting": 1, "due": 0, "running": 1, "failed": 1}
    await store.finish([(b, Attempt(b.id, 1, NOW, NOW, NOW + 1, 503, "", ""), "retry", NOW)])
    assert await shown(store) == {"waiting": 2, "due": 1, "running": 0, "failed": 1}
    assert await store.retry_failed("default", NOW) == 1
    assert await shown(store) == {"waiting": 3, "due": 2, "running": 0, "failed": 0}
    assert await store.claim_task("default", "c", NOW + 1) is not None
    assert await shown(store) == {"waiting": 2, "due": 2, "running": 1, "failed": 0}
    assert await store.release_leases() == 1
    assert await shown(store) == {"waiting": 3, "due": 2, "running": 0, "failed": 0}
    assert await store.delete_task("default", "a", LATER)
    assert await shown(store) == {"waiting": 2, "due": 1, "running": 0, "failed": 0}
    assert await store.purge("default", LATER) == 2
    assert await shown(store) == {"waiting": 0, "due": 0, "running": 0, "failed": 0}
    await store.add_tasks([new("d")], NOW)
    assert await shown(store) == {"waiting": 1, "due": 1, "running": 0, "failed": 0}
    await store.reset()
    assert await shown(store) == {"waiting": 0, "due": 0, "running": 0, "failed": 0}
    await store.add_tasks([new("e")], NOW)
    assert await shown(store) == {"waiting": 1, "due": 1, "running": 0, "failed": 0}
    await store.delete_queue("default", LATER)
    assert await store.counts(NOW) == {}


async def test_a_change_made_while_counting_is_counted_next_time(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a count during which another coroutine adds a task (after the count has read the table)
    read = store._read
    added = False

    async def count_then_add(sql: str, params: Any = ()) -> list[Any]:
        nonlocal added
        rows = await read(sql, params)
        if "GROUP BY" in sql and not added:
            added = True
            await store.add_tasks([new("meanwhile")], NOW)
        return rows

    monkeypatch.setattr(store, "_read", count_then_add)
    assert (await shown(store))["waiting"] == 0
    # Then the next counts do not reuse that tally: they show the task
    assert (await shown(store))["waiting"] == 1
