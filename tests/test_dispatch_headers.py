"""End to end: what the app receives, attempt after attempt."""

from __future__ import annotations

import base64

from conftest import API, Handle, RecordingApp
from deferred_emulator.delivery import APP_ENGINE_USER_AGENT


async def test_first_delivery_carries_the_app_engine_headers(emulator: Handle, app_server: RecordingApp) -> None:
    # Given a task with a body, a header of its own and a spoofed reserved header
    body = b"\x80\x05payload"
    task = await emulator.add(
        appEngineHttpRequest={
            "relativeUri": "/_ah/queue/deferred?x=1",
            "body": base64.b64encode(body).decode(),
            "headers": {"X-Custom": "kept", "X-AppEngine-TaskName": "spoofed", "Host": "evil.example"},
        }
    )
    short = task["name"].rsplit("/", 1)[1]
    # When it is delivered
    [req] = await app_server.wait_for(1)
    # Then the app sees the request App Engine would send
    assert req.method == "POST"
    assert req.path == "/_ah/queue/deferred?x=1"
    assert req.body == body
    names = [k for k, _ in req.raw_headers]
    for exact in (
        "X-AppEngine-QueueName",
        "X-AppEngine-TaskName",
        "X-AppEngine-TaskRetryCount",
        "X-AppEngine-TaskExecutionCount",
        "X-AppEngine-TaskETA",
        "User-Agent",
        "Content-Type",
    ):
        assert exact in names, f"{exact} not sent with that exact spelling: {names}"
    h = req.headers
    assert h["X-AppEngine-QueueName"] == "default"
    assert h["X-AppEngine-TaskName"] == short
    assert h["X-AppEngine-TaskRetryCount"] == "0"
    assert h["X-AppEngine-TaskExecutionCount"] == "0"
    assert "X-AppEngine-TaskPreviousResponse" not in h
    assert "X-AppEngine-TaskRetryReason" not in h
    assert h["User-Agent"] == APP_ENGINE_USER_AGENT
    assert h["Content-Type"] == "application/octet-stream"
    assert h["X-Custom"] == "kept"
    assert h["Host"] != "evil.example"
    seconds, _, micros = h["X-AppEngine-TaskETA"].partition(".")
    assert seconds.isdigit() and len(micros) == 6


async def test_retries_carry_counts_previous_response_and_reason(emulator: Handle, app_server: RecordingApp) -> None:
    # Given an app that answers 503, 404, 302, then 200 (as in the production recording)
    app_server.statuses = [503, 404, 302]
    await emulator.add(retryConfig={"minBackoff": "0s", "maxBackoff": "0s"})
    # When the task is retried until it succeeds
    requests = await app_server.wait_for(4)
    # Then each attempt carries what production sends
    seen = [
        (
            r.headers["X-AppEngine-TaskRetryCount"],
            r.headers["X-AppEngine-TaskExecutionCount"],
            r.headers.get("X-AppEngine-TaskPreviousResponse"),
            r.headers.get("X-AppEngine-TaskRetryReason"),
        )
        for r in requests
    ]
    assert seen == [
        ("0", "0", None, None),
        ("1", "1", "503", "App Error"),
        ("2", "2", "404", "App Error"),
        ("3", "3", "302", "App Error"),
    ]
    await emulator.drain()
    tasks = await emulator.call("GET", f"{API}/queues/default/tasks")
    assert tasks == {"tasks": []}


async def test_content_type_given_by_the_task_is_kept(emulator: Handle, app_server: RecordingApp) -> None:
    await emulator.add(
        appEngineHttpRequest={"relativeUri": "/j", "body": "e30=", "headers": {"content-type": "application/json"}}
    )
    [req] = await app_server.wait_for(1)
    assert req.headers["Content-Type"] == "application/json"
    assert [k for k, _ in req.raw_headers].count("Content-Type") + [k for k, _ in req.raw_headers].count(
        "content-type"
    ) == 1
