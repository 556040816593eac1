"""Hostile web pages and oversized uploads: each request below is exactly what a browser or a careless
client would send, and each is refused while the console's and the client's own requests still work."""

from __future__ import annotations

import asyncio
import base64
import json
import pickle
from collections.abc import AsyncIterator
from typing import Any

import deferred_client
import pytest
from conftest import API, Handle, MakeEmulator, RecordingApp
from deferred_client.config import HOST_ENV
from deferred_emulator.guard import HOST_VERDICTS, HostPolicy, split_host_header

TASKS = f"{API}/queues/default/tasks"
PICKLE = base64.b64encode(pickle.dumps(("os", "system", ("echo pwned",)))).decode()
CREATE = json.dumps({"task": {"appEngineHttpRequest": {"relativeUri": "/_ah/queue/deferred", "body": PICKLE}}})
EVIL = "http://evil.example"


async def send(
    emulator: Handle, method: str, path: str, data: Any = None, headers: dict[str, str] | None = None, **kw: Any
) -> tuple[int, dict[str, Any]]:
    """Send a request as given (no JSON helper) and return its status and decoded error or body."""
    async with emulator.http.request(method, emulator.url + path, data=data, headers=headers, **kw) as resp:
        return resp.status, await resp.json(content_type=None)


async def waiting(emulator: Handle) -> list[Any]:
    return list((await emulator.call("GET", TASKS)).get("tasks", []))


@pytest.fixture
async def quiet(make_emulator: MakeEmulator, app_server: RecordingApp) -> Handle:
    """An emulator that delivers nothing by itself, so what was enqueued can be listed."""
    return await make_emulator(app_url=app_server.url, dispatch=False)


# -- cross-site requests --------------------------------------------------------------------------


async def test_a_cross_site_simple_post_cannot_enqueue(quiet: Handle) -> None:
    # Given a page on another site that POSTs a pickle as text/plain (no preflight needed)
    headers = {"Origin": EVIL, "Content-Type": "text/plain;charset=UTF-8", "Sec-Fetch-Site": "cross-site"}
    # When it reaches the emulator
    status, body = await send(quiet, "POST", TASKS, CREATE, headers)
    # Then it is refused as Google's APIs refuse, and nothing was enqueued
    assert status == 403
    assert body["error"]["status"] == "PERMISSION_DENIED"
    assert EVIL in body["error"]["message"]
    assert await waiting(quiet) == []


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
async def test_simple_content_types_are_refused_even_without_an_origin(quiet: Handle, content_type: str) -> None:
    # Given a simple request from a browser that sent no Origin (old browsers, some form posts)
    status, body = await send(quiet, "POST", TASKS, CREATE, {"Content-Type": content_type})
    # Then the JSON endpoint does not read it
    assert status == 415
    assert "application/json" in body["error"]["message"]
    assert await waiting(quiet) == []


async def test_a_body_without_a_content_type_is_refused(quiet: Handle) -> None:
    # Given fetch() with a Blob body of no type: no Content-Type header at all
    status, _ = await send(quiet, "POST", TASKS, CREATE.encode(), skip_auto_headers=["Content-Type"])
    assert status == 415
    assert await waiting(quiet) == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": EVIL},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:1"},  # another local port is another origin
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
async def test_foreign_origins_cannot_change_state(quiet: Handle, headers: dict[str, str]) -> None:
    # Given a queue with a task
    await quiet.add()
    # When pages from elsewhere try to pause, purge, reset, delete or enqueue (JSON, even after a preflight)
    attempts = [
        ("POST", f"{API}/queues/default:pause", None),
        ("POST", f"{API}/queues/default:purge", None),
        ("POST", "/_emulator/v1/reset", None),
        ("DELETE", f"{API}/queues/default", None),
        ("POST", TASKS, CREATE),
        ("PATCH", f"{API}/queues/default", '{"state": "PAUSED"}'),
    ]
    for method, path, data in attempts:
        status, body = await send(quiet, method, path, data, {**headers, "Content-Type": "application/json"})
        assert (status, body["error"]["status"]) == (403, "PERMISSION_DENIED"), (method, path)
    # Then nothing changed
    assert len(await waiting(quiet)) == 1
    queue = await quiet.call("GET", f"{API}/queues/default")
    assert queue["state"] == "RUNNING"


