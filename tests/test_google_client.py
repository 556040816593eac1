"""Google's own Cloud Tasks client against the emulator, over gRPC (its default) and REST, on one port."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable

import grpc
import pytest
from conftest import MakeEmulator, RecordingApp
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import tasks_v2, tasks_v2beta3
from google.iam.v1 import policy_pb2
from google.protobuf import duration_pb2
from test_client_fixtures import LiveEmulator, MakeClient

pytest_plugins = ["test_client_fixtures"]

PROJECT, LOCATION = "my-project", "us-central1"


async def test_create_list_and_deliver_an_app_engine_task(
    live_emulator: Callable[..., LiveEmulator], app_server: RecordingApp, make_client: MakeClient
) -> None:
    # Given an emulator delivering to a real app, and Google's client pointed at it
    emulator = live_emulator(app_url=app_server.url, dispatch=False)
    client = make_client(emulator)
    parent = client.queue_path(PROJECT, LOCATION, "default")

    def create_and_list() -> tuple[tasks_v2.Task, list[tasks_v2.Task]]:
        created = client.create_task(
            parent=parent,
            task=tasks_v2.Task(
                app_engine_http_request=tasks_v2.AppEngineHttpRequest(
                    http_method=tasks_v2.HttpMethod.POST,
                    relative_uri="/_ah/queue/deferred",
                    body=b"hello",
                    headers={"X-Custom": "1"},
                ),
                dispatch_deadline=duration_pb2.Duration(seconds=60),
            ),
        )
        return created, list(client.list_tasks(parent=parent))

    # When it creates a task and lists the queue (the client is sync: run it off the loop)
    created, listed = await asyncio.to_thread(create_and_list)
    # Then the task is listed as created
    assert created.name.startswith(f"{parent}/tasks/")
    assert created.app_engine_http_request.relative_uri == "/_ah/queue/deferred"
    assert [t.name for t in listed] == [created.name]
    assert listed[0].dispatch_deadline.seconds == 60
    # And it is delivered to the app
    await asyncio.to_thread(emulator.drain)
    [req] = await app_server.wait_for(1)
    assert req.body == b"hello"
    assert req.headers["X-AppEngine-TaskName"] == created.name.rsplit("/", 1)[1]
    assert req.headers["X-Custom"] == "1"


async def test_queue_lifecycle_and_errors_raise_the_clients_exceptions(
    live_emulator: Callable[..., LiveEmulator], make_client: MakeClient
) -> None:
    emulator = live_emulator()
    client = make_client(emulator)
    location = client.common_location_path(PROJECT, LOCATION)
    name = client.queue_path(PROJECT, LOCATION, "emails")

    def scenario() -> None:
        # Given a new queue
        queue = client.create_queue(
            parent=location,
            queue=tasks_v2.Queue(name=name, rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=2)),
        )
        assert queue.rate_limits.max_dispatches_per_second == 2
        assert {q.name for q in client.list_queues(parent=location)} >= {name}
        # When it is paused, resumed and purged, each answer shows the new state
        assert client.pause_queue(name=name).state == tasks_v2.Queue.State.PAUSED
        assert client.resume_queue(name=name).state == tasks_v2.Queue.State.RUNNING
        client.purge_queue(name=name)
        # Then errors come back as the client's own exceptions
        with pytest.raises(exceptions.Conflict):  # REST's 409 and gRPC's ALREADY_EXISTS (a Conflict) alike
            client.create_queue(parent=location, queue=tasks_v2.Queue(name=name))
        with pytest.raises(exceptions.NotFound):
            client.get_queue(name=client.queue_path(PROJECT, LOCATION, "missing"))
        task = tasks_v2.Task(
            name=f"{name}/tasks/once", app_engine_http_request=tasks_v2.AppEngineHttpRequest(relative_uri="/x")
        )
        client.create_task(parent=name, task=task)
        with pytest.raises(exceptions.Conflict):
            client.create_task(parent=name, task=task)
        client.delete_task(name=task.name)
        with pytest.raises(exceptions.NotFound):
            client.get_task(name=task.name)
        client.delete_queue(name=name)
        with pytest.raises(exceptions.NotFound):
            client.get_queue(name=name)

    await asyncio.to_thread(scenario)


async def test_locations_and_queue_iam_policies(
    live_emulator: Callable[..., LiveEmulator], make_client: MakeClient
) -> None:
    emulator = live_emulator()
    client = make_client(emulator)
    name = client.queue_path(PROJECT, LOCATION, "default")

    def scenario() -> None:
        # Locations: the one the emulator names its queues under
        [location] = client.list_locations(request={"name": f"projects/{PROJECT}"}).locations
        assert (location.name, location.location_id) == (f"projects/{PROJECT}/locations/{LOCATION}", LOCATION)
        # A queue starts with an empty policy (etag "ACAB" in JSON, as Google's); one set is read back
        empty = client.get_iam_policy(request={"resource": name})
        assert (list(empty.bindings), empty.etag) == ([], base64.b64decode("ACAB"))
        binding = policy_pb2.Binding(role="roles/cloudtasks.enqueuer", members=["user:dev@example.com"])
        policy = client.set_iam_policy(request={"resource": name, "policy": policy_pb2.Policy(bindings=[binding])})
        assert list(policy.bindings) == [binding] and policy.etag not in (b"", empty.etag)
        assert client.get_iam_policy(request={"resource": name}) == policy
        # Nothing is enforced locally: every permission asked about is granted
        asked = ["cloudtasks.tasks.create", "cloudtasks.queues.delete"]
        assert list(client.test_iam_permissions(request={"resource": name, "permissions": asked}).permissions) == asked
        # And an unknown queue is NotFound
        with pytest.raises(exceptions.NotFound):
            client.get_iam_policy(request={"resource": client.queue_path(PROJECT, LOCATION, "missing")})

    await asyncio.to_thread(scenario)


def v2beta3_client(emulator: LiveEmulator, transport: str) -> tasks_v2beta3.CloudTasksClient:
    if transport == "grpc":
        channel = grpc.insecure_channel(emulator.host)
        return tasks_v2beta3.CloudTasksClient(
            transport=tasks_v2beta3.services.cloud_tasks.transports.CloudTasksGrpcTransport(channel=channel)
        )
    return tasks_v2beta3.CloudTasksClient(
        transport="rest", credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=emulator.url)
    )


@pytest.mark.parametrize("transport", ["grpc", "rest"])
async def test_the_v2beta3_client(live_emulator: Callable[..., LiveEmulator], transport: str) -> None:
    emulator = live_emulator()

    def scenario() -> None:
        with v2beta3_client(emulator, transport) as client:
            parent = client.queue_path(PROJECT, LOCATION, "default")
            http = tasks_v2beta3.HttpRequest(url="http://127.0.0.1:9/beta", body=b"b3")
            created = client.create_task(parent=parent, task=tasks_v2beta3.Task(http_request=http))
            assert created.http_request.url == "http://127.0.0.1:9/beta"
            # A batch's operation carries v2beta3's own message types, read back by GetOperation
            request = tasks_v2beta3.CreateTaskRequest(parent=parent, task=tasks_v2beta3.Task(http_request=http))
            op = client.batch_create_tasks(request={"parent": parent, "requests": [request]})
            assert op.metadata.state == tasks_v2beta3.BatchCreateTasksMetadata.State.SUCCEEDED
            again = client.get_operation(request={"name": op.operation.name})
            assert again.metadata.type_url.endswith("google.cloud.tasks.v2beta3.BatchCreateTasksMetadata")
            assert len(list(client.list_tasks(parent=parent))) == 2
            # v2beta3 keeps a queue's App Engine routing under app_engine_http_queue, and names its type
            location = client.common_location_path(PROJECT, LOCATION)
            routing = tasks_v2beta3.AppEngineRouting(service="worker", version="v1")
            queue = client.create_queue(
                parent=location,
                queue=tasks_v2beta3.Queue(
                    name=client.queue_path(PROJECT, LOCATION, "beta"),
                    app_engine_http_queue=tasks_v2beta3.AppEngineHttpQueue(app_engine_routing_override=routing),
                ),
            )
            assert queue.app_engine_http_queue.app_engine_routing_override == routing
            assert queue.type_ == tasks_v2beta3.Queue.Type.PUSH
            queue.app_engine_http_queue.app_engine_routing_override.service = "mailer"
            updated = client.update_queue(
                queue=queue, update_mask={"paths": ["app_engine_http_queue.app_engine_routing_override.service"]}
            )
            assert updated.app_engine_http_queue.app_engine_routing_override.service == "mailer"
            assert client.get_queue(name=queue.name).app_engine_http_queue == updated.app_engine_http_queue
            # While v2 shows the same queue in its own shape
            status, seen = emulator.call("GET", f"/v2/{queue.name}")
            assert (status, seen["appEngineRoutingOverride"]["service"]) == (200, "mailer"), seen

    await asyncio.to_thread(scenario)


async def test_methods_the_emulator_does_not_serve_are_unimplemented_over_grpc(
    live_emulator: Callable[..., LiveEmulator],
) -> None:
    emulator = live_emulator()
    transport = tasks_v2.services.cloud_tasks.transports.CloudTasksGrpcTransport(
        channel=grpc.insecure_channel(emulator.host)
    )

    def scenario() -> None:
        with tasks_v2.CloudTasksClient(transport=transport) as client:
            with pytest.raises(exceptions.MethodNotImplemented):
                client.get_cmek_config(name=f"projects/{PROJECT}/locations/{LOCATION}/cmekConfig")

    await asyncio.to_thread(scenario)


async def test_the_async_client_over_grpc(make_front_emulator: MakeEmulator) -> None:
    # Google's asyncio client, on the test's own event loop, with the emulator on the same loop
    from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcAsyncIOTransport

    emu = await make_front_emulator(dispatch=False)
    channel = grpc.aio.insecure_channel(emu.host)
    client = tasks_v2.CloudTasksAsyncClient(transport=CloudTasksGrpcAsyncIOTransport(channel=channel))
    try:
        parent = client.queue_path(PROJECT, LOCATION, "default")
        created = await client.create_task(
            parent=parent, task=tasks_v2.Task(http_request=tasks_v2.HttpRequest(url="http://127.0.0.1:9/a"))
        )
        assert [t.name async for t in await client.list_tasks(parent=parent)] == [created.name]
        with pytest.raises(exceptions.NotFound):
            await client.get_task(name=f"{parent}/tasks/missing")
    finally:
        await channel.close()
