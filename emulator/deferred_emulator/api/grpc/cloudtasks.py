"""The CloudTasks and Locations methods, on REST JSON: each the gRPC twin of a handler in ``api/cloudtasks.py``."""

from __future__ import annotations

from typing import Any

from ...models import QueueConfig, QueueState
from ...operations import Operation
from ..cloudtasks import (
    batch_create_operation,
    batch_delete_operation,
    decode_token,
    encode_token,
    iam_answer,
    location_json,
    new_queue_id,
    queues_page,
)
from ..common import page_size_of
from ..operations_json import operation_to_json
from ..queues_json import queue_changes, queue_to_json
from ..tasks_json import response_view, task_from_json, task_to_json
from ..v2beta3 import mask_in, queue_in, queue_out
from .backend import Backend, Method
from .names import location_of, operation_of, project_of, queue_of, task_of

# -- queues -------------------------------------------------------------------------------------


async def list_queues(backend: Backend, req: dict[str, Any]) -> dict[str, Any]:
    """ListQueues."""
    parent = location_of(req.get("parent", ""))
    size = page_size_of(req.get("pageSize", 0), 100, 9800)
    return queues_page(backend.emulator, parent, req.get("pageToken"), size, await backend.stats(), backend.version)


async def get_queue(backend: Backend, req: dict[str, Any]) -> dict[str, Any]:
    """GetQueue."""
    parent, name = queue_of(req.get("name", ""))
    queue = await backend.emulator.get_queue(name, create=False)
    return queue_out(queue_to_json(queue, parent, (await backend.stats()).get(name)), backend.version)


async def create_queue(backend: Backend, req: dict[str, Any]) -> dict[str, Any]:
    """CreateQueue."""
    parent = location_of(req.get("parent", ""))
    data = queue_in(req.get("queue", {}), backend.version)
    base = QueueConfig(new_queue_id(data, parent))
    queue = await backend.emulator.create_queue(base.with_changes(**queue_changes(data, base)))
    return queue_out(queue_to_json(queue, parent), backend.version)


async def update_queue(backend: Backend, req: dict[str, Any]) -> dict[str, Any]:
    """UpdateQueue (only the fields under ``updateMask`` when one is given)."""
    data = queue_in(req.get("queue", {}), backend.version)
    parent, name = queue_of(data.get("name", ""))
    mask_text = req.get("updateMask")
    mask = mask_in([m.strip() for m in mask_text.split(",") if m.strip()] if mask_text else None, backend.version)
    queue = await backend.emulator.get_queue(name, create=False)
    queue = await backend.emulator.put_queue(queue.with_changes(**queue_changes(data, queue, mask)))
    return queue_out(queue_to_json(queue, parent), backend.version)


async def delete_queue(backend: Backend, req: dict[str, Any]) -> dict[str, Any]:
    """DeleteQueue."""
    _, name = queue_of(req.get("name", ""))
    await backend.emulator.delete_queue(name)
    backend.policies.pop(name, None)
    return {}


async def purge_queue(backend: Backend, req: dict[str, Any]) -> dict[str, Any]:
    """PurgeQueue."""
    parent, name = queue_of(req.get("name", ""))
    return queue_out(queue_to_json(await backend.emulator.purge(name), parent), backend.version)


async def pause_queue(backend: Backend, req: dict[str, Any]) -> dict[str, Any]:
    """PauseQueue."""
    parent, name = queue_of(req.get("name", ""))
    return queue_out(queue_to_json(await backend.emulator.set_state(name, QueueState.PAUSED), parent), backend.version)


async def resume_queue(backend: Backend, req: dict[str, Any]) -> dict[str, Any]:
    """ResumeQueue."""
    parent, name = queue_of(req.get("name", ""))
    queue = await backend.emulator.set_state(name, QueueState.RUNNING)
    return queue_out(queue_to_json(queue, parent), backend.version)


# -- IAM ----------------------------------------------------------------------------------------


def iam(method: str) -> Method:
    """getIamPolicy, setIamPolicy or testIamPermissions on the queue named by ``resource``."""

    async def call(backend: Backend, req: dict[str, Any]) -> dict[str, Any]:
        _, name = queue_of(req.get("resource", ""))
        return await iam_answer(backend.emulator, backend.policies, name, method, req)

    call.__doc__ = f"{method[0].upper()}{method[1:]}."
    return call