async def test_cross_site_reads_are_left_to_the_browser(quiet: Handle) -> None:
    # A GET changes nothing and the browser withholds the answer from another origin (no CORS headers).
    async with quiet.http.get(quiet.url + "/_emulator/v1/health", headers={"Origin": EVIL}) as resp:
        assert resp.status == 200
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_the_console_keeps_working(quiet: Handle) -> None:
    # Given what the console's own page sends: same-origin fetch() with JSON
    origin = quiet.url
    headers = {"Origin": origin, "Sec-Fetch-Site": "same-origin", "Content-Type": "application/json"}
    # When it creates, pauses, resumes and deletes
    status, task = await send(quiet, "POST", TASKS, CREATE, headers)
    assert status == 200
    assert (await send(quiet, "POST", f"{API}/queues/default:pause", "{}", headers))[0] == 200
    assert (await send(quiet, "POST", f"{API}/queues/default:resume", None, headers))[0] == 200
    assert (await send(quiet, "DELETE", f"/v2/{task['name']}", None, headers))[0] == 200
    # Then each worked, also under the name localhost
    port = origin.rsplit(":", 1)[1]
    local = {**headers, "Origin": f"http://localhost:{port}", "Host": f"localhost:{port}"}
    assert (await send(quiet, "POST", f"{API}/queues/default:pause", "{}", local))[0] == 200


async def test_the_client_keeps_working(
    make_emulator: MakeEmulator, app_server: RecordingApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the thin client pointed at the emulator, with a payload large enough to go to /entities
    emulator = await make_emulator(app_url=app_server.url, dispatch=False, max_task_size=2048)
    monkeypatch.setenv(HOST_ENV, emulator.url.removeprefix("http://"))
    deferred_client.configure()
    # When it defers a small and a large call
    small = await deferred_client.defer_async(print, "small")
    large = await deferred_client.defer_async(print, "x" * 10_000)
    report = await emulator.drain()
    # Then both were accepted and delivered
    assert small.name and large.name
    assert report["dispatched"] == 2
    entities = [r for r in app_server.requests if b"run_from_datastore" in r.body]
    assert len(entities) == 1


# -- Host (DNS rebinding) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8123", "127.0.0.1.evil.example", "localhost.evil.example", "10.0.0.8"]
)
async def test_a_foreign_host_is_refused_even_for_reads(quiet: Handle, host: str) -> None:
    # Given a page whose own name now resolves to 127.0.0.1 (DNS rebinding): same origin, foreign Host
    status, body = await send(quiet, "GET", "/_emulator/v1/health", headers={"Host": host})
    assert status == 403
    assert "--allowed-host" in body["error"]["message"]
    status, _ = await send(quiet, "POST", TASKS, CREATE, {"Host": host, "Content-Type": "application/json"})
    assert status == 403
    assert await waiting(quiet) == []


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST:9", "127.0.0.1", "127.1.2.3:80", "[::1]:8123", "app.localhost"]
)
async def test_loopback_hosts_are_answered(quiet: Handle, host: str) -> None:
    status, body = await send(quiet, "GET", "/_emulator/v1/health", headers={"Host": host})
    assert (status, body["ok"]) == (200, True)


async def test_allowed_hosts_are_answered(make_emulator: MakeEmulator) -> None:
    # Given an emulator in a container reached as "emulator" by its compose neighbours
    emulator = await make_emulator(allowed_hosts=("emulator", "Tasks.Internal."))
    # Then those names are answered, and others still refused
    for host, expected in [("emulator:8123", 200), ("tasks.internal", 200), ("other:8123", 403)]:
        assert (await send(emulator, "GET", "/_emulator/v1/health", headers={"Host": host}))[0] == expected, host


