"""The engine behind every API: queues, validation, and the operations on tasks."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .clock import US, Clock
from .errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    QueueNotFound,
    TaskNotFound,
    help_link,
)
from .header_rules import check_headers
from .ingestgate import IngestGate
from .models import NewTask, QueueConfig, QueueState, TargetKind, Task, TaskState
from .oidc import Issuer, default_issuer
from .operations import Operations
from .settings import Settings
from .store import Store
from .taskids import generate_task_name

logger = logging.getLogger(__name__)

TASK_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,500}$")
QUEUE_NAME_RE = re.compile(r"^[a-zA-Z0-9-]{1,100}$")
MAX_ETA_S = 30 * 24 * 3600
#: The longest dispatch deadline there is (App Engine tasks: 24h15s).
MAX_DEADLINE_S = 24 * 3600 + 15
#: Where production's errors point for the rules of names.
TASK_NAME_DOC = "https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues.tasks#Task.FIELDS.name"
QUEUE_NAME_DOC = "https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues#Queue.FIELDS.name"
MAX_TASKS_PER_BATCH = 100
#: The Cloud Tasks API's limit (about 1 MiB of stored task; App Engine's 100 KiB is ``--max-task-size``).
CLOUD_TASKS_MAX_TASK_SIZE = 1024 * 1024
#: Production's refusal of a task over the limit (shared/conformance errors.json).
TASK_TOO_LARGE = "Task size too large"
#: How long a deleted queue's name stays reserved (production: about 7 days; shortened locally).
QUEUE_TOMBSTONE_S = 60.0
DEFAULT_QUEUE = "default"
TASK_GONE = (
    "The task no longer exists, though a task with this name existed recently."
    " The task either successfully completed or was deleted."
)


def task_too_large(size: int, max_size: int | None) -> InvalidArgument:
    """Production's refusal, word for word; the measure and the limit go in an ``ErrorInfo`` detail."""
    limit = max_size or CLOUD_TASKS_MAX_TASK_SIZE
    source = "the Cloud Tasks API" if max_size is None else "App Engine (--max-task-size)"
    info = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "TASK_TOO_LARGE",
        "domain": "deferred-emulator",
        "metadata": {"taskSize": str(size), "maxTaskSize": str(limit), "limitOf": source},
    }
    return InvalidArgument(TASK_TOO_LARGE, [info])


def task_size(new: NewTask) -> int:
    """App Engine's measure of a task: method, body, URL and headers (4 bytes of framing each)."""
    size = len(new.method) + len(new.body) + len(new.url)
    return size + sum(len(k) + len(v) + 4 for k, v in new.headers.items()) if new.headers else size


def check_task_name(name: str) -> None:
    """Raise InvalidArgument unless ``name`` is a valid task id."""
    if not TASK_NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f'Task ID "{name}" can contain only letters ([A-Za-z]), numbers ([0-9]), hyphens (-), or underscores (_).'
            " Task ID must between 1 and 500 characters.",
            [help_link("Definition of task ID", TASK_NAME_DOC)],
        )


def check_queue_name(name: str) -> None:
    """Raise InvalidArgument unless ``name`` is a valid queue id."""
    if not QUEUE_NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f'Queue ID "{name}" can contain only letters ([A-Za-z]), numbers ([0-9]), or hyphens (-).'
            " Queue ID must be between 1 and 100 characters."
        )


@dataclass
class Hooks:
    """Callbacks the dispatcher installs so the engine can wake it."""

    wake: Callable[[], None] = lambda: None
    run_now: Callable[[Task], None] = lambda task: None
    queue_changed: Callable[[QueueConfig], None] = lambda queue: None
    #: tasks were added, the earliest due at this ETA (µs).
    added: Callable[[int], None] = lambda eta_us: None
    #: whether a task due now, about to be added to this queue, is to be stored leased and run at once.
    take_now: Callable[[str, int], bool] = lambda queue, now_us: False


