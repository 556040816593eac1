"""App Engine's limits, each with a value just inside and one just outside; every refusal names its rule."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

from conftest import API, Handle, MakeEmulator
from deferred_emulator.api.tasks_json import task_from_json
from deferred_emulator.api.timefmt import format_ts
from deferred_emulator.service import task_size

US = 1_000_000
DAY_S = 86400


async def create(emu: Handle, task: dict[str, Any], expect: int = 200, queue: str = "default") -> dict[str, Any]:
    return dict(await emu.call("POST", f"{API}/queues/{queue}/tasks", {"task": task}, expect=expect))


def error_message(answer: dict[str, Any], status: str = "INVALID_ARGUMENT") -> str:
    assert answer["error"]["status"] == status, answer
    return str(answer["error"]["message"])


async def test_eta_at_most_thirty_days_ahead(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(dispatch=False)
    now = emu.emulator.now_us()
    # Just inside (10 s of margin for the request's own travel), a past ETA, then just outside
    await create(emu, {"scheduleTime": format_ts(now + (30 * DAY_S - 10) * US)})
    await create(emu, {"scheduleTime": format_ts(now - 3600 * US)})
    answer = await create(emu, {"scheduleTime": format_ts(now + (30 * DAY_S + 10) * US)}, expect=400)
    message = error_message(answer)
    assert "is too far in the future" in message and "no more than 720h in the future" in message


async def test_at_most_one_hundred_tasks_per_batch(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(dispatch=False)

    def batch(count: int, prefix: str) -> dict[str, Any]:
        return {"tasks": [{"queue": "default", "task": {"name": f"{prefix}{i}"}} for i in range(count)]}

    added = await emu.call("POST", "/_emulator/v1/tasks:batchAdd", batch(100, "a"))
    assert len(added["tasks"]) == 100
    answer = await emu.call("POST", "/_emulator/v1/tasks:batchAdd", batch(101, "b"), expect=400)
    assert "at most 100" in error_message(answer)
    listed = await emu.call("GET", f"{API}/queues/default/tasks?pageSize=1000")
    assert len(listed["tasks"]) == 100  # nothing of the refused batch was added


def body_for(size: int) -> dict[str, Any]:
    """A task whose App Engine size (method + body + URL + headers) is exactly ``size`` bytes."""
    empty = task_size(task_from_json({"appEngineHttpRequest": {"relativeUri": "/work"}}, "default", "", 0))
    body = b"x" * (size - empty)
    task = {"appEngineHttpRequest": {"relativeUri": "/work", "body": base64.b64encode(body).decode()}}
    assert task_size(task_from_json(task, "default", "", 0)) == size
    return task


def too_large(answer: dict[str, Any], size: int, limit: int) -> None:
    """Production's exact message; the size and the limit in an ErrorInfo detail."""
    assert error_message(answer) == "Task size too large"
    [info] = answer["error"]["details"]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" and info["reason"] == "TASK_TOO_LARGE"
    assert (info["metadata"]["taskSize"], info["metadata"]["maxTaskSize"]) == (str(size), str(limit))


async def add_batch(emu: Handle, task: dict[str, Any], expect: int = 200) -> dict[str, Any]:
    return dict(await emu.call("POST", "/_emulator/v1/tasks:batchAdd", {"tasks": [{"task": task}]}, expect=expect))


