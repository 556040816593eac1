"""BatchCreateTasks, BatchDeleteTasks and GetOperation through Google's client (gRPC and REST), and through
appengine-python-standard's Cloud Tasks path, which reads their operations."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator

import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.longrunning import operations_pb2
from google.rpc import code_pb2
from test_client_fixtures import LiveEmulator, MakeClient
from test_google_client import LOCATION, PROJECT

pytest_plugins = ["test_client_fixtures"]

State = tasks_v2.BatchCreateTasksMetadata.State
DeleteState = tasks_v2.BatchDeleteTasksMetadata.State


def app_engine_task(name: str = "", body: bytes = b"x") -> tasks_v2.Task:
    request = tasks_v2.AppEngineHttpRequest(relative_uri="/work", body=body)
    return tasks_v2.Task(name=name, app_engine_http_request=request)


async def test_batch_create_reports_each_failed_request_by_index(
    live_emulator: Callable[..., LiveEmulator], make_client: MakeClient
) -> None:
    emulator = live_emulator()
    client = make_client(emulator)
    parent = client.queue_path(PROJECT, LOCATION, "default")

    def scenario() -> None:
        # Given a task name already in use
        client.create_task(parent=parent, task=app_engine_task(f"{parent}/tasks/taken"))
        # When a batch creates three tasks, the second under the taken name, the third with an invalid id
        requests = [
            tasks_v2.CreateTaskRequest(parent=parent, task=app_engine_task(f"{parent}/tasks/first", b"one")),
            tasks_v2.CreateTaskRequest(parent=parent, task=app_engine_task(f"{parent}/tasks/taken")),
            tasks_v2.CreateTaskRequest(parent=parent, task=app_engine_task(f"{parent}/tasks/not valid")),
            tasks_v2.CreateTaskRequest(
                parent=parent, task=app_engine_task(body=b"four"), response_view=tasks_v2.Task.View.FULL
            ),
        ]
        op = client.batch_create_tasks(request={"parent": parent, "requests": requests})
        # Then the operation is done when returned, and its result lists the tasks created, in order
        assert op.done()
        created = op.result(timeout=0).tasks
        assert [t.name for t in created][0] == f"{parent}/tasks/first"
        assert created[1].app_engine_http_request.body == b"four"  # the FULL view that request asked for
        # And the metadata names the failed requests by index, with their codes
        metadata = op.metadata
        assert metadata.state == State.PARTIALLY_SUCCEEDED
        assert sorted(metadata.failed_requests) == [1, 2]
        assert metadata.failed_requests[1].code == code_pb2.ALREADY_EXISTS
        assert metadata.failed_requests[2].code == code_pb2.INVALID_ARGUMENT
        assert "not valid" in metadata.failed_requests[2].message
        assert metadata.end_time >= metadata.start_time
        # And the queue holds what the batch created, nothing more
        names = sorted(t.name.rsplit("/", 1)[1] for t in client.list_tasks(parent=parent))
        assert names == sorted(["taken", "first", created[1].name.rsplit("/", 1)[1]])
        # And GetOperation reads the same operation back
        again = client.get_operation(request=operations_pb2.GetOperationRequest(name=op.operation.name))
        assert again.done and again.name == op.operation.name
        assert again.name.startswith(f"projects/{PROJECT}/locations/{LOCATION}/operations/")
        assert again.metadata == op.operation.metadata

    await asyncio.to_thread(scenario)


async def test_batch_create_all_succeeded_and_request_id_is_idempotent(
    live_emulator: Callable[..., LiveEmulator], make_client: MakeClient
) -> None:
    emulator = live_emulator()
    client = make_client(emulator)
    parent = client.queue_path(PROJECT, LOCATION, "default")

    def scenario() -> None:
        requests = [tasks_v2.CreateTaskRequest(parent=parent, task=app_engine_task()) for _ in range(100)]
        op = client.batch_create_tasks(request={"parent": parent, "requests": requests, "request_id": "retry-1"})
        assert op.metadata.state == State.SUCCEEDED and not op.metadata.failed_requests
        assert len(op.result(timeout=0).tasks) == 100
        # A retry with the same request id answers the same operation and creates nothing more
        again = client.batch_create_tasks(request={"parent": parent, "requests": requests, "request_id": "retry-1"})
        location = client.common_location_path(PROJECT, LOCATION)
        assert again.operation.name == op.operation.name == f"{location}/operations/retry-1"
        assert len(list(client.list_tasks(parent=parent))) == 100
        # Over 100 requests is refused whole
        with pytest.raises(exceptions.BadRequest, match="maximum number of requests is 100"):
            client.batch_create_tasks(request={"parent": parent, "requests": requests + requests[:1]})
        # And a missing queue is NotFound
        missing = client.queue_path(PROJECT, LOCATION, "missing")
        with pytest.raises(exceptions.NotFound):
            client.batch_create_tasks(
                request={"parent": missing, "requests": [{"parent": missing, "task": app_engine_task()}]}
            )

    await asyncio.to_thread(scenario)


async def test_batch_delete_reports_missing_tasks_and_fails_whole_when_none_succeeds(
    live_emulator: Callable[..., LiveEmulator], make_client: MakeClient
) -> None:
    emulator = live_emulator()
    client = make_client(emulator)
    parent = client.queue_path(PROJECT, LOCATION, "default")

    def scenario() -> None:
        kept = client.create_task(parent=parent, task=app_engine_task(f"{parent}/tasks/kept"))
        gone = client.create_task(parent=parent, task=app_engine_task(f"{parent}/tasks/gone"))
        # When a batch deletes one task and one that does not exist
        op = client.batch_delete_tasks(request={"parent": parent, "names": [gone.name, f"{parent}/tasks/never"]})
        # Then the first is deleted and the second reported NOT_FOUND at index 1
        op.result(timeout=0)
        assert op.metadata.state == DeleteState.PARTIALLY_SUCCEEDED
        assert list(op.metadata.failed_requests) == [1]
        assert op.metadata.failed_requests[1].code == code_pb2.NOT_FOUND
        assert [t.name for t in client.list_tasks(parent=parent)] == [kept.name]
        # When every name fails, the operation carries ABORTED, as production words it
        op = client.batch_delete_tasks(request={"parent": parent, "names": [gone.name]})
        with pytest.raises(exceptions.GoogleAPICallError, match="None of the requests succeeded"):
            op.result(timeout=0)
        assert op.operation.error.code == code_pb2.ABORTED
        # And a clean batch succeeds
        op = client.batch_delete_tasks(request={"parent": parent, "names": [kept.name]})
        op.result(timeout=0)
        assert op.metadata.state == DeleteState.SUCCEEDED
        assert list(client.list_tasks(parent=parent)) == []
        # An unknown operation is NotFound
        with pytest.raises(exceptions.NotFound):
            client.get_operation(
                request={"name": f"{client.common_location_path(PROJECT, LOCATION)}/operations/unknown"}
            )

    await asyncio.to_thread(scenario)


@pytest.fixture
def app_engine_cloud_tasks(
    live_emulator: Callable[..., LiveEmulator], make_client: MakeClient
) -> Iterator[LiveEmulator]:
    """appengine-python-standard's Cloud Tasks path, its client pointed at an emulator."""
    cloudtask = pytest.importorskip("google.appengine.api.taskqueue.cloudtask")
    emulator = live_emulator()
    saved = {k: os.environ.get(k) for k in ("GOOGLE_CLOUD_PROJECT", "LOCATION_ID")}
    os.environ.update(GOOGLE_CLOUD_PROJECT=PROJECT, LOCATION_ID=LOCATION)
    cloudtask._reset_clients()
    cloudtask._CLIENTS[("v2", os.getpid())] = make_client(emulator)
    yield emulator
    cloudtask._reset_clients()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