def test_host_policy() -> None:
    assert split_host_header("[::1]:80") == "::1"
    assert split_host_header("Example.COM.:80") == "example.com"
    bound = HostPolicy("192.168.1.20", ())
    assert bound.permits("192.168.1.20:8123")
    assert not bound.permits("192.168.1.21:8123")
    assert not HostPolicy("0.0.0.0", ()).permits("0.0.0.0:8123")  # the wildcard bind names no host
    assert HostPolicy("0.0.0.0", ("*",)).permits("anything.example")
    assert HostPolicy("127.0.0.1", ()).permits("")  # HTTP/1.0 tools send no Host; browsers always do


# -- sizes and raw bodies -------------------------------------------------------------------------


async def raw_exchange(url: str, head: bytes, body: bytes = b"", timeout: float = 5.0) -> bytes:
    """Send bytes on a fresh connection and return the whole answer (the server closes or we stop at 64 KiB)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head + body)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.read(65536)
    finally:
        writer.close()


async def test_a_declared_length_over_the_limit_is_refused_unread(quiet: Handle) -> None:
    # Given a request that declares a 1 GiB body but sends only a few bytes of it
    head = (
        f"POST {TASKS} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 1073741824\r\n\r\n"
    ).encode()
    # When it reaches the emulator, then the answer comes at once: nothing waited for the body
    answer = await raw_exchange(quiet.url, head, b'{"task":')
    assert answer.startswith(b"HTTP/1.1 413")
    assert b'"code": 413' in answer
    # And the emulator is fine afterwards
    assert (await quiet.call("GET", "/_emulator/v1/health"))["ok"] is True


async def test_a_chunked_body_over_the_limit_is_refused(quiet: Handle) -> None:
    # Given a JSON body with no declared length, streamed past the 16 MiB JSON limit
    async def stream() -> AsyncIterator[bytes]:
        yield b'{"task": {"name": "'
        for _ in range(17 * 16):
            yield b"a" * 65536

    # When it is sent, then it is refused (413) and nothing was stored
    headers = {"Content-Type": "application/json"}
    status, body = await send(quiet, "POST", TASKS, stream(), headers)
    assert status == 413
    assert "too large" in body["error"]["message"]
    assert await waiting(quiet) == []


async def test_entities_take_raw_bytes_only(quiet: Handle) -> None:
    path = "/_emulator/v1/entities"
    # A cross-site form or text upload cannot store a payload
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/json"):
        assert (await send(quiet, "POST", path, b"payload", {"Content-Type": content_type}))[0] == 415
    assert (await send(quiet, "POST", path, b"payload", {"Origin": EVIL}))[0] == 403
    # The client's own upload works
    status, body = await send(quiet, "POST", path, b"payload", {"Content-Type": "application/octet-stream"})
    assert status == 200
    async with quiet.http.get(f"{quiet.url}{path}/{body['key']}") as resp:
        assert await resp.read() == b"payload"


async def test_json_constants_that_are_not_numbers_are_refused(quiet: Handle) -> None:
    body = '{"rateLimits": {"maxDispatchesPerSecond": NaN}}'
    status, error = await send(quiet, "PATCH", f"{API}/queues/default", body, {"Content-Type": "application/json"})
    assert (status, error["error"]["status"]) == (400, "INVALID_ARGUMENT")


def test_host_verdicts_are_remembered_and_their_number_bounded() -> None:
    policy = HostPolicy("127.0.0.1", ())
    for _ in range(2):  # the second time from memory
        assert policy.permits("localhost:8123") and not policy.permits("evil.example:8123")
    for i in range(1000):
        assert not policy.permits(f"h{i}.example")
    assert len(policy._verdicts) <= HOST_VERDICTS
    assert policy.permits("127.0.0.1:8123") and not policy.permits("evil.example:8123")