async def post(emu: Handle, path: str, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """POST large JSON (as a file-like body: aiohttp warns about, and the suite fails on, megabytes of raw bytes)."""
    data = io.BytesIO(json.dumps(payload).encode())
    headers = {"Content-Type": "application/json", **(headers or {})}
    async with emu.http.post(emu.url + path, data=data, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_the_cloud_tasks_api_takes_one_mib(make_emulator: MakeEmulator) -> None:
    # Given the defaults (App Engine's 100 KiB for the App Engine paths)
    emu = await make_emulator(dispatch=False)
    # Then the Cloud Tasks API takes a task of exactly 1 MiB, and refuses one byte more in production's words
    path = f"{API}/queues/default/tasks"
    assert (await post(emu, path, {"task": body_for(1048576)}))[0] == 200
    status, answer = await post(emu, path, {"task": body_for(1048577)})
    assert status == 400
    too_large(answer, 1048577, 1048576)
    # And so does BatchCreateTasks, request by request
    batch = {"requests": [{"task": body_for(1048576)}, {"task": body_for(1048577)}]}
    status, op = await post(emu, f"{API}/queues/default/tasks:batchCreate", batch)
    assert status == 200, op
    assert list(op["metadata"]["failedRequests"]) == ["1"]
    assert op["metadata"]["failedRequests"]["1"]["message"] == "Task size too large"


async def test_the_app_engine_paths_keep_app_engines_limit(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(dispatch=False)
    # tasks:batchAdd (the deferred client's transactions) takes exactly 102400 bytes, not one more
    await add_batch(emu, body_for(102400))
    too_large(await add_batch(emu, body_for(102401), expect=400), 102401, 102400)
    # And so does the Cloud Tasks create path when the deferred client sends the task
    status, answer = await post(
        emu, f"{API}/queues/default/tasks", {"task": body_for(102401)}, {"X-Deferred-Client": "1"}
    )
    assert status == 400
    too_large(answer, 102401, 102400)


async def test_the_app_engine_limit_is_configurable(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(dispatch=False, max_task_size=1000)
    await add_batch(emu, body_for(1000))
    too_large(await add_batch(emu, body_for(1001), expect=400), 1001, 1000)
    # The Cloud Tasks API's limit does not move with it
    await create(emu, body_for(200_000))


async def test_queue_names(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(dispatch=False)
    parent = API.removeprefix("/v2/")
    longest = "q-" * 50
    created = await emu.call("POST", f"{API}/queues", {"name": f"{parent}/queues/{longest}"})
    assert created["name"].endswith(longest)
    for bad in (longest + "x", "under_score", "dot.ted"):
        answer = await emu.call("POST", f"{API}/queues", {"name": f"{parent}/queues/{bad}"}, expect=400)
        assert error_message(answer) == (
            f'Queue ID "{bad}" can contain only letters ([A-Za-z]), numbers ([0-9]), or hyphens (-).'
            " Queue ID must be between 1 and 100 characters."
        )


async def test_relative_uri_length(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(dispatch=False)
    await create(emu, {"appEngineHttpRequest": {"relativeUri": "/" + "u" * 2082}})
    answer = await create(emu, {"appEngineHttpRequest": {"relativeUri": "/" + "u" * 2083}}, expect=400)
    assert "at most 2083 characters" in error_message(answer)


async def test_dispatch_deadline_ranges(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(dispatch=False)
    # App Engine targets: [15s, 24h15s]
    for good in ("15s", "86415s"):
        await create(emu, {"dispatchDeadline": good})
    for bad in ("14s", "86416s"):
        answer = await create(emu, {"dispatchDeadline": bad}, expect=400)
        assert error_message(answer) == "Task.dispatchDeadline must be between [15s, 24h15s]."
    # HTTP targets: [15s, 30m]
    http = {"httpRequest": {"url": "http://127.0.0.1:9/x"}}
    await create(emu, {**http, "dispatchDeadline": "1800s"})
    answer = await create(emu, {**http, "dispatchDeadline": "1801s"}, expect=400)
    assert error_message(answer) == "Task.dispatchDeadline must be between [15s, 30m]."


def storage_task(size: int) -> dict[str, Any]:
    """A task weighing ``size`` bytes for total_storage_limit (method, URL and body)."""
    body = b"x" * (size - len("POST") - len("/work"))
    return {"appEngineHttpRequest": {"relativeUri": "/work", "body": base64.b64encode(body).decode()}}


async def test_total_storage_limit(make_emulator: MakeEmulator, tmp_path: Path) -> None:
    # Given queue.yaml's total_storage_limit of 1 KiB
    path = tmp_path / "queue.yaml"
    path.write_text("total_storage_limit: 1K\nqueue:\n- name: q\n  rate: 1/s\n")
    emu = await make_emulator(dispatch=False, queue_yaml=str(path))
    # When tasks fill it to the byte
    await create(emu, storage_task(400), queue="q")
    await create(emu, storage_task(624), queue="q")
    assert await emu.emulator.store.stored_bytes() == 1024
    # Then a task one byte over is refused with an error naming the rule
    answer = await create(emu, storage_task(10), queue="q", expect=400)
    message = error_message(answer, "FAILED_PRECONDITION")
    assert message.startswith("total_storage_limit exceeded: queue.yaml allows 1024 bytes")
    # And once room is made, tasks are accepted again
    await emu.call("POST", f"{API}/queues/q:purge", {})
    await create(emu, storage_task(1024), queue="q")
