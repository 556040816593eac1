"""Payloads too large for a task: kept by the emulator as entities, run by ``run_from_datastore``."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable
from typing import Any

from .client import EmulatorClient, sync_client
from .errors import PermanentTaskFailure
from .serialize import run

__all__ = ["run_from_datastore"]


async def _finish(client: EmulatorClient, key: str, pending: Awaitable[Any]) -> Any:
    """Await a deferred coroutine, then delete its payload as ``run_from_datastore`` does."""
    try:
        result = await pending
    except PermanentTaskFailure:
        await asyncio.to_thread(client.delete_entity, key)
        raise
    await asyncio.to_thread(client.delete_entity, key)
    return result


def run_from_datastore(key: str) -> Any:
    """Fetch a stored payload, run it, then delete it (it is kept for the retry if the call fails)."""
    client = sync_client()
    data = client.get_entity(key)
    if data is None:
        raise PermanentTaskFailure(f"The stored payload {key} is gone; the task is dropped.")
    try:
        result = run(data)
    except PermanentTaskFailure:
        client.delete_entity(key)
        raise
    if inspect.isawaitable(result):
        return _finish(client, key, result)
    client.delete_entity(key)
    return result
