"""The ``taskqueue`` service over /rpc_http: what ``taskqueue.add`` and ``deferred.defer`` call.

Tasks added here are ordinary emulator tasks (same queues, console, retries and headers). Result
codes follow the SDK's dev stub: checks that concern the whole request (unknown queue, queue
mode) fail the call with an application error; checks of single tasks answer one result per
task, in order, and add nothing if any task is invalid; an already-used name fails only its own
task (TASK_ALREADY_EXISTS while the task waits, TOMBSTONED_TASK once it ran or was deleted).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from ..clock import US
from ..dberrors import StoreUnavailable
from ..errors import EmulatorError, InvalidArgument, QueueNotFound, TaskExists, TaskNotFound, TaskTombstoned
from ..header_rules import check_headers
from ..models import NewTask, QueueConfig, QueueState, RetryConfig, TaskState
from ..service import MAX_ETA_S, MAX_TASKS_PER_BATCH, QUEUE_NAME_RE, TASK_NAME_RE, Emulator, task_size
from .common import Runtime
from .gae_datastore import DatastoreApi, link_payload
from .gae_protocol import ApplicationError, Handler, parse_message, protos
from .queues_json import MAX_BACKOFF_S, MAX_INT32
from .timefmt import MAX_DURATION_S

logger = logging.getLogger(__name__)

#: TaskQueueServiceError.ErrorCode values.
OK = 0
UNKNOWN_QUEUE = 1
INTERNAL_ERROR = 3
TASK_TOO_LARGE = 4
INVALID_TASK_NAME = 5
INVALID_QUEUE_NAME = 6
INVALID_URL = 7
TASK_ALREADY_EXISTS = 10
TOMBSTONED_TASK = 11
INVALID_ETA = 12
INVALID_REQUEST = 13
UNKNOWN_TASK = 14
SKIPPED = 17
TOO_MANY_TASKS = 18
INVALID_QUEUE_MODE = 21
DATASTORE_ERROR = 10000
PULL = 1
#: QueryTasks answers at most this many tasks.
MAX_QUERY_ROWS = 1000
#: An App Engine task's dispatch deadline: at most 24h15s, as the Cloud Tasks API has it.
MAX_DEADLINE_S = 24 * 3600 + 15


def decode(value: bytes) -> str:
    """Text of a ``bytes`` field (the SDK sends UTF-8)."""
    return value.decode("utf-8", "replace")


def retry_of(params: Any) -> RetryConfig:
    """A task's TaskQueueRetryParameters as a RetryConfig (unset fields take the proto defaults)."""
    return RetryConfig(
        retry_limit=params.retry_limit if params.HasField("retry_limit") else None,
        age_limit_s=float(params.age_limit_sec) if params.HasField("age_limit_sec") else None,
        min_backoff_s=params.min_backoff_sec,
        max_backoff_s=params.max_backoff_sec,
        max_doublings=params.max_doublings,
    )


def task_of(add: Any, queue: str) -> NewTask:
    """A TaskQueueAddRequest as a NewTask (an empty name means the emulator picks one)."""
    headers: dict[str, str] = {}
    for header in add.header:
        key, value = decode(header.key), decode(header.value)
        same = next((k for k in headers if k.lower() == key.lower()), None)
        if same is None:
            headers[key] = value
        else:  # repeated headers travel as one, comma-separated
            headers[same] = f"{headers[same]}, {value}"
    method = protos().taskqueue.TaskQueueAddRequest.RequestMethod.Name(add.method)
    return NewTask(
        queue=queue,
        name=decode(add.task_name),
        eta_us=add.eta_usec,
        method=method,
        url=decode(add.url) if add.HasField("url") else f"/_ah/queue/{queue}",
        headers=headers,
        body=add.body,
        retry=retry_of(add.retry_parameters) if add.HasField("retry_parameters") else None,
        deadline_s=add.dispatch_deadline_usec / US if add.HasField("dispatch_deadline_usec") else None,
    )


def check_task(emulator: Emulator, add: Any, new: NewTask, now: int) -> int:
    """OK, or the error code of one task (the checks App Engine's service makes)."""
    if add.HasField("crontimetable"):
        return INVALID_REQUEST
    if new.name and not TASK_NAME_RE.match(new.name):
        return INVALID_TASK_NAME
    if not new.url.startswith("/"):
        return INVALID_URL
    if new.eta_us < 0 or new.eta_us > now + MAX_ETA_S * US:
        return INVALID_ETA
    if task_size(new) > emulator.settings.max_task_size:
        return TASK_TOO_LARGE
    if new.retry is not None and not retry_in_range(new.retry):
        return INVALID_REQUEST
    if new.deadline_s is not None and not 0 <= new.deadline_s <= MAX_DEADLINE_S:
        return INVALID_REQUEST
    return OK


def refuse_bad_headers(news: list[NewTask]) -> None:
    """INVALID_REQUEST naming the header when a task sets a hop-by-hop or invalid one (see header_rules)."""
    for new in news:
        try:
            check_headers(new.headers, "task headers")
        except InvalidArgument as exc:
            raise ApplicationError(INVALID_REQUEST, exc.message) from exc


