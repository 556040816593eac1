"""Conformance: the REST API answers, echoes and dispatches as production Cloud Tasks did.

The goldens in tests/conformance/ were recorded against real Cloud Tasks (see the README there).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import API, Handle, MakeEmulator

GOLDEN = Path(__file__).parent / "conformance"
#: gRPC code name → (HTTP status, REST error status) as the REST API answers (conformance README).
CODES: dict[str, tuple[int, str | None]] = {
    "OK": (200, None),
    "InvalidArgument": (400, "INVALID_ARGUMENT"),
    "FailedPrecondition": (400, "FAILED_PRECONDITION"),
    "PermissionDenied": (403, "PERMISSION_DENIED"),
    "NotFound": (404, "NOT_FOUND"),
    "AlreadyExists": (409, "ALREADY_EXISTS"),
}
PARENT = API.removeprefix("/v2/")
QUEUE_ID = "conformance-q"
TASK_ID = "conformance-t"
QUEUE_PATH = f"{PARENT}/queues/{QUEUE_ID}"
TASK_PATH = f"{QUEUE_PATH}/tasks/{TASK_ID}"
MISMATCH_PARENT = PARENT.replace("/locations/us-central1", "/locations/us-east1")
PLACEHOLDERS = {
    "{mismatch_parent}": MISMATCH_PARENT,
    "{task_path}": TASK_PATH,
    "{queue_path}": QUEUE_PATH,
    "{parent}": PARENT,
    "{queue_id}": QUEUE_ID,
    "{task_id}": TASK_ID,
}
#: Cloud Tasks v2's task size limit (about 1 MiB; App Engine's 100 KiB is --max-task-size).
CLOUD_TASKS_MAX_TASK_SIZE = 1048576


def load(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text(encoding="utf-8"))


def fill(template: str) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        template = template.replace(placeholder, value)
    return template


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- errors.json --------------------------------------------------------------------------------

Step = tuple[str, str, Any]
Q_URL = f"{API}/queues/{QUEUE_ID}"
T_URL = f"{Q_URL}/tasks/{TASK_ID}"


def queue(**fields: Any) -> Step:
    return ("POST", f"{API}/queues", {"name": QUEUE_PATH, **fields})


def task(**fields: Any) -> Step:
    return ("POST", f"{Q_URL}/tasks", {"task": fields})


def http_task(url: str = "https://example.com/", **fields: Any) -> Step:
    return task(httpRequest={"url": url}, **fields)


def app_engine_task(**fields: Any) -> Step:
    return task(appEngineHttpRequest={"relativeUri": "/work"}, **fields)


CREATE_QUEUE = queue()
DELETE_QUEUE: Step = ("DELETE", Q_URL, None)
TOO_BIG = b64(b"x" * (1024 * 1024 + 4 * 1024))  # 1 MiB + 4 KiB, as recorded

#: The REST requests of each case: setup steps (each must answer 200), then the request checked.
#: ``queue/create/invalid-parent`` is left out on purpose: its request names a parent of its own
#: ("not-a-valid-parent") besides the queue, and over REST the parent *is* the URL path, so the
#: request production answered cannot be sent to a REST server.
CASES: dict[str, list[Step]] = {
    "queue/create/already-exists": [CREATE_QUEUE, CREATE_QUEUE],
    "queue/create/backoff-order": [queue(retryConfig={"minBackoff": "10s", "maxBackoff": "5s"})],
    "queue/create/burst-negative": [queue(rateLimits={"maxBurstSize": -1})],
    "queue/create/concurrent-negative": [queue(rateLimits={"maxConcurrentDispatches": -1})],
    "queue/create/concurrent-too-high": [queue(rateLimits={"maxConcurrentDispatches": 5001})],
    "queue/create/invalid-name": [("POST", f"{API}/queues", {"name": "not-a-valid-queue-name"})],
    "queue/create/max-attempts-below-minus-one": [queue(retryConfig={"maxAttempts": -2})],
    "queue/create/max-doublings-negative": [queue(retryConfig={"maxDoublings": -1})],
    "queue/create/min-backoff-negative": [queue(retryConfig={"minBackoff": "-1s"})],
    "queue/create/parent-mismatch": [("POST", f"{API}/queues", {"name": f"{MISMATCH_PARENT}/queues/{QUEUE_ID}"})],
    "queue/create/rate-negative": [queue(rateLimits={"maxDispatchesPerSecond": -1})],
    "queue/create/rate-too-high": [queue(rateLimits={"maxDispatchesPerSecond": 501})],
    "queue/create/recently-deleted": [CREATE_QUEUE, DELETE_QUEUE, CREATE_QUEUE],
    "queue/delete/not-found": [DELETE_QUEUE],
    "queue/get/not-found": [("GET", Q_URL, None)],
    "queue/get/recently-deleted": [CREATE_QUEUE, DELETE_QUEUE, ("GET", Q_URL, None)],
    "queue/pause/not-found": [("POST", f"{Q_URL}:pause", {})],
    "queue/purge/not-found": [("POST", f"{Q_URL}:purge", {})],
    "queue/resume/not-found": [("POST", f"{Q_URL}:resume", {})],
    "task/create/already-exists": [CREATE_QUEUE, http_task(name=TASK_PATH), http_task(name=TASK_PATH)],
    "task/create/appengine-deadline-one-hour": [CREATE_QUEUE, app_engine_task(dispatchDeadline="3600s")],
    "task/create/appengine-deadline-too-long": [CREATE_QUEUE, app_engine_task(dispatchDeadline="90000s")],
    "task/create/appengine-too-large": [
        CREATE_QUEUE,
        task(appEngineHttpRequest={"relativeUri": "/work", "body": TOO_BIG}),
    ],
    "task/create/deadline-too-long": [CREATE_QUEUE, http_task(dispatchDeadline="1860s")],
    "task/create/deadline-too-short": [CREATE_QUEUE, http_task(dispatchDeadline="5s")],
    "task/create/http-too-large": [CREATE_QUEUE, task(httpRequest={"url": "https://example.com/", "body": TOO_BIG})],
    "task/create/invalid-name": [CREATE_QUEUE, http_task(name=f"{QUEUE_PATH}/tasks/not a valid id")],
    "task/create/invalid-url-bad-escape": [CREATE_QUEUE, http_task("http://example.com/%zz")],
    "task/create/invalid-url-empty": [CREATE_QUEUE, http_task("")],
    "task/create/invalid-url-no-scheme": [CREATE_QUEUE, http_task("example.com/path")],
    "task/create/invalid-url-non-http-scheme": [CREATE_QUEUE, http_task("ftp://example.com/")],
    "task/create/queue-mismatch": [CREATE_QUEUE, http_task(name=f"{QUEUE_PATH}-other/tasks/{TASK_ID}")],
    "task/create/queue-not-found": [http_task()],
    "task/create/queue-recently-deleted": [CREATE_QUEUE, DELETE_QUEUE, http_task()],
    "task/create/schedule-too-far": [CREATE_QUEUE, http_task(scheduleTime="2100-01-01T00:00:00Z")],
    "task/delete/not-found": [CREATE_QUEUE, ("DELETE", T_URL, None)],
    "task/get/not-found": [CREATE_QUEUE, ("GET", T_URL, None)],
    "task/get/recently-deleted": [
        CREATE_QUEUE,
        http_task(name=TASK_PATH),
        ("DELETE", T_URL, None),
        ("GET", T_URL, None),
    ],
    "task/run/not-found": [CREATE_QUEUE, ("POST", f"{T_URL}:run", {})],
}
#: Not expressible over REST (the parent is the URL path; see above CASES): left out, not skipped.
NOT_OVER_REST = {"queue/create/invalid-parent"}
ERRORS = load("errors.json")


async def send(emu: Handle, method: str, path: str, body: Any) -> tuple[int, Any]:
    # A file-like body: aiohttp warns about (and the suite's filterwarnings fails on) 1 MiB of raw bytes.
    data = None if body is None else io.BytesIO(json.dumps(body).encode())
    headers = {} if body is None else {"Content-Type": "application/json"}
    async with emu.http.request(method, emu.url + path, data=data, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


def test_every_golden_error_case_is_exercised() -> None:
    assert {case["name"] for case in ERRORS} - NOT_OVER_REST == set(CASES)


@pytest.mark.parametrize("case", [c for c in ERRORS if c["name"] in CASES], ids=lambda c: str(c["name"]))
async def test_error_case_answers_as_production(make_emulator: MakeEmulator, case: dict[str, Any]) -> None:
    too_large = case["category"] == "task-too-large"
    # The Cloud Tasks API's own limit, about 1 MiB, applies whatever --max-task-size (App Engine's) says.
    emu = await make_emulator(dispatch=False)
    *setup, last = CASES[case["name"]]
    for step in setup:
        status, answer = await send(emu, *step)
        assert status == 200, (step, answer)
    status, answer = await send(emu, *last)
    http_status, rpc_status = CODES[case["code"]]
    assert status == http_status, answer
    if rpc_status is None:
        assert "error" not in answer
        return
    assert answer["error"]["code"] == http_status
    assert answer["error"]["status"] == rpc_status
    assert answer["error"]["message"] == fill(case["template"])
    details = answer["error"].get("details", [])
    if too_large:
        # What the emulator adds (the measured size and the limit) is a detail of its own, after production's.
        *details, info = details
        assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" and info["domain"] == "deferred-emulator"
        assert int(info["metadata"]["taskSize"]) > int(info["metadata"]["maxTaskSize"]) == CLOUD_TASKS_MAX_TASK_SIZE
    # And the google.rpc.Help links production attaches come along, in their REST JSON form
    assert details == [help_detail(d) for d in case.get("details", [])]


def help_detail(detail: dict[str, str]) -> dict[str, Any]:
    """A recorded ``*errdetails.Help`` (Go prototext) as REST JSON."""
    assert detail["type"] == "*errdetails.Help", detail
    found = re.fullmatch(r'links:\{description:"([^"]*)" url:"([^"]*)"\}', detail["template"])
    assert found, detail
    links = [{"description": found[1], "url": found[2]}]
    return {"@type": "type.googleapis.com/google.rpc.Help", "links": links}


# -- happypath.json -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", load("happypath.json"), ids=lambda c: str(c["name"]))
async def test_created_task_echoes_headers_and_body_as_production(
    make_emulator: MakeEmulator, case: dict[str, Any]
) -> None:
    emu = await make_emulator(dispatch=False)
    body = case["createFull"]["body"]  # the recorded task body, base64 as sent
    if case["requestType"] == "appengine":
        field, request = "appEngineHttpRequest", {"relativeUri": "/work", "headers": case["sent"], "body": body}
    else:
        field, request = "httpRequest", {"url": "https://example.com/", "headers": case["sent"], "body": body}
    created = await emu.call("POST", f"{API}/queues/default/tasks", {"task": {field: request}, "responseView": "FULL"})
    short = created["name"].rsplit("/", 1)[1]
    stages = {
        "createFull": created,
        "getBasic": await emu.call("GET", f"{API}/queues/default/tasks/{short}?responseView=BASIC"),
        "getFull": await emu.call("GET", f"{API}/queues/default/tasks/{short}?responseView=FULL"),
    }
    for stage, answer in stages.items():
        recorded, ours = case[stage], answer[field]
        assert ours["headers"] == recorded["headers"], stage  # keys verbatim: no case folding
        if "body" in recorded:
            assert base64.b64decode(ours.get("body", "")) == base64.b64decode(recorded["body"]), stage
        else:
            assert "body" not in ours, stage


# -- dispatch.json ------------------------------------------------------------------------------

#: The task headers the recording kept (besides User-Agent), under either prefix. Other headers
#: (the task's own, Content-Type, X-AppEngine-User-IP …) were not recorded, so are not compared.
TASK_HEADERS = ("queuename", "taskname", "taskretrycount", "taskexecutioncount", "tasketa")
TASK_HEADERS += ("taskpreviousresponse", "taskretryreason")
KEPT = {"user-agent"} | {prefix + name for prefix in ("x-appengine-", "x-cloudtasks-") for name in TASK_HEADERS}
#: Run-specific values the recording replaced by placeholders: present, value not compared.
PLACEHOLDER_SUFFIXES = ("-queuename", "-taskname", "-tasketa")
RETRY = {"maxAttempts": 10, "minBackoff": "1s", "maxBackoff": "5s", "maxDoublings": 1}


def masked(headers: dict[str, str] | list[tuple[str, str]]) -> dict[str, str]:
    """The kept headers, names lowercased, placeholder values replaced by a marker."""
    items = headers.items() if isinstance(headers, dict) else headers
    out: dict[str, str] = {}
    for name, value in items:
        low = name.lower()
        if low in KEPT:
            assert low not in out, f"{name} sent twice"
            out[low] = "<present>" if low.endswith(PLACEHOLDER_SUFFIXES) else value
    return out


@pytest.mark.parametrize("case", load("dispatch.json"), ids=lambda c: str(c["name"]))
async def test_dispatch_headers_attempt_by_attempt_as_production(
    make_emulator: MakeEmulator, aiohttp_server: Callable[..., Awaitable[TestServer]], case: dict[str, Any]
) -> None:
    # The scripted receiver: the recorded answer for each retry count; 0 means stall past the deadline.
    answers = {attempt["attempt"]: attempt["status"] for attempt in case["attempts"]}
    received: list[list[tuple[str, str]]] = []
    release = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        received.append([(k.decode(), v.decode()) for k, v in request.raw_headers])
        count = request.headers.get("X-AppEngine-TaskRetryCount") or request.headers.get("X-CloudTasks-TaskRetryCount")
        status = answers.get(int(count), 200) if count and count.isdigit() else 400
        if status == 0:
            await release.wait()  # held until the test ends, long after the dispatch deadline
            status = 200
        if 300 <= status < 400:
            return web.Response(status=status, headers={"Location": "/elsewhere"})
        return web.Response(status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receive)
    server = await aiohttp_server(app, host="127.0.0.1")
    receiver_url = str(server.make_url("")).rstrip("/")
    stalls = 0 in answers.values()
    # Production waited out a 15 s deadline; a short one (real time) stands in for it. Backoff waits on
    # the virtual clock.
    emu = await make_emulator(
        app_url=receiver_url, virtual_clock=True, dispatch=False, dispatch_deadline_s=0.5 if stalls else 600.0
    )
    try:
        await emu.call("POST", f"{API}/queues", {"name": QUEUE_PATH, "retryConfig": RETRY})
        body = b64(b"{}")
        if case["requestType"].startswith("http"):
            request = {"httpRequest": {"url": f"{receiver_url}/http", "httpMethod": "POST", "body": body}}
        else:
            request = {"appEngineHttpRequest": {"relativeUri": "/work", "httpMethod": "POST", "body": body}}
        created = await emu.call("POST", f"{API}/queues/{QUEUE_ID}/tasks", {"task": request})
        short = created["name"].rsplit("/", 1)[1]
        for number in range(len(case["attempts"]) + 1):
            report = await emu.drain(queues=[QUEUE_ID])
            assert report["dispatched"] == (1 if number < len(case["attempts"]) else 0), (number, report)
            await emu.call("POST", "/_emulator/v1/clock:advance", {"seconds": 5})  # maxBackoff
    finally:
        release.set()
    assert [masked(headers) for headers in received] == [masked(a["headers"]) for a in case["attempts"]]
    for headers in received:
        values = {k.lower(): v for k, v in headers}
        prefix = "x-cloudtasks-" if case["requestType"].startswith("http") else "x-appengine-"
        assert (values[prefix + "queuename"], values[prefix + "taskname"]) == (QUEUE_ID, short)
    await emu.call("GET", f"{API}/queues/{QUEUE_ID}/tasks/{short}", expect=404)  # done: no longer there
