"""The gRPC layer's JSON-to-message conversion gives what ``json_format.ParseDict`` gives, on the emulator's JSON."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from conftest import API, Handle, RecordingApp
from deferred_emulator.api.grpc.convert import from_json
from google.cloud import tasks_v2, tasks_v2beta3
from google.cloud.location import locations_pb2
from google.iam.v1 import policy_pb2
from google.longrunning import operations_pb2
from google.protobuf import json_format

QUEUE = {
    "name": f"{API.removeprefix('/v2/')}/queues/conv",
    "rateLimits": {"maxDispatchesPerSecond": 2.5, "maxConcurrentDispatches": 3},
    "retryConfig": {"maxAttempts": 4, "minBackoff": "0.100s", "maxBackoff": "3600s", "maxRetryDuration": "7200s"},
    "httpTarget": {
        "uriOverride": {"host": "example.com", "pathOverride": {"path": "/over"}},
        "headerOverrides": [{"header": {"key": "X-Q", "value": "1"}}],
        "oidcToken": {"serviceAccountEmail": "sa@p.iam.gserviceaccount.com", "audience": "https://aud"},
    },
}


def same(data: dict[str, Any], message_type: Any) -> None:
    """Both conversions agree (and the fast one is not trivially empty)."""
    expected = json_format.ParseDict(data, message_type(), ignore_unknown_fields=True)
    assert from_json(data, message_type()) == expected
    assert expected.ByteSize() > 0 or not data


async def emulator_json(emu: Handle, app: RecordingApp) -> list[tuple[dict[str, Any], Any]]:
    """JSON the REST API answered, with the message type of each."""
    out: list[tuple[dict[str, Any], Any]] = []
    queue = await emu.call("POST", f"{API}/queues", QUEUE)
    out.append((queue, tasks_v2.Queue.pb()))
    tasks = f"{API}/queues/default/tasks"
    oidc = {"serviceAccountEmail": "sa@p.iam.gserviceaccount.com", "audience": "https://aud"}
    bodies = [
        {"appEngineHttpRequest": {"relativeUri": "/a?x=1", "body": "aGk=", "headers": {"X-A": "b"}}},
        {
            "appEngineHttpRequest": {"appEngineRouting": {"service": "worker", "version": "v1"}},
            "dispatchDeadline": "60.5s",
        },
        {"httpRequest": {"url": app.url + "/h", "httpMethod": "PUT", "body": "aGk=", "oidcToken": oidc}},
        {"httpRequest": {"url": app.url + "/o", "oauthToken": {"serviceAccountEmail": "sa@x", "scope": "s"}}},
        {"appEngineHttpRequest": {}, "countdown": "3600.5s", "retryConfig": {"maxAttempts": 2}},
    ]
    created = [await emu.call("POST", tasks, {"task": body, "responseView": "FULL"}) for body in bodies]
    out += [(task, tasks_v2.Task.pb()) for task in created]
    out += [(task, tasks_v2beta3.Task.pb()) for task in created]
    app.statuses = [503]
    await emu.drain()  # attempts: firstAttempt, lastAttempt with a response status
    listed = await emu.call("GET", f"{tasks}?responseView=FULL")
    assert any("lastAttempt" in task for task in listed["tasks"])
    out.append((listed, tasks_v2.ListTasksResponse.pb()))
    out.append((await emu.call("GET", f"{API}/queues"), tasks_v2.ListQueuesResponse.pb()))
    out.append((await emu.call("GET", f"{API}/queues"), tasks_v2beta3.ListQueuesResponse.pb()))
    batch = {"requests": [{"task": bodies[0]}, {"task": {"name": "not valid", **bodies[0]}}]}
    op = await emu.call("POST", f"{tasks}:batchCreate", batch)
    assert op["metadata"]["failedRequests"]
    out.append((op, operations_pb2.Operation))
    policy = {"bindings": [{"role": "roles/viewer", "members": ["user:a@example.com"]}]}
    answer = await emu.call("POST", f"{API}/queues/conv:setIamPolicy", {"policy": policy})
    out.append((answer, policy_pb2.Policy))
    out.append((await emu.call("GET", "/v2/projects/p/locations"), locations_pb2.ListLocationsResponse))
    return out


async def test_the_emulators_json_converts_as_json_format_does(emulator: Handle, app_server: RecordingApp) -> None:
    for data, message_type in await emulator_json(emulator, app_server):
        same(data, message_type)


@pytest.mark.parametrize(
    "data",
    [
        {"httpRequest": {"url": "u", "body": base64.urlsafe_b64encode(b"\xfb\xff").decode().rstrip("=")}},
        {"httpRequest": {"httpMethod": 4}, "view": 2, "dispatchCount": "7"},
        {"dispatchDeadline": "-1.000000001s", "scheduleTime": "2026-01-01T00:00:00+02:00"},
        {"scheduleTime": "2026-01-01T00:00:00.123456789Z", "createTime": "1970-01-01T00:00:00.5Z"},
        {"retryConfig": None, "name": "n", "unknown": {"x": 1}, "view": "WIDE"},
    ],
)
def test_unusual_values_convert_as_json_format_does(data: dict[str, Any]) -> None:
    same(data, tasks_v2.Task.pb())


@pytest.mark.parametrize(
    "data",
    [{"scheduleTime": "yesterday"}, {"createTime": "1970-01-01T00:00:00z"}, {"dispatchDeadline": "1 min"}, {"name": 5}],
)
def test_bad_values_are_refused_as_json_format_refuses_them(data: dict[str, Any]) -> None:
    with pytest.raises(json_format.ParseError):
        json_format.ParseDict(data, tasks_v2.Task.pb()(), ignore_unknown_fields=True)
    with pytest.raises(json_format.ParseError):
        from_json(data, tasks_v2.Task.pb()())
