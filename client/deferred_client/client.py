"""The Cloud Tasks REST calls ``defer()`` makes, to the emulator or to Cloud Tasks, blocking and from asyncio.

Both backends get the same v2 requests; the emulator's extensions (its size limit, entities, the atomic
batch add) are used only with the emulator, where production has no equal.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

from .aio import AsyncTransport
from .config import Config, current_config
from .errors import Error, InvalidTaskError, TaskAlreadyExistsError, TombstonedTaskError
from .serialize import serialize
from .targets import delivery_for
from .task import Task, TaskSpec
from .transport import OCTETS, Response, SyncTransport

__all__ = ["AsyncEmulatorClient", "EmulatorClient", "async_client", "sync_client"]

HEALTH = "/_emulator/v1/health"
ENTITIES = "/_emulator/v1/entities"
BATCH_ADD = "/_emulator/v1/tasks:batchAdd"
#: App Engine's push task limit, assumed when the emulator does not say.
DEFAULT_MAX_TASK_SIZE = 102400
#: The task size limit each emulator announced, by base URL.
_limits: dict[str, int] = {}
_lock = threading.Lock()


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _limit_from(resp: Response) -> int:
    if resp.status == 404:
        return DEFAULT_MAX_TASK_SIZE
    size = resp.check("GET " + HEALTH).json().get("maxTaskSize")
    return int(size) if isinstance(size, int) and size > 0 else DEFAULT_MAX_TASK_SIZE


def _entity_key(resp: Response) -> str:
    key = resp.check("POST " + ENTITIES).json().get("key")
    if not isinstance(key, str):
        raise Error(f"The emulator stored the payload but answered no key: {resp.body[:200]!r}")
    return key


def _batch_tasks(resp: Response, specs: Sequence[TaskSpec], keys: Sequence[str | None]) -> list[Task]:
    tasks = resp.check("POST " + BATCH_ADD, adding=True).json().get("tasks")
    if not isinstance(tasks, list) or len(tasks) != len(specs):
        raise Error(f"The emulator answered a batch add with the wrong number of tasks: {resp.body[:200]!r}")
    return [Task.from_json(data, spec.queue, key) for data, spec, key in zip(tasks, specs, keys)]


class _Paths:
    """URL paths precomputed for one configuration."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.production = config.production
        self.parent = f"projects/{config.project_id()}/locations/{config.location_id()}"
        self.delivery = delivery_for(config)
        self._queues: dict[str, tuple[str, str]] = {}

    def queue(self, queue: str) -> tuple[str, str]:
        """``(create-task path, queue resource name)`` of a queue."""
        paths = self._queues.get(queue)
        if paths is None:
            resource = f"{self.parent}/queues/{queue}"
            paths = self._queues[queue] = (f"/v2/{resource}/tasks", resource)
        return paths

    def create_body(self, spec: TaskSpec, body: bytes) -> tuple[str, bytes]:
        """The path and JSON body that create a task."""
        path, resource = self.queue(spec.queue)
        return path, _dumps({"task": spec.to_json(body, resource, None, self.delivery)})

    def batch_body(self, items: Sequence[tuple[TaskSpec, bytes, str | None]]) -> bytes:
        """The JSON body of a batch add."""
        tasks = [
            {"queue": s.queue, "task": s.to_json(body, self.queue(s.queue)[1], name, self.delivery)}
            for s, body, name in items
        ]
        return _dumps({"tasks": tasks})


