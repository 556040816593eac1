"""google.longrunning.Operation JSON of the batch methods, as Cloud Tasks' REST API writes it."""

from __future__ import annotations

from typing import Any

from ..errors import EmulatorError
from ..models import Task
from ..operations import CREATE, Operation, rpc_code
from .tasks_json import task_to_json
from .timefmt import format_ts

TYPE_PREFIX = "type.googleapis.com/google.cloud.tasks."
#: The emulator's own Task fields: left out of operations, which Google's operations client parses strictly.
TASK_EXTENSIONS = ("state", "retryCount", "executionCount", "lastResponse")


def _task_json(task: Task, queue_path: str, view: str, default_deadline_s: float) -> dict[str, Any]:
    out = task_to_json(task, queue_path, view, default_deadline_s)
    for key in TASK_EXTENSIONS:
        out.pop(key, None)
    return out


def status_to_json(error: EmulatorError) -> dict[str, Any]:
    """A google.rpc.Status of an error (its code number, message and details)."""
    status: dict[str, Any] = {"code": rpc_code(error), "message": error.message}
    if error.details:
        status["details"] = error.details
    return status


def operation_to_json(op: Operation, parent: str, version: str, default_deadline_s: float) -> dict[str, Any]:
    """The Operation: done, with its metadata (times, state, failed requests) and, for creates, the tasks."""
    queue_path = f"{parent}/queues/{op.queue}"
    metadata: dict[str, Any] = {
        "@type": f"{TYPE_PREFIX}{version}.{op.method}Metadata",
        "startTime": format_ts(op.start_us),
        "endTime": format_ts(op.end_us),
        "state": op.state,
    }
    if op.failures:
        metadata["failedRequests"] = {str(index): status_to_json(exc) for index, exc in sorted(op.failures.items())}
    out: dict[str, Any] = {"name": f"{parent}/operations/{op.id}", "metadata": metadata, "done": True}
    error = op.error
    if error is not None:
        out["error"] = {"code": error[0], "message": error[1]}
    elif op.method == CREATE:
        tasks = [_task_json(t, queue_path, view, default_deadline_s) for t, view in zip(op.tasks, op.views)]
        out["response"] = {"@type": f"{TYPE_PREFIX}{version}.BatchCreateTasksResponse", "tasks": tasks}
    else:
        out["response"] = {"@type": "type.googleapis.com/google.protobuf.Empty"}
    return out
