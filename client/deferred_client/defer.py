"""``defer()`` and ``defer_async()``: put a call on a queue to run later in the app."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from .client import AsyncEmulatorClient, EmulatorClient, async_client, sync_client
from .config import current_config
from .datastore import run_from_datastore
from .errors import TaskTooLargeError
from .serialize import serialize
from .task import DEFAULT_QUEUE, DEFAULT_URL, Task, TaskRetryOptions, TaskSpec
from .transaction import current_transaction

__all__ = ["defer", "defer_async"]


def _add(client: EmulatorClient, spec: TaskSpec, payload: bytes) -> Task:
    if spec.overhead + len(payload) <= client.max_task_size():
        try:
            return client.create_task(spec, payload)
        except TaskTooLargeError:
            client.max_task_size(refresh=True)  # the emulator's limit changed: spill, as App Engine's SDK does
    key, runner = client.spill(payload)
    try:
        return client.create_task(spec, runner, key)
    except BaseException:
        with contextlib.suppress(Exception):
            client.unspill(key)
        raise


async def _add_async(client: AsyncEmulatorClient, spec: TaskSpec, payload: bytes) -> Task:
    if spec.overhead + len(payload) <= await client.max_task_size():
        try:
            return await client.create_task(spec, payload)
        except TaskTooLargeError:
            await client.max_task_size(refresh=True)
    key = await client.put_entity(payload)
    try:
        return await client.create_task(spec, serialize(run_from_datastore, key), key)
    except BaseException:
        with contextlib.suppress(Exception):
            await client.delete_entity(key)
        raise


def defer(
    obj: Callable[..., Any],
    *args: Any,
    _countdown: float | None = None,
    _eta: datetime | None = None,
    _name: str | None = None,
    _target: str | None = None,
    _retry_options: TaskRetryOptions | None = None,
    _url: str | None = DEFAULT_URL,
    _headers: Mapping[str, str] | None = None,
    _transactional: bool = False,
    _queue: str = DEFAULT_QUEUE,
    **kwargs: Any,
) -> Task:
    """Queue a call of ``obj(*args, **kwargs)`` to run later in the app; the created ``Task``.

    :param obj: a top-level function or class, a callable instance, a bound method, a class method or a
        builtin. Lambdas, closures and nested functions raise ``ValueError``.
    :param _countdown: seconds from now until the task is due (not with ``_eta``).
    :param _eta: when the task is due; a naive datetime is UTC.
    :param _name: the task's name; a name in use raises ``TaskAlreadyExistsError``, a recently used one
        ``TombstonedTaskError``.
    :param _target: the service the task is routed to (the emulator's ``--target SERVICE=URL``).
    :param _retry_options: ``TaskRetryOptions`` replacing the queue's retry settings for this task.
    :param _url: the handler's path (``None``: the queue's ``/_ah/queue/<queue>``).
    :param _headers: extra HTTP headers sent with the task.
    :param _transactional: hold the task until the enclosing ``transaction()`` block exits cleanly.
    :param _queue: the queue (``UnknownQueueError`` when the emulator has none by that name).
    """
    spec = TaskSpec.build(
        queue=_queue,
        url=_url,
        headers=dict(_headers) if _headers else None,
        name=_name,
        countdown=_countdown,
        eta=_eta,
        target=_target,
        retry=_retry_options,
        now=time.time(),
    )
    payload = serialize(obj, *args, **kwargs)
    if _transactional:
        return current_transaction().add(spec, payload)
    return _add(sync_client(), spec, payload)


async def defer_async(
    obj: Callable[..., Any],
    *args: Any,
    _countdown: float | None = None,
    _eta: datetime | None = None,
    _name: str | None = None,
    _target: str | None = None,
    _retry_options: TaskRetryOptions | None = None,
    _url: str | None = DEFAULT_URL,
    _headers: Mapping[str, str] | None = None,
    _transactional: bool = False,
    _queue: str = DEFAULT_QUEUE,
    **kwargs: Any,
) -> Task:
    """``defer`` for asyncio code: the same options, without blocking the event loop."""
    spec = TaskSpec.build(
        queue=_queue,
        url=_url,
        headers=dict(_headers) if _headers else None,
        name=_name,
        countdown=_countdown,
        eta=_eta,
        target=_target,
        retry=_retry_options,
        now=time.time(),
    )
    payload = serialize(obj, *args, **kwargs)
    if _transactional:
        return current_transaction().add(spec, payload)
    config = current_config()
    if config.production or config.payload_bucket:
        # Cloud Tasks and Storage calls (and google-auth's token refreshes) block: they run in a worker thread.
        return await asyncio.to_thread(_add, sync_client(config), spec, payload)
    return await _add_async(async_client(config), spec, payload)