def retry_in_range(retry: RetryConfig) -> bool:
    """Whether retry parameters are within the limits the Cloud Tasks API takes (NaN is not)."""
    backoffs_ok = 0 <= retry.min_backoff_s <= retry.max_backoff_s <= MAX_BACKOFF_S
    age_ok = retry.age_limit_s is None or 0 <= retry.age_limit_s <= MAX_DURATION_S
    return backoffs_ok and age_ok and 0 <= retry.max_doublings <= MAX_INT32


async def queue_of(emulator: Emulator, name: str) -> QueueConfig:
    """The queue a call names; UNKNOWN_QUEUE (or INVALID_QUEUE_NAME) as the SDK expects."""
    if not QUEUE_NAME_RE.match(name):
        raise ApplicationError(INVALID_QUEUE_NAME, f"invalid queue name {name!r}")
    try:
        return await emulator.get_queue(name)
    except QueueNotFound:
        known = ", ".join(sorted(emulator.queues))
        raise ApplicationError(
            UNKNOWN_QUEUE, f"queue {name} unknown (known queues: {known}; see queue.yaml or --auto-create-queues)"
        ) from None


class TaskQueueApi:
    """taskqueue BulkAdd, Delete, PurgeQueue, FetchQueueStats and QueryTasks."""

    def __init__(self, datastore: DatastoreApi) -> None:
        self.datastore = datastore

    def handler(self, runtime: Runtime, method: str) -> Handler | None:
        """The coroutine for ``taskqueue.<method>``, or None."""
        table = {
            "BulkAdd": self.bulk_add,
            "Delete": self.delete,
            "PurgeQueue": self.purge_queue,
            "FetchQueueStats": self.fetch_queue_stats,
            "QueryTasks": self.query_tasks,
        }
        call = table.get(method)
        return functools.partial(call, runtime) if call else None

    async def bulk_add(self, runtime: Runtime, raw: bytes) -> bytes:
        """Add tasks: one TaskResult per task, in order, with the names the emulator chose."""
        emulator = runtime.emulator
        pb = protos().taskqueue
        request = parse_message(pb.TaskQueueBulkAddRequest, raw, "taskqueue.BulkAdd")
        response = pb.TaskQueueBulkAddResponse()
        adds = list(request.add_request)
        if not adds:
            return bytes(response.SerializeToString())
        if len(adds) > MAX_TASKS_PER_BATCH:
            raise ApplicationError(TOO_MANY_TASKS, f"at most {MAX_TASKS_PER_BATCH} tasks per call, got {len(adds)}")
        names = {decode(add.queue_name) for add in adds}
        if len(names) > 1:
            raise ApplicationError(INVALID_REQUEST, f"one call adds to one queue, got {sorted(names)}")
        queue = await queue_of(emulator, names.pop())
        if queue.mode == "pull" or any(add.mode == PULL for add in adds):
            raise ApplicationError(
                INVALID_QUEUE_MODE,
                f"queue {queue.name} is a {queue.mode} queue; deferred-emulator delivers push tasks only",
            )
        if any(add.HasField("datastore_transaction") for add in adds):
            raise ApplicationError(
                INVALID_REQUEST,
                "tasks bound to a Cloud Datastore transaction are not supported: only datastore_v3"
                " transactions (db / ndb run_in_transaction against this server) are",
            )
        now = emulator.now_us()
        news = [task_of(add, queue.name) for add in adds]
        refuse_bad_headers(news)
        codes = [check_task(emulator, add, new, now) for add, new in zip(adds, news)]
        if any(code != OK for code in codes):
            for code in codes:
                response.taskresult.add(result=code if code != OK else SKIPPED)
            return bytes(response.SerializeToString())
        named = [await emulator.validate(new, now, emulator.app_engine_max_size) for new in news]
        if any(add.HasField("transaction") for add in adds):
            try:
                self.datastore.stage(adds[0].transaction, named)
            except ApplicationError as exc:
                # taskqueue reports datastore errors offset by DATASTORE_ERROR (the SDK's DatastoreError).
                raise ApplicationError(DATASTORE_ERROR + exc.code, exc.detail) from exc
            results = [(OK, new) for new in named]
        else:
            results = [(await self._insert(emulator, new), new) for new in named]
        for (code, new), add in zip(results, adds):
            result = response.taskresult.add(result=code)
            if code == OK and not add.task_name:
                result.chosen_task_name = new.name.encode()
        return bytes(response.SerializeToString())

    async def _insert(self, emulator: Emulator, new: NewTask) -> int:
        try:
            task = await emulator.add_task(new, emulator.app_engine_max_size)
        except TaskExists:
            return TASK_ALREADY_EXISTS
        except TaskTombstoned:
            return TOMBSTONED_TASK
        except QueueNotFound:
            return UNKNOWN_QUEUE
        except StoreUnavailable:
            raise  # the whole call fails as transient (see gae.py)
        except EmulatorError as exc:
            logger.warning("taskqueue.BulkAdd: task %s not added: %s", new.name, exc.message)
            return INTERNAL_ERROR
        await link_payload(emulator, task)
        return OK

    async def delete(self, runtime: Runtime, raw: bytes) -> bytes:
        """Delete tasks by name: OK, UNKNOWN_TASK or TOMBSTONED_TASK for each."""
        emulator = runtime.emulator
        pb = protos().taskqueue
        request = parse_message(pb.TaskQueueDeleteRequest, raw, "taskqueue.Delete")
        queue = await queue_of(emulator, decode(request.queue_name))
        response = pb.TaskQueueDeleteResponse()
        for raw_name in request.task_name:
            name = decode(raw_name)
            if not TASK_NAME_RE.match(name):
                response.result.append(INVALID_TASK_NAME)
                continue
            try:
                await emulator.delete_task(queue.name, name)
                response.result.append(OK)
            except TaskNotFound:
                gone = await emulator.store.is_tombstoned(queue.name, name, emulator.now_us())
                response.result.append(TOMBSTONED_TASK if gone else UNKNOWN_TASK)
        return bytes(response.SerializeToString())

    async def purge_queue(self, runtime: Runtime, raw: bytes) -> bytes:
        """Delete every task of a queue."""
        emulator = runtime.emulator
        pb = protos().taskqueue
        request = parse_message(pb.TaskQueuePurgeQueueRequest, raw, "taskqueue.PurgeQueue")
        queue = await queue_of(emulator, decode(request.queue_name))
        await emulator.purge(queue.name)
        return bytes(pb.TaskQueuePurgeQueueResponse().SerializeToString())

    async def fetch_queue_stats(self, runtime: Runtime, raw: bytes) -> bytes:
        """Per queue: tasks kept, oldest ETA, and last-minute and last-hour throughput."""
        emulator = runtime.emulator
        pb = protos().taskqueue
        request = parse_message(pb.TaskQueueFetchQueueStatsRequest, raw, "taskqueue.FetchQueueStats")
        queues = [await queue_of(emulator, decode(name)) for name in request.queue_name]
        counts = await emulator.store.counts(emulator.now_us())
        minute, hour = runtime.dispatcher.last_minute(), runtime.dispatcher.last_hour()
        response = pb.TaskQueueFetchQueueStatsResponse()
        for queue in queues:
            entry = counts.get(queue.name, {})
            oldest = entry.get("oldest_eta_us")
            stats = response.queuestats.add(
                num_tasks=int(entry.get("waiting", 0)) + int(entry.get("running", 0)),
                oldest_eta_usec=-1 if oldest is None else int(oldest),
            )
            stats.scanner_info.executed_last_minute = sum(minute.get(queue.name, (0, 0)))
            stats.scanner_info.executed_last_hour = sum(hour.get(queue.name, (0, 0)))
            stats.scanner_info.sampling_duration_seconds = 60.0
            stats.scanner_info.requests_in_flight = runtime.dispatcher.in_flight(queue.name)
            stats.scanner_info.enforced_rate = queue.rate_per_s if queue.state is QueueState.RUNNING else 0.0
        return bytes(response.SerializeToString())

    async def query_tasks(self, runtime: Runtime, raw: bytes) -> bytes:
        """A queue's tasks by ETA, from (start_eta_usec, start_task_name) on."""
        emulator = runtime.emulator
        pb = protos().taskqueue
        request = parse_message(pb.TaskQueueQueryTasksRequest, raw, "taskqueue.QueryTasks")
        queue = await queue_of(emulator, decode(request.queue_name))
        rows = max(1, min(request.max_rows, MAX_QUERY_ROWS))
        start_eta = request.start_eta_usec
        start_name = decode(request.start_task_name)
        after = (start_eta - 1, 2**62) if start_eta else None
        tasks = await emulator.list_tasks(
            queue.name, [TaskState.WAITING, TaskState.RUNNING], MAX_QUERY_ROWS, after=after
        )
        chosen = [t for t in tasks if (t.eta_us, t.name) >= (start_eta, start_name)][:rows]
        response = pb.TaskQueueQueryTasksResponse()
        methods = pb.TaskQueueQueryTasksResponse.Task.RequestMethod
        for task in chosen:
            out = response.task.add(
                task_name=task.name.encode(),
                eta_usec=task.eta_us,
                url=task.url.encode(),
                # Cloud Tasks can also make PATCH and OPTIONS tasks, which App Engine's enum lacks.
                method=methods.Value(task.method) if task.method in methods.keys() else methods.Value("POST"),
                retry_count=task.retry_count,
                execution_count=task.execution_count,
                body_size=len(task.body),
                body=task.body,
                creation_time_usec=task.created_us,
            )
            for key, value in task.headers.items():
                out.header.add(key=key.encode(), value=value.encode())
            if task.first_attempt_us is not None:
                out.first_try_usec = task.first_attempt_us
        return bytes(response.SerializeToString())
