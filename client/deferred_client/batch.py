"""Transactional tasks on Cloud Tasks: one BatchCreateTasks per queue (100 tasks at most each), then its operation.

Cloud Tasks has no transactions and a batch is not atomic: each request in it succeeds or fails on its
own, and the operation says which failed. The first failure is raised, carrying what was created.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import Error, error_from_response
from .task import Task, TaskSpec

if TYPE_CHECKING:
    from .client import EmulatorClient

__all__ = ["batch_create"]

MAX_PER_BATCH = 100
#: google.rpc codes as the HTTP statuses REST answers them with (the error mapping is by status).
HTTP_STATUS = {3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 10: 409, 11: 400, 13: 500, 14: 503, 16: 401}


def _status_error(status: Any, what: str) -> Error:
    """The client's exception for a google.rpc.Status."""
    status = status if isinstance(status, dict) else {}
    http = HTTP_STATUS.get(int(status.get("code") or 2), 500)
    body = json.dumps({"error": {"message": str(status.get("message") or "unknown error")}}).encode()
    return error_from_response(http, body, what, adding=True)


def _wait(client: EmulatorClient, operation: dict[str, Any]) -> dict[str, Any]:
    """The operation once done, polled with growing pauses within the client's timeout."""
    deadline = time.monotonic() + client.config.timeout_s
    pause = 0.05
    while not operation.get("done"):
        name = operation.get("name")
        if not isinstance(name, str) or time.monotonic() > deadline:
            raise Error(f"BatchCreateTasks did not finish in {client.config.timeout_s} s: {operation!r:.300}")
        time.sleep(pause)
        pause = min(pause * 2, 1.0)
        operation = client.transport.request("GET", f"/v2/{name}").check("GetOperation").json()
    return operation


def _one_queue(
    client: EmulatorClient, queue: str, items: Sequence[tuple[TaskSpec, bytes, str | None]], keys: Sequence[str | None]
) -> tuple[list[Task | None], list[Error]]:
    path, resource = client.queue(queue)
    requests = [{"task": spec.to_json(body, resource, name, client.delivery)} for spec, body, name in items]
    payload = json.dumps({"requests": requests, "requestId": uuid.uuid4().hex}, separators=(",", ":")).encode()
    what = f"Adding tasks to queue {queue!r}"
    resp = client.transport.request("POST", path + ":batchCreate", payload).check(what, adding=True)
    operation = _wait(client, resp.json())
    metadata = operation.get("metadata") or {}
    failed = {int(k): v for k, v in (metadata.get("failedRequests") or {}).items()}
    if operation.get("error") and not failed:
        raise _status_error(operation["error"], what)
    created = iter((operation.get("response") or {}).get("tasks") or [])
    tasks: list[Task | None] = []
    errors: list[Error] = []
    for index, key in enumerate(keys):
        if index in failed:
            tasks.append(None)
            errors.append(_status_error(failed[index], what))
            continue
        data = next(created, None)
        if not isinstance(data, dict):
            raise Error(f"BatchCreateTasks answered fewer tasks than it created: {operation!r:.300}")
        tasks.append(Task.from_json(data, queue, key))
    return tasks, errors


def batch_create(
    client: EmulatorClient, items: Sequence[tuple[TaskSpec, bytes, str | None]], keys: Sequence[str | None]
) -> list[Task]:
    """Create the tasks queue by queue; raise the first failure (its ``created`` lists the tasks made, by index)."""
    by_queue: dict[str, list[int]] = {}
    for index, (spec, _, _) in enumerate(items):
        by_queue.setdefault(spec.queue, []).append(index)
    tasks: list[Task | None] = [None] * len(items)
    errors: list[Error] = []
    for queue, indexes in by_queue.items():
        for start in range(0, len(indexes), MAX_PER_BATCH):
            chunk = indexes[start : start + MAX_PER_BATCH]
            try:
                made, failed = _one_queue(client, queue, [items[i] for i in chunk], [keys[i] for i in chunk])
            except Error as exc:
                errors.append(exc)
                continue
            for i, task in zip(chunk, made):
                tasks[i] = task
            errors.extend(failed)
    if errors:
        error = errors[0]
        done = sum(task is not None for task in tasks)
        error.args = (
            f"{error.args[0] if error.args else error} ({len(errors)} of {len(items)} tasks failed,"
            f" {done} were created)",
        )
        error.created = tasks  # type: ignore[attr-defined]
        raise error
    return [task for task in tasks if task is not None]
