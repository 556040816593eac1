"""run_from_datastore: fetch the stored payload, run it, delete it unless the task is to be retried."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from deferred_client import PermanentTaskFailure, SingularTaskFailure, run_from_datastore, serialize
from deferred_client.client import sync_client
from test_client_fixtures import LiveEmulator

pytest_plugins = ["test_client_fixtures"]

RAN: list[Any] = []


def ok(value: Any) -> str:
    RAN.append(value)
    return "done"


def permanent() -> None:
    raise PermanentTaskFailure("never")


def retry() -> None:
    raise SingularTaskFailure()


async def async_ok(value: Any) -> str:
    await asyncio.sleep(0)
    RAN.append(value)
    return "async done"


async def async_permanent() -> None:
    raise PermanentTaskFailure("never")


async def async_retry() -> None:
    raise ValueError("again")


@pytest.fixture
def store(live_emulator: Callable[..., LiveEmulator]) -> Callable[..., str]:
    """Store a deferred call as an entity; its key."""
    live_emulator(dispatch=False)
    RAN.clear()

    def put(func: Callable[..., Any], *args: Any) -> str:
        return sync_client().put_entity(serialize(func, *args))

    return put


def exists(key: str) -> bool:
    return sync_client().get_entity(key) is not None


def test_success_runs_and_deletes(store: Callable[..., str]) -> None:
    key = store(ok, 1)
    assert run_from_datastore(key) == "done"
    assert RAN == [1] and not exists(key)


def test_permanent_failure_deletes(store: Callable[..., str]) -> None:
    key = store(permanent)
    with pytest.raises(PermanentTaskFailure):
        run_from_datastore(key)
    assert not exists(key)


def test_other_failures_keep_the_payload_for_the_retry(store: Callable[..., str]) -> None:
    key = store(retry)
    with pytest.raises(SingularTaskFailure):
        run_from_datastore(key)
    assert exists(key)


def test_missing_payload_is_a_permanent_failure(store: Callable[..., str]) -> None:
    key = store(ok, 1)
    sync_client().delete_entity(key)
    sync_client().delete_entity(key)  # deleting twice is fine
    with pytest.raises(PermanentTaskFailure, match="is gone"):
        run_from_datastore(key)
    assert RAN == []


async def test_coroutines_delete_after_they_finish(store: Callable[..., str]) -> None:
    key = await asyncio.to_thread(store, async_ok, 2)
    pending = await asyncio.to_thread(run_from_datastore, key)
    assert await asyncio.to_thread(exists, key)  # not yet run
    assert await pending == "async done"
    assert RAN == [2] and not await asyncio.to_thread(exists, key)

    key = await asyncio.to_thread(store, async_permanent)
    with pytest.raises(PermanentTaskFailure):
        await await_(await asyncio.to_thread(run_from_datastore, key))
    assert not await asyncio.to_thread(exists, key)

    key = await asyncio.to_thread(store, async_retry)
    with pytest.raises(ValueError):
        await await_(await asyncio.to_thread(run_from_datastore, key))
    assert await asyncio.to_thread(exists, key)


async def await_(awaitable: Any) -> Any:
    return await awaitable
