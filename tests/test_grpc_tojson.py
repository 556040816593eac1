"""The gRPC layer's message-to-JSON conversion gives what ``json_format.MessageToDict`` gives."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Handle, RecordingApp
from deferred_emulator.api.grpc.tojson import _fast, to_json
from google.cloud import tasks_v2, tasks_v2beta3
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.protobuf import field_mask_pb2, json_format, timestamp_pb2
from test_grpc_convert import QUEUE, emulator_json

PARENT = "projects/p/locations/l/queues/q"


def when(nanos: int) -> timestamp_pb2.Timestamp:
    """A timestamp ``nanos`` after the epoch."""
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(nanos)
    return ts


def create(task: dict[str, Any], **more: Any) -> Any:
    """A CreateTaskRequest for ``task`` (proto-plus field names), as protobuf."""
    return tasks_v2.CreateTaskRequest(parent=PARENT, task=tasks_v2.Task(task), **more)._pb


#: Requests with only fields of the kinds converted here.
FAST = [
    create({"app_engine_http_request": {"relative_uri": "/t", "body": b"b" * 200}}),
    create(
        {
            "app_engine_http_request": {"relative_uri": "/t", "headers": {"X-A": "1"}},
            "schedule_time": when(1_800_000_000_123_456_789),
        },
        response_view=tasks_v2.Task.View.FULL,
    ),
    create(
        {"schedule_time": when(1_800_000_000_000_000_000), "dispatch_deadline": {"seconds": 60, "nanos": 500_000_000}}
    ),
    create(
        {"http_request": {"url": "http://a/b", "http_method": "PUT", "oidc_token": {"service_account_email": "s@x"}}}
    ),
    create({"name": f"{PARENT}/tasks/t1", "dispatch_count": 7, "response_count": -2}),
    tasks_v2.ListTasksRequest(parent=PARENT, page_size=5, page_token="abc", response_view=2)._pb,
    tasks_v2.GetQueueRequest(name=PARENT)._pb,
    json_format.ParseDict(
        {"queue": {"name": PARENT, "httpTarget": {"uriOverride": {"host": "h", "port": "8080", "scheme": "HTTPS"}}}},
        tasks_v2.UpdateQueueRequest.pb()(),
    ),
    tasks_v2beta3.CreateTaskRequest(parent=PARENT, task={"app_engine_http_request": {"body": b"\xff\x00"}})._pb,
    tasks_v2.Task.pb()(view=99),  # an enum number with no name stays a number
    tasks_v2.Task.pb()(),
    iam_policy_pb2.SetIamPolicyRequest(
        resource=PARENT, policy=policy_pb2.Policy(bindings=[{"role": "r", "members": ["a", "b"]}], etag=b"\x01")
    ),
]
#: Requests with floats or well-known types that json_format converts.
OTHER = [
    json_format.ParseDict({"parent": "projects/p/locations/l", "queue": QUEUE}, tasks_v2.CreateQueueRequest.pb()()),
    tasks_v2.UpdateQueueRequest(
        queue={"name": PARENT}, update_mask=field_mask_pb2.FieldMask(paths=["rate_limits", "retry_config.max_attempts"])
    )._pb,
]


@pytest.mark.parametrize("message", FAST + OTHER)
def test_requests_convert_as_message_to_dict_does(message: Any) -> None:
    assert to_json(message) == json_format.MessageToDict(message)


def test_create_task_takes_the_fast_path() -> None:
    # Not merely MessageToDict under another name: the common request is converted here.
    for message in FAST:
        assert _fast(message) == json_format.MessageToDict(message)
    # A float (rateLimits) or a FieldMask (updateMask) is json_format's, for the message that holds it.
    assert _fast(OTHER[0].queue.rate_limits) is None
    assert _fast(OTHER[1]) is None


async def test_the_emulators_messages_convert_as_message_to_dict_does(
    emulator: Handle, app_server: RecordingApp
) -> None:
    for data, message_type in await emulator_json(emulator, app_server):
        message = json_format.ParseDict(data, message_type(), ignore_unknown_fields=True)
        assert to_json(message) == json_format.MessageToDict(message)
