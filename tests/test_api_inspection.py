"""The inspection endpoints: task lists by state, failed tasks and retry, attempts, payloads, entities."""

from __future__ import annotations

import base64
import pickle
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from conftest import API, Handle, MakeEmulator, RecordingApp
from deferred_client.serialize import serialize

V1 = "/_emulator/v1"
GIVE_UP_AFTER_TWO = {"maxAttempts": 2, "minBackoff": "0s", "maxBackoff": "0s"}


def send_report(user_id: int, *, subject: str) -> None:
    """A top-level function, deferred by the payload tests (never called: nothing is unpickled)."""


class Account:
    """A class whose bound method is deferred."""

    def __init__(self, owner: str) -> None:
        self.owner = owner

    def credit(self, amount: int) -> None:
        """Never called here."""


def in_hours(hours: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def fail_twice(emulator: Handle, app_server: RecordingApp, name: str, queue: str = "default") -> None:
    """Given a task whose two allowed attempts both answer 500, it ends FAILED."""
    app_server.statuses += [500, 503]
    await emulator.add(queue, name=name, retryConfig=GIVE_UP_AFTER_TWO)
    await emulator.drain()


@pytest.fixture
async def held(make_emulator: MakeEmulator, app_server: RecordingApp) -> Handle:
    """An emulator that delivers only on drain or run, to the recording app."""
    return await make_emulator(app_url=app_server.url, dispatch=False, ignore_rate_limits=True, db_path=":memory:")


# -- task lists -----------------------------------------------------------------------------------


async def test_tasks_are_listed_soonest_or_newest_first_and_paged(held: Handle) -> None:
    # Given three tasks with different ETAs
    for i, hours in enumerate([3, 1, 2]):
        await held.add(name=f"t{i}", scheduleTime=in_hours(hours))
    # When listing two at a time, soonest first
    first = await held.call("GET", f"{V1}/queues/default/tasks?pageSize=2")
    second = await held.call("GET", f"{V1}/queues/default/tasks?pageSize=2&pageToken={first['nextPageToken']}")
    # Then the pages follow the ETA order and the last has no next token
    assert [t["name"] for t in first["tasks"]] == ["t1", "t2"]
    assert [t["name"] for t in second["tasks"]] == ["t0"] and "nextPageToken" not in second
    assert first["tasks"][0]["state"] == "WAITING" and first["tasks"][0]["due"] is False
    # And newest first reverses it
    newest = await held.call("GET", f"{V1}/queues/default/tasks?order=newest")
    assert [t["name"] for t in newest["tasks"]] == ["t0", "t2", "t1"]


async def test_tasks_filter_by_state(held: Handle, app_server: RecordingApp) -> None:
    # Given a failed task and a waiting one
    await fail_twice(held, app_server, "broken")
    await held.add(name="later", scheduleTime=in_hours(1))
    # When filtering
    failed = await held.call("GET", f"{V1}/queues/default/tasks?state=failed")
    waiting = await held.call("GET", f"{V1}/queues/default/tasks?state=waiting")
    both = await held.call("GET", f"{V1}/queues/default/tasks?state=waiting,failed")
    # Then each state shows its own tasks
    assert [t["name"] for t in failed["tasks"]] == ["broken"]
    assert [t["name"] for t in waiting["tasks"]] == ["later"]
    assert {t["name"] for t in both["tasks"]} == {"broken", "later"}


@pytest.mark.parametrize(
    "query, status, words",
    [
        ("state=sleeping", 400, "Unknown task state"),
        ("order=random", 400, "Unknown order"),
        ("pageToken=%25%25", 400, "page token"),
        ("pageSize=-1", 400, "pageSize"),
    ],
)
async def test_task_list_rejects_bad_parameters(held: Handle, query: str, status: int, words: str) -> None:
    # When a list is asked for with a bad parameter, Then it is a clear 400
    data = await held.call("GET", f"{V1}/queues/default/tasks?{query}", expect=status)
    assert words in data["error"]["message"] and data["error"]["status"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    "path, status",
    [
        ("/queues/nope/tasks", 404),
        ("/queues/bad_queue!/tasks", 400),
        ("/queues/nope/failed", 404),
        ("/tasks/ghost", 404),
        ("/tasks/bad%20name", 400),
        ("/tasks/ghost/attempts", 404),
        ("/tasks/ghost/payload", 404),
        ("/queues/default/tasks/ghost", 404),
        ("/queues/nope/tasks/ghost/attempts", 404),
        ("/tasks/ghost/payload?queue=nope", 404),
    ],
)
async def test_unknown_or_bad_ids_are_clear_errors(held: Handle, path: str, status: int) -> None:
    # When an id is unknown or malformed, Then the answer is Google-style JSON with the right status
    data = await held.call("GET", V1 + path, expect=status)
    assert data["error"]["code"] == status and data["error"]["message"]


# -- one task ---------------------------------------------------------------------------------------


async def test_a_bare_task_name_is_found_across_queues(held: Handle) -> None:
    # Given a task in a second queue
    await held.call("POST", f"{API}/queues", {"name": f"{API[4:]}/queues/mail"})
    await held.add("mail", name="hello", appEngineHttpRequest={"relativeUri": "/m", "headers": {"X-Trace": "7"}})
    # When it is asked for by name alone, and with its queue
    alone = await held.call("GET", f"{V1}/tasks/hello")
    scoped = await held.call("GET", f"{V1}/queues/mail/tasks/hello")
    # Then both find it, with its headers
    assert alone["queue"] == "mail" == scoped["queue"]
    assert alone["resource"]["appEngineHttpRequest"]["headers"]["X-Trace"] == "7"
    # And in a queue that does not hold it, it is 404
    await held.call("GET", f"{V1}/tasks/hello?queue=default", expect=404)


async def test_a_name_in_two_queues_is_ambiguous(held: Handle) -> None:
    # Given the same task name in two queues
    await held.call("POST", f"{API}/queues", {"name": f"{API[4:]}/queues/other"})
    await held.add("default", name="twin")
    await held.add("other", name="twin")
    # When it is asked for alone
    data = await held.call("GET", f"{V1}/tasks/twin/attempts", expect=400)
    # Then the error names both queues, and ?queue= settles it
    assert "default, other" in data["error"]["message"]
    assert (await held.call("GET", f"{V1}/tasks/twin/attempts?queue=other"))["queue"] == "other"


# -- failed tasks -----------------------------------------------------------------------------------


async def test_failed_tasks_keep_their_attempts(held: Handle, app_server: RecordingApp) -> None:
    # Given a task that failed both of its attempts
    await fail_twice(held, app_server, "broken")
    # When the failed tasks and the attempts are read
    failed = await held.call("GET", f"{V1}/queues/default/failed")
    attempts = await held.call("GET", f"{V1}/queues/default/tasks/broken/attempts")
    # Then both attempts are there, with status, reason, latency and the response excerpt
    (task,) = failed["tasks"]
    assert task["name"] == "broken" and task["state"] == "FAILED"
    assert task["lastAttempt"]["status"] == 503 and task["lastAttempt"]["responseExcerpt"] == "answered 503"
    assert [a["status"] for a in task["attempts"]] == [500, 503] == [a["status"] for a in attempts["attempts"]]
    first = attempts["attempts"][0]
    assert first["number"] == 1 and first["retryReason"] == "App Error" and first["latencyMs"] >= 0
    assert first["responseExcerpt"] == "answered 500" and first["dispatchTime"].endswith("Z")


async def test_retry_all_failed_tasks(held: Handle, app_server: RecordingApp) -> None:
    # Given two failed tasks
    await fail_twice(held, app_server, "a")
    await fail_twice(held, app_server, "b")
    # When all are retried and the app now answers 200
    data = await held.call("POST", f"{V1}/queues/default/failed:retry", {})
    report = await held.drain()
    # Then both are delivered again and none is left failed
    assert data == {"retried": 2} and report["succeeded"] == 2
    assert (await held.call("GET", f"{V1}/queues/default/failed"))["tasks"] == []


async def test_retry_named_failed_tasks(held: Handle, app_server: RecordingApp) -> None:
    # Given two failed tasks
    await fail_twice(held, app_server, "a")
    await fail_twice(held, app_server, "b")
    # When one is retried by name (single form), then a list naming it again
    assert await held.call("POST", f"{V1}/queues/default/failed:retry", {"task": "a"}) == {"retried": 1}
    # Then a task that is no longer failed cannot be retried, and the other one stays failed
    data = await held.call("POST", f"{V1}/queues/default/failed:retry", {"tasks": ["b", "a"]}, expect=400)
    assert "has not failed" in data["error"]["message"]
    assert [t["name"] for t in (await held.call("GET", f"{V1}/queues/default/failed"))["tasks"]] == ["b"]
    assert await held.call("POST", f"{V1}/queues/default/failed:retry", {"tasks": ["b"]}) == {"retried": 1}


@pytest.mark.parametrize(
    "body, status",
    [
        ({"tasks": "a"}, 400),
        ({"tasks": [1]}, 400),
        ({"tasks": ["no such"]}, 400),
        ({"tasks": ["ghost"]}, 404),
        ({"task": "ghost"}, 404),
    ],
)
async def test_retry_rejects_bad_bodies(held: Handle, body: dict[str, Any], status: int) -> None:
    # When a retry names tasks badly, Then it is a clear 4xx
    data = await held.call("POST", f"{V1}/queues/default/failed:retry", body, expect=status)
    assert data["error"]["code"] == status


async def test_retry_needs_a_json_body_type(held: Handle) -> None:
    # When the body is not declared as JSON, Then it is refused (415)
    async with held.http.post(f"{held.url}{V1}/queues/default/failed:retry", data=b"{}") as resp:
        assert resp.status == 415
    await held.call("POST", f"{V1}/queues/nope/failed:retry", {}, expect=404)


# -- payloads ---------------------------------------------------------------------------------------


async def test_payload_of_a_deferred_call_is_described_without_unpickling(held: Handle) -> None:
    # Given a deferred call of a function in a module the emulator cannot import
    body = serialize(send_report, 42, subject="weekly")
    await held.add(name="d", appEngineHttpRequest={"relativeUri": "/_ah/queue/deferred", "body": b64(body)})
    # When its payload is described
    data = await held.call("GET", f"{V1}/tasks/d/payload")
    # Then the callable's path and the arguments are shown
    assert data["format"] == "deferred" and data["size"] == len(body)
    assert data["callable"] == f"{__name__}.send_report"
    assert data["args"] == ["42"] and data["kwargs"] == {"subject": "'weekly'"}
    assert data["call"] == f"{__name__}.send_report(42, subject='weekly')"


async def test_payload_of_a_bound_method(held: Handle) -> None:
    # Given a deferred bound method
    body = serialize(Account("ann").credit, 5)
    await held.add(name="m", appEngineHttpRequest={"relativeUri": "/_ah/queue/deferred", "body": b64(body)})
    # When described, Then the instance, its state and the method are shown
    data = await held.call("GET", f"{V1}/queues/default/tasks/m/payload")
    assert data["method"] == "credit" and data["boundTo"] == f"<{__name__}.Account owner='ann'>"
    assert data["call"] == f"<{__name__}.Account owner='ann'>.credit(5)"


async def test_payload_of_a_large_deferred_names_its_entity(held: Handle) -> None:
    # Given a payload stored as an entity and a task that runs it from there
    inner = serialize(send_report, 7, subject="x" * 10)
    async with held.http.post(f"{held.url}{V1}/entities", data=inner) as resp:
        key = (await resp.json())["key"]
    outer = pickle.dumps((pickle_ref(), (key,), {}))
    await held.add(name="big", appEngineHttpRequest={"relativeUri": "/_ah/queue/deferred", "body": b64(outer)})
    # When described
    data = await held.call("GET", f"{V1}/tasks/big/payload")
    # Then the entity's own call is described too
    assert data["entityKey"] == key
    assert data["entity"]["call"] == f"{__name__}.send_report(7, subject='xxxxxxxxxx')"
    # And the entity listing shows it, attached to the task
    listing = await held.call("GET", f"{V1}/entities")
    assert [(e["key"], e["size"]) for e in listing["entities"]] == [(key, len(inner))]
    assert listing["entities"][0]["taskId"] is not None


def pickle_ref() -> Any:
    from deferred_client import run_from_datastore

    return run_from_datastore


@pytest.mark.parametrize(
    "body, fmt, excerpt",
    [
        (b"", "empty", None),
        (b'{"hello": "world"}', "text", '{"hello": "world"}'),
        (b"\xff\x00\x01", "bytes", "ff 00 01"),
        (b"\x80\x05garbage", "pickle", "80 05 67 61 72 62 61 67 65"),
    ],
)
async def test_payload_of_other_bodies(held: Handle, body: bytes, fmt: str, excerpt: str | None) -> None:
    # Given a task whose body is not a deferred call
    await held.add(name="raw", appEngineHttpRequest={"relativeUri": "/raw", "body": b64(body)})
    # When described, Then it is shown as what it is, with a short excerpt
    data = await held.call("GET", f"{V1}/tasks/raw/payload")
    assert data["format"] == fmt and data["size"] == len(body)
    assert data.get("excerpt") == excerpt


# -- health and stats -------------------------------------------------------------------------------


async def test_health_answers_ok_and_the_version(held: Handle) -> None:
    # When health is asked for, Then it is ok with the package version
    from deferred_emulator import __version__

    data = await held.call("GET", f"{V1}/health")
    assert data["ok"] is True and data["version"] == __version__


async def test_stats_count_each_queue(held: Handle, app_server: RecordingApp) -> None:
    # Given a failed task, a delivered one, a due one and a future one in `default`
    await fail_twice(held, app_server, "broken")
    await held.add(name="done")
    await held.drain()
    await held.add(name="due")
    await held.add(name="later", scheduleTime=in_hours(2))
    # When the stats are read
    data = await held.call("GET", f"{V1}/stats")
    # Then the counts, the last minute and the oldest ETA are there
    (default,) = [q for q in data["queues"] if q["id"] == "default"]
    stats = default["stats"]
    assert (stats["waiting"], stats["due"], stats["inFlight"], stats["failed"]) == (2, 1, 0, 1)
    assert (stats["succeededLastMinute"], stats["failedLastMinute"]) == (1, 2)
    assert stats["oldestEstimatedArrivalTime"] <= data["now"]
    assert default["state"] == "RUNNING" and default["rateLimits"]["maxDispatchesPerSecond"] == 5