async def test_app_engine_sdk_reads_the_batch_operations(app_engine_cloud_tasks: LiveEmulator) -> None:
    from google.appengine.api.taskqueue import cloudtask, taskqueue

    def scenario() -> None:
        # Given a task name in use
        cloudtask.create_tasks_in_cloud_tasks("default", [taskqueue.Task(name="taken", payload=b"0")], False)
        # When the SDK adds several tasks at once (BatchCreateTasks), all new
        tasks = [taskqueue.Task(payload=b"1", url="/a"), taskqueue.Task(name="named", payload=b"2", url="/b")]
        added = cloudtask.create_tasks_in_cloud_tasks("default", tasks, True)
        # Then it reads the created tasks' names from the operation's response
        assert [t.was_enqueued for t in added] == [True, True]
        assert added[1].name == "named" and added[0].name
        # When a batch reuses the taken name, it raises the SDK's error for it, read from failed_requests
        clash = [taskqueue.Task(payload=b"3"), taskqueue.Task(name="taken", payload=b"4")]
        with pytest.raises(taskqueue.TaskAlreadyExistsError):
            cloudtask.create_tasks_in_cloud_tasks("default", clash, True)
        # And the other task of that batch was created
        assert clash[0].was_enqueued
        # When it deletes tasks (BatchDeleteTasks), one of them unknown
        doomed = [taskqueue.Task(name="named"), taskqueue.Task(name="never-existed")]
        cloudtask.delete_tasks_in_cloud_tasks("default", doomed, True)
        # Then the unknown one is read back as not deleted (UNKNOWN_TASK is not an error for a delete)
        assert [t.was_deleted for t in doomed] == [True, False]

    await asyncio.to_thread(scenario)
    names = sorted(t["name"].rsplit("/", 1)[1] for t in app_engine_cloud_tasks.tasks())
    assert "named" not in names and "taken" in names and len(names) == 3