# -- tasks --------------------------------------------------------------------------------------


async def list_tasks(backend: Backend, req: dict[str, Any]) -> dict[str, Any]:
    """ListTasks."""
    emulator = backend.emulator
    queue_path = req.get("parent", "")
    _, queue = queue_of(queue_path)
    view = response_view(req.get("responseView"))
    size = page_size_of(req.get("pageSize", 0))
    token = req.get("pageToken")
    tasks = await emulator.list_tasks(queue, limit=size + 1, after=decode_token(token) if token else None)
    deadline = emulator.settings.dispatch_deadline_s
    out: dict[str, Any] = {"tasks": [task_to_json(t, queue_path, view, deadline) for t in tasks[:size]]}
    if len(tasks) > size:
        out["nextPageToken"] = encode_token(tasks[size - 1].eta_us, tasks[size - 1].id)
    return out


async def get_task(backend: Backend, req: dict[str, Any]) -> dict[str, Any]:
    """GetTask."""
    emulator = backend.emulator
    queue_path, queue, name = task_of(req.get("name", ""))
    task = await emulator.get_task(queue, name)
    return task_to_json(task, queue_path, response_view(req.get("responseView")), emulator.settings.dispatch_deadline_s)


async def create_task(backend: Backend, req: dict[str, Any]) -> dict[str, Any]:
    """CreateTask."""
    emulator = backend.emulator
    queue_path = req.get("parent", "")
    _, queue = queue_of(queue_path)
    task = await emulator.add_task(task_from_json(req.get("task"), queue, queue_path, emulator.now_us()))
    return task_to_json(task, queue_path, response_view(req.get("responseView")), emulator.settings.dispatch_deadline_s)


async def delete_task(backend: Backend, req: dict[str, Any]) -> dict[str, Any]:
    """DeleteTask."""
    _, queue, name = task_of(req.get("name", ""))
    await backend.emulator.delete_task(queue, name)
    return {}


async def run_task(backend: Backend, req: dict[str, Any]) -> dict[str, Any]:
    """RunTask."""
    emulator = backend.emulator
    queue_path, queue, name = task_of(req.get("name", ""))
    task = await emulator.run_task(queue, name)
    return task_to_json(task, queue_path, response_view(req.get("responseView")), emulator.settings.dispatch_deadline_s)


# -- batches ------------------------------------------------------------------------------------


def _operation(backend: Backend, op: Operation, parent: str, version: str) -> dict[str, Any]:
    return operation_to_json(op, parent, version, backend.emulator.settings.dispatch_deadline_s)


async def batch_create_tasks(backend: Backend, req: dict[str, Any]) -> dict[str, Any]:
    """BatchCreateTasks: a done operation."""
    parent, queue = queue_of(req.get("parent", ""))
    op = await batch_create_operation(backend.emulator, parent, queue, req)
    backend.operation_versions[op.id] = backend.version
    return _operation(backend, op, parent, backend.version)


async def batch_delete_tasks(backend: Backend, req: dict[str, Any]) -> dict[str, Any]:
    """BatchDeleteTasks: a done operation."""
    parent, queue = queue_of(req.get("parent", ""))
    op = await batch_delete_operation(backend.emulator, parent, queue, req)
    backend.operation_versions[op.id] = backend.version
    return _operation(backend, op, parent, backend.version)


async def get_operation(backend: Backend, req: dict[str, Any]) -> dict[str, Any]:
    """GetOperation (google.longrunning.Operations): a batch's operation, in the API version that made it."""
    parent, op_id = operation_of(req.get("name", ""))
    op = backend.emulator.operations.get(op_id)
    return _operation(backend, op, parent, backend.operation_versions.get(op.id, "v2"))


# -- locations ----------------------------------------------------------------------------------


async def list_locations(backend: Backend, req: dict[str, Any]) -> dict[str, Any]:
    """ListLocations: the location the emulator names its queues under by default."""
    project = project_of(req.get("name", ""))
    return {"locations": [location_json(project, backend.emulator.settings.location)]}


async def get_location(backend: Backend, req: dict[str, Any]) -> dict[str, Any]:
    """GetLocation: the emulator answers for any location."""
    parts = location_of(req.get("name", "")).split("/")
    return location_json(parts[1], parts[3])
