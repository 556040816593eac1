"""Payloads too large for a task: kept by the emulator as entities, run by ``run_from_datastore``."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from .client import sync_client
from .errors import PermanentTaskFailure
from .serialize import run

__all__ = ["run_from_datastore"]


def run_stored(data: bytes | None, delete: Callable[[], None], where: str) -> Any:
    """Run a payload kept outside its task, then ``delete`` it; it is kept for the retry if the call fails.

    Shared by the emulator's entities and production's bucket: ``where`` names the payload when it is gone.
    """
    if data is None:
        raise PermanentTaskFailure(f"The stored payload {where} is gone; the task is dropped.")
    try:
        result = run(data)
    except PermanentTaskFailure:
        delete()
        raise
    if inspect.isawaitable(result):
        return _finish(delete, result)
    delete()
    return result


async def _finish(delete: Callable[[], None], pending: Awaitable[Any]) -> Any:
    """Await a deferred coroutine, then delete its payload as ``run_stored`` does (off the loop: it blocks)."""
    try:
        result = await pending
    except PermanentTaskFailure:
        await asyncio.to_thread(delete)
        raise
    await asyncio.to_thread(delete)
    return result


def run_from_datastore(key: str) -> Any:
    """Fetch a stored payload, run it, then delete it (it is kept for the retry if the call fails)."""
    client = sync_client()
    return run_stored(client.get_entity(key), lambda: client.delete_entity(key), key)