class Emulator:
    """Queues and tasks, validated and stored; the APIs call this, the dispatcher delivers."""

    def __init__(self, settings: Settings, store: Store, clock: Clock) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.queues: dict[str, QueueConfig] = {}
        self.hooks = Hooks()
        #: Meters adds while deliveries are behind (ingestgate.py); the dispatcher says when.
        self.gate = IngestGate()
        #: queue.yaml's ``total_storage_limit`` in bytes (None: no limit).
        self.total_storage_limit: int | None = None
        #: BatchCreateTasks / BatchDeleteTasks and the operations they answered with.
        self.operations = Operations(self)
        #: Signs the OIDC tokens of HTTP tasks.
        self.issuer = Issuer(
            store, settings.oidc_issuer or default_issuer(settings.host, settings.port), bool(settings.oidc_issuer)
        )

    def now_us(self) -> int:
        """The emulator's now (virtual or real)."""
        return self.clock.now_us()

    async def start(self) -> None:
        """Load queues, make sure ``default`` exists, and release leases left by a crash."""
        for queue in await self.store.load_queues():
            self.queues[queue.name] = queue
        if DEFAULT_QUEUE not in self.queues:
            await self.put_queue(QueueConfig(DEFAULT_QUEUE, source="default", created_us=self.now_us()))
        if not self.settings.secret:
            # Deliveries are always signed; the handlers fetch this secret from the emulator when the app has none.
            self.settings = replace(self.settings, secret=await self.store.delivery_secret())
        released = await self.store.release_leases()
        if released:
            logger.info("%d task(s) leased before the last stop will be delivered again", released)

    def reroute(self, app_url: str | None = None, targets: dict[str, str] | None = None) -> Settings:
        """Deliver to another app URL (and service targets) from now on; deliveries under way are not moved."""
        self.settings = replace(
            self.settings,
            app_url=self.settings.app_url if app_url is None else app_url,
            targets=self.settings.targets if targets is None else dict(targets),
        )
        logger.info("delivering App Engine tasks to %s", self.settings.app_url)
        return self.settings

    # -- queues ---------------------------------------------------------------------------------

    async def put_queue(self, queue: QueueConfig) -> QueueConfig:
        """Store a queue's settings and tell the dispatcher."""
        self.queues[queue.name] = queue
        await self.store.save_queue(queue)
        self.hooks.queue_changed(queue)
        self.hooks.wake()
        return queue

    async def get_queue(self, name: str, *, create: bool | None = None) -> QueueConfig:
        """A queue by id; unknown queues are created only with ``--auto-create-queues``."""
        queue = self.queues.get(name)
        if queue is not None:
            return queue
        if create if create is not None else self.settings.auto_create_queues:
            check_queue_name(name)
            return await self.put_queue(QueueConfig(name, source="auto", created_us=self.now_us()))
        raise QueueNotFound(name)

    async def create_queue(self, queue: QueueConfig) -> QueueConfig:
        """Create a queue (409 if it exists, 400 if it was deleted too recently)."""
        check_queue_name(queue.name)
        if queue.name in self.queues:
            raise AlreadyExists("Queue already exists")
        if await self.store.queue_deleted_until(queue.name, self.now_us()):
            raise FailedPrecondition("The queue cannot be created because a queue with this name existed too recently.")
        return await self.put_queue(queue.with_changes(created_us=self.now_us()))

    async def delete_queue(self, name: str) -> None:
        """Delete a queue and its tasks."""
        if name not in self.queues:
            raise NotFound("Requested entity was not found.")
        del self.queues[name]
        await self.store.delete_queue(name, self.now_us() + int(QUEUE_TOMBSTONE_S * US))
        if name == DEFAULT_QUEUE:
            # App Engine always has a default queue.
            await self.store.forget_queue_tombstone(name)
            await self.put_queue(QueueConfig(DEFAULT_QUEUE, source="default", created_us=self.now_us()))

    async def set_state(self, name: str, state: QueueState) -> QueueConfig:
        """Pause or resume a queue."""
        queue = await self.get_queue(name, create=False)
        return await self.put_queue(queue.with_changes(state=state))

    async def purge(self, name: str, states: Sequence[TaskState] | None = None) -> QueueConfig:
        """Delete a queue's tasks (all of them, or only those in ``states``)."""
        queue = await self.get_queue(name, create=False)
        count = await self.store.purge(name, self.tombstone_until(), states)
        logger.info("purged %d task(s) from queue %s", count, name)
        if states is None:
            queue = await self.put_queue(queue.with_changes(purge_us=self.now_us()))
        return queue

    # -- tasks ----------------------------------------------------------------------------------

    def tombstone_until(self) -> int:
        """When a name used now becomes free again."""
        return self.now_us() + int(self.settings.tombstone_ttl_s * US)

    async def validate(self, new: NewTask, now: int, max_size: int | None = None) -> NewTask:
        """Check a task against the queue and the limits; name it (in place) if it has no name.

        ``max_size`` is the largest task taken: the Cloud Tasks API's 1 MiB when None, App Engine's
        (``app_engine_max_size``) on the App Engine paths.
        """
        queue = self.queues.get(new.queue) or await self.get_queue(new.queue)
        if queue.mode == "pull":
            raise FailedPrecondition(
                f"INVALID_QUEUE_MODE: queue {new.queue!r} is a pull queue (mode: pull in queue.yaml);"
                " it does not take push tasks."
            )
        if new.eta_us > now + MAX_ETA_S * US:
            raise InvalidArgument(
                "The Task.scheduleTime is too far in the future. Schedule time must be no more than 720h in the future."
            )
        if new.headers:
            check_headers(new.headers, "task headers")
        size = task_size(new)
        if size > (max_size or CLOUD_TASKS_MAX_TASK_SIZE):
            raise task_too_large(size, max_size)
        if new.name:
            check_task_name(new.name)
            return new
        # Named in place: each NewTask is built for one request, and a copy cost more than the rest of this check.
        new.name, new.generated_name = generate_task_name(), True
        return new

    @property
    def app_engine_max_size(self) -> int:
        """The largest task the App Engine paths take (``--max-task-size``, App Engine's 100 KiB by default)."""
        return self.settings.max_task_size

    async def add_tasks(self, tasks: Sequence[NewTask], max_size: int | None = None) -> list[Task]:
        """Validate and store tasks atomically (all or none), then wake the dispatcher (``max_size``: see validate)."""
        if len(tasks) > MAX_TASKS_PER_BATCH:
            raise InvalidArgument(f"Too many tasks in one request: {len(tasks)} (at most {MAX_TASKS_PER_BATCH}).")
        now = self.now_us()
        checked = [await self.validate(task, now, max_size) for task in tasks]
        names = [(t.queue, t.name) for t in checked]
        if len(set(names)) != len(names):
            raise InvalidArgument("The same task name appears twice in one request.")
        return await self.store_tasks(checked, now)

    async def store_tasks(self, checked: Sequence[NewTask], now: int | None = None) -> list[Task]:
        """Store validated tasks atomically (all or none), then wake the dispatcher."""
        since = await self.gate.admit()
        try:
            if self.total_storage_limit is not None:
                await self._check_storage(checked)
            now = self.now_us() if now is None else now
            # One task due now while the dispatcher has nothing else due: stored leased, delivered at once.
            first = checked[0] if len(checked) == 1 else None
            take = first is not None and first.eta_us <= now and self.hooks.take_now(first.queue, now)
            deadline = (first.deadline_s if first else None) or self.settings.dispatch_deadline_s
            added = await self.store.add_tasks(checked, now, now + int((deadline + 30) * US) if take else None)
        finally:
            self.gate.spent(since)
        if take:
            self.hooks.run_now(added[0].evolve(state=TaskState.RUNNING, last_schedule_us=added[0].eta_us))
        elif added:
            self.hooks.added(min(task.eta_us for task in added))
        return added

    async def _check_storage(self, tasks: Sequence[NewTask]) -> None:
        limit = self.total_storage_limit or 0
        stored = await self.store.stored_bytes()
        adding = sum(len(task.method) + len(task.url.encode()) + len(task.body) for task in tasks)
        if stored + adding > limit:
            raise FailedPrecondition(
                f"total_storage_limit exceeded: queue.yaml allows {limit} bytes of tasks; {stored} are stored"
                f" and this request adds {adding}."
            )

    async def add_task(self, task: NewTask, max_size: int | None = None) -> Task:
        """Validate and store one task (``max_size``: see validate)."""
        return (await self.add_tasks([task], max_size))[0]

    async def get_task(self, queue: str, name: str) -> Task:
        """A task by queue and short name."""
        await self.get_queue(queue, create=False)
        task = await self.store.get_task(queue, name)
        if task is None:
            if await self.store.is_tombstoned(queue, name, self.now_us()):
                raise TaskNotFound(TASK_GONE)
            raise TaskNotFound()
        return task

    async def list_tasks(
        self,
        queue: str,
        states: Sequence[TaskState] | None = None,
        limit: int = 100,
        after: tuple[int, int] | None = None,
        newest_first: bool = False,
    ) -> list[Task]:
        """A page of a queue's tasks."""
        await self.get_queue(queue, create=False)
        return await self.store.list_tasks(queue, states, limit, after, newest_first)

    async def delete_task(self, queue: str, name: str) -> None:
        """Delete a task and tombstone its name."""
        await self.get_queue(queue, create=False)
        if not await self.store.delete_task(queue, name, self.tombstone_until()):
            raise TaskNotFound()

    async def run_task(self, queue: str, name: str) -> Task:
        """Deliver a task now, whatever its ETA, its queue's state or its rate limit."""
        task = await self.get_task(queue, name)
        if task.state is TaskState.RUNNING:
            raise FailedPrecondition("The task is already being dispatched.")
        claimed = await self.store.claim_task(queue, name, self.now_us() + self.lease_us(task))
        if claimed is None:
            raise FailedPrecondition("The task is already being dispatched.")
        self.hooks.run_now(claimed)
        return claimed

    def lease_us(self, task: Task) -> int:
        """How long a claim lasts: the task's deadline plus a margin."""
        deadline = task.deadline_s or self.settings.dispatch_deadline_s
        # Bounded: a deadline read from an older database must not overflow SQLite's integers.
        return int((min(deadline, MAX_DEADLINE_S) + 30) * US)

    async def retry_failed(self, queue: str, name: str | None = None) -> int:
        """Put FAILED tasks back in line, due now."""
        await self.get_queue(queue, create=False)
        count = await self.store.retry_failed(queue, self.now_us(), name)
        if name and not count:
            raise TaskNotFound("No failed task with that name.")
        self.hooks.wake()
        return count

    # -- entities -------------------------------------------------------------------------------

    async def put_entity(self, body: bytes) -> str:
        """Store a large payload."""
        return await self.store.put_entity(body, self.now_us())

    async def get_entity(self, key: str) -> bytes:
        """A stored payload (404 if gone)."""
        body = await self.store.get_entity(key)
        if body is None:
            raise NotFound(f"No entity {key!r}.")
        return body

    async def delete_entity(self, key: str) -> None:
        """Delete a stored payload (404 if gone)."""
        if not await self.store.delete_entity(key):
            raise NotFound(f"No entity {key!r}.")

    async def reset(self) -> None:
        """Forget every task, tombstone, entity and operation, and the OIDC signing key; keep the queues."""
        await self.store.reset()
        self.operations.clear()
        await self.issuer.forget()
        self.hooks.wake()


def is_app_engine(task: Task | NewTask) -> bool:
    """Whether the task goes to the app (rather than to a URL of its own)."""
    return task.kind is TargetKind.APP_ENGINE
