"""``with transaction():``: transactional tasks are held, then added all at once or not at all."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from contextvars import ContextVar, Token
from types import TracebackType

from .client import AsyncEmulatorClient, EmulatorClient, async_client, sync_client
from .config import current_config
from .datastore import run_from_datastore
from .errors import BadTransactionStateError, InvalidTaskNameError, TooManyTasksError
from .serialize import serialize
from .task import Task, TaskSpec

__all__ = ["Transaction", "current_transaction", "transaction"]

#: The emulator takes at most this many tasks in one batch.
MAX_TASKS = 100
Pending = tuple[TaskSpec, bytes, str]

_current: ContextVar[Transaction | None] = ContextVar("deferred_client_transaction", default=None)


def _task_name() -> str:
    """A name in the shape the emulator gives unnamed tasks (20 digits), chosen here so ``defer`` can return it."""
    return str(10**19 + secrets.randbelow(9 * 10**19))


def current_transaction() -> Transaction:
    """The transaction the caller is in; ``BadTransactionStateError`` outside one."""
    txn = _current.get()
    if txn is None:
        raise BadTransactionStateError(
            "_transactional=True was used outside a transaction:"
            " wrap the code in `with deferred_client.transaction():`."
        )
    return txn


class Transaction:
    """Tasks deferred with ``_transactional=True`` in the block; added together when it exits without an error."""

    def __init__(self) -> None:
        self.pending: list[Pending] = []
        #: the tasks as the emulator created them, once committed.
        self.tasks: list[Task] = []
        self._token: Token[Transaction | None] | None = None

    def __repr__(self) -> str:
        return f"<Transaction pending={len(self.pending)} added={len(self.tasks)}>"

    def add(self, spec: TaskSpec, payload: bytes) -> Task:
        """Hold a task until the transaction commits; the Task it will be."""
        if spec.name is not None:
            raise InvalidTaskNameError("A task bound to a transaction cannot be named.")
        if len(self.pending) >= MAX_TASKS:
            raise TooManyTasksError(f"A transaction can add at most {MAX_TASKS} tasks.")
        name = _task_name()
        self.pending.append((spec, payload, name))
        return Task(name, spec.queue, spec.eta())

    def _enter(self) -> Transaction:
        if _current.get() is not None:
            raise BadTransactionStateError("Nested transactions are not supported.")
        self._token = _current.set(self)
        return self

    def _leave(self) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None

    def __enter__(self) -> Transaction:
        return self._enter()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._leave()
        if exc_type is None:
            self.commit()
        else:
            self.pending.clear()

    async def __aenter__(self) -> Transaction:
        return self._enter()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._leave()
        if exc_type is None:
            await self.commit_async()
        else:
            self.pending.clear()

    def commit(self, client: EmulatorClient | None = None) -> list[Task]:
        """Add the held tasks in one atomic batch (large payloads are stored first)."""
        if not self.pending:
            return []
        client = client or sync_client()
        limit = client.max_task_size()
        items: list[Pending] = []
        keys: list[str | None] = []
        try:
            for spec, payload, name in self.pending:
                key, body = client.spill(payload) if spec.overhead + len(payload) > limit else (None, payload)
                keys.append(key)
                items.append((spec, body, name))
            self.tasks = client.batch_add(items, keys)
        except BaseException as exc:
            # A production batch is not atomic: the payloads of the tasks it did create stay for them.
            created = list(getattr(exc, "created", None) or [])
            created += [None] * (len(keys) - len(created))
            for key, task in zip(keys, created):
                if key is not None and task is None:
                    with contextlib.suppress(Exception):
                        client.unspill(key)
            raise
        self.pending.clear()
        return self.tasks

    async def commit_async(self, client: AsyncEmulatorClient | None = None) -> list[Task]:
        """Add the held tasks in one atomic batch, from asyncio code."""
        if not self.pending:
            return []
        if client is None:
            config = current_config()
            if config.production or config.payload_bucket:
                # Blocking Cloud Tasks and Storage calls: in a worker thread.
                return await asyncio.to_thread(self.commit, sync_client(config))
            client = async_client(config)
        limit = await client.max_task_size()
        items: list[Pending] = []
        keys: list[str | None] = []
        try:
            for spec, payload, name in self.pending:
                key = await client.put_entity(payload) if spec.overhead + len(payload) > limit else None
                keys.append(key)
                items.append((spec, payload if key is None else serialize(run_from_datastore, key), name))
            self.tasks = await client.batch_add(items, keys)
        except BaseException:
            for key in filter(None, keys):
                with contextlib.suppress(Exception):
                    await client.delete_entity(key)
            raise
        self.pending.clear()
        return self.tasks


def transaction() -> Transaction:
    """A block whose ``defer(..., _transactional=True)`` tasks are added when it exits cleanly, dropped if it raises."""
    return Transaction()