class EmulatorClient(_Paths):
    """Blocking calls to one emulator, or to Cloud Tasks (``DEFERRED_BACKEND=cloudtasks``)."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.transport = SyncTransport(config)

    def __repr__(self) -> str:
        return f"<EmulatorClient {self.transport.base_url} {self.parent}>"

    def max_task_size(self, refresh: bool = False) -> int:
        """The task size limit in bytes: the emulator's (asked once, then remembered), App Engine's in production."""
        if self.production:
            return DEFAULT_MAX_TASK_SIZE
        base = self.transport.base_url
        limit = None if refresh else _limits.get(base)
        if limit is None:
            limit = _limits[base] = _limit_from(self.transport.request("GET", HEALTH))
        return limit

    def create_task(self, spec: TaskSpec, body: bytes, entity_key: str | None = None) -> Task:
        """Create one task carrying ``body``."""
        path, data = self.create_body(spec, body)
        resp = self.transport.request("POST", path, data)
        try:
            resp.check(f"Adding a task to queue {spec.queue!r}", adding=True)
        except (TaskAlreadyExistsError, TombstonedTaskError) as exc:
            # Cloud Tasks words both the same: only a GetTask tells them apart, whatever the answer said.
            if self.production and spec.name:
                raise self.which_exists(spec.queue, spec.name, exc) from None
            raise
        return Task.from_json(resp.json(), spec.queue, entity_key)

    def which_exists(self, queue: str, name: str, exc: InvalidTaskError) -> InvalidTaskError:
        """Tell a name in use from a tombstone as Cloud Tasks allows: GetTask finds the one, not the other."""
        resp = self.transport.request("GET", f"{self.queue(queue)[0]}/{name}")
        if resp.status == 404:
            return TombstonedTaskError(f"{exc} (the task {name!r} existed recently: its name cannot be reused yet)")
        if resp.status == 200:
            return TaskAlreadyExistsError(f"{exc} (the task {name!r} is in queue {queue!r})")
        return exc

    def batch_add(self, items: Sequence[tuple[TaskSpec, bytes, str | None]], keys: Sequence[str | None]) -> list[Task]:
        """Create several tasks: atomically with the emulator, with BatchCreateTasks per queue in production."""
        if self.production:
            from .batch import batch_create

            return batch_create(self, items, keys)
        resp = self.transport.request("POST", BATCH_ADD, self.batch_body(items))
        return _batch_tasks(resp, [item[0] for item in items], keys)

    def spill(self, payload: bytes) -> tuple[str, bytes]:
        """Store a payload too large for a task (bucket or emulator entity); its key and the call that runs it."""
        if self.config.payload_bucket or self.production:
            from .storage import payload_store

            store = payload_store(self.config)
            name = store.put(payload)
            return name, store.runner(name)
        from .datastore import run_from_datastore

        key = self.put_entity(payload)
        return key, serialize(run_from_datastore, key)

    def unspill(self, key: str) -> None:
        """Delete a stored payload whose task was not created."""
        if self.config.payload_bucket or self.production:
            from .storage import payload_store

            payload_store(self.config).delete(key)
        else:
            self.delete_entity(key)

    def put_entity(self, data: bytes) -> str:
        """Store a large payload; its key."""
        return _entity_key(self.transport.request("POST", ENTITIES, data, OCTETS))

    def get_entity(self, key: str) -> bytes | None:
        """A stored payload, or ``None`` when it is gone."""
        resp = self.transport.request("GET", f"{ENTITIES}/{key}")
        return None if resp.status == 404 else resp.check(f"GET {ENTITIES}/{key}").body

    def delete_entity(self, key: str) -> None:
        """Delete a stored payload (gone already is fine)."""
        resp = self.transport.request("DELETE", f"{ENTITIES}/{key}")
        if resp.status != 404:
            resp.check(f"DELETE {ENTITIES}/{key}")


class AsyncEmulatorClient(_Paths):
    """Calls to one emulator from asyncio code."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.transport = AsyncTransport(config)

    def __repr__(self) -> str:
        return f"<AsyncEmulatorClient {self.transport.base_url} {self.parent}>"

    async def max_task_size(self, refresh: bool = False) -> int:
        """The emulator's task size limit in bytes (asked once per emulator, then remembered)."""
        base = self.transport.base_url
        limit = None if refresh else _limits.get(base)
        if limit is None:
            limit = _limits[base] = _limit_from(await self.transport.request("GET", HEALTH))
        return limit

    async def create_task(self, spec: TaskSpec, body: bytes, entity_key: str | None = None) -> Task:
        """Create one task carrying ``body``."""
        path, data = self.create_body(spec, body)
        resp = await self.transport.request("POST", path, data)
        resp.check(f"Adding a task to queue {spec.queue!r}", adding=True)
        return Task.from_json(resp.json(), spec.queue, entity_key)

    async def batch_add(
        self, items: Sequence[tuple[TaskSpec, bytes, str | None]], keys: Sequence[str | None]
    ) -> list[Task]:
        """Create several tasks atomically: all or none."""
        resp = await self.transport.request("POST", BATCH_ADD, self.batch_body(items))
        return _batch_tasks(resp, [item[0] for item in items], keys)

    async def put_entity(self, data: bytes) -> str:
        """Store a large payload; its key."""
        return _entity_key(await self.transport.request("POST", ENTITIES, data, OCTETS))

    async def get_entity(self, key: str) -> bytes | None:
        """A stored payload, or ``None`` when it is gone."""
        resp = await self.transport.request("GET", f"{ENTITIES}/{key}")
        return None if resp.status == 404 else resp.check(f"GET {ENTITIES}/{key}").body

    async def delete_entity(self, key: str) -> None:
        """Delete a stored payload (gone already is fine)."""
        resp = await self.transport.request("DELETE", f"{ENTITIES}/{key}")
        if resp.status != 404:
            resp.check(f"DELETE {ENTITIES}/{key}")


#: Clients by configuration; a few are kept (dropping one closes its connections as it is collected).
MAX_CLIENTS = 8
_sync_clients: dict[Config, EmulatorClient] = {}
_async_clients: dict[Config, AsyncEmulatorClient] = {}


def sync_client(config: Config | None = None) -> EmulatorClient:
    """The blocking client for ``config`` (the current configuration by default), reused across calls."""
    config = config or current_config()
    client = _sync_clients.get(config)
    if client is None:
        with _lock:
            client = _sync_clients.get(config) or EmulatorClient(config)
            if len(_sync_clients) >= MAX_CLIENTS:
                _sync_clients.clear()
            _sync_clients[config] = client
    return client


def async_client(config: Config | None = None) -> AsyncEmulatorClient:
    """The asyncio client for ``config`` (the current configuration by default), reused across calls."""
    config = config or current_config()
    client = _async_clients.get(config)
    if client is None:
        with _lock:
            client = _async_clients.get(config) or AsyncEmulatorClient(config)
            if len(_async_clients) >= MAX_CLIENTS:
                _async_clients.clear()
            _async_clients[config] = client
    return client
