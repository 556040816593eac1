"""Task headers: hop-by-hop, framing and invalid headers are refused at create time on every API."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import API, Handle
from deferred_emulator.header_rules import check_headers
from deferred_emulator.models import NewTask, TargetKind
from test_client_fixtures import UvicornThread

BAD_HEADERS = [
    ("Transfer-Encoding", "chunked"),
    ("transfer-encoding", "chunked"),
    ("Connection", "close"),
    ("Keep-Alive", "timeout=5"),
    ("TE", "trailers"),
    ("Trailer", "X-A"),
    ("Upgrade", "websocket"),
    ("Proxy-Authorization", "Basic eA=="),
    ("X A", "1"),
    ("", "1"),
    ("X-A:", "1"),
    ("X-A", "a\r\nX-Forged: 1"),
    ("X-A", "a\nb"),
    ("X-A", "a\x00b"),
]


def shown(name: str) -> str:
    """What the error message must contain to name the header."""
    return repr(name) if not name or " " in name or ":" in name else name


@pytest.mark.parametrize(("name", "value"), BAD_HEADERS)
async def test_rest_create_refuses_the_header_naming_it(emulator: Handle, name: str, value: str) -> None:
    for request in ("appEngineHttpRequest", "httpRequest"):
        req: dict[str, Any] = {"headers": {name: value}}
        if request == "httpRequest":
            req["url"] = "http://127.0.0.1:9/x"
        data = await emulator.call("POST", f"{API}/queues/default/tasks", {"task": {request: req}}, expect=400)
        assert data["error"]["status"] == "INVALID_ARGUMENT"
        assert shown(name) in data["error"]["message"] or name in data["error"]["message"]
    listed = await emulator.call("GET", f"{API}/queues/default/tasks")
    assert not listed.get("tasks")


@pytest.mark.parametrize(("name", "value"), BAD_HEADERS[:3] + BAD_HEADERS[-3:])
async def test_batch_add_refuses_the_whole_batch(emulator: Handle, name: str, value: str) -> None:
    good = {"queue": "default", "task": {"appEngineHttpRequest": {"relativeUri": "/ok"}}}
    bad = {"queue": "default", "task": {"appEngineHttpRequest": {"relativeUri": "/bad", "headers": {name: value}}}}
    data = await emulator.call("POST", "/_emulator/v1/tasks:batchAdd", {"tasks": [good, bad]}, expect=400)
    assert data["error"]["status"] == "INVALID_ARGUMENT"
    listed = await emulator.call("GET", f"{API}/queues/default/tasks")
    assert not listed.get("tasks")


async def test_content_length_and_host_are_still_replaced(emulator: Handle, app_server: Any) -> None:
    await emulator.add(appEngineHttpRequest={"relativeUri": "/w", "headers": {"Content-Length": "999", "Host": "evil"}})
    await emulator.drain()
    (got,) = app_server.requests
    assert got.headers["Content-Length"] == "0"
    assert got.headers["Host"] != "evil"


def test_valid_headers_pass() -> None:
    check_headers({"X-Custom": "a value with spaces\tand tab", "Content-Type": "text/plain; charset=é"})


# -- the smuggling attempt, against an app served by uvicorn's h11 parser ---------------------------


class Recorder:
    """An ASGI app that records the path and queue header of every request it runs."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.seen.append((scope["path"], headers.get("x-appengine-queuename", "")))
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def h11_app() -> Iterator[tuple[UvicornThread, Recorder]]:
    recorder = Recorder()
    server = UvicornThread(recorder, http="h11")
    yield server, recorder
    server.close()


#: A chunked body that ends early, then a second request with a forged queue name.
SMUGGLED = b"0\r\n\r\nPOST /forged HTTP/1.1\r\nHost: app\r\nX-AppEngine-QueueName: forged\r\nContent-Length: 0\r\n\r\n"


async def test_smuggling_through_transfer_encoding_is_refused_and_never_reaches_the_app(
    make_emulator: Any, h11_app: tuple[UvicornThread, Recorder]
) -> None:
    server, recorder = h11_app
    emu: Handle = await make_emulator(app_url=server.url, ignore_rate_limits=True)
    # When a task asks for Transfer-Encoding: chunked with a body that smuggles a second request
    task = {
        "appEngineHttpRequest": {
            "relativeUri": "/work",
            "headers": {"Transfer-Encoding": "chunked"},
            "body": base64.b64encode(SMUGGLED).decode(),
        }
    }
    data = await emu.call("POST", f"{API}/queues/default/tasks", {"task": task}, expect=400)
    # Then it is refused, naming the header
    assert "Transfer-Encoding" in data["error"]["message"]
    # And a task stored before the rule (put in the store directly) is delivered as one request, unframed by it
    new = NewTask(
        "default",
        "old",
        emu.emulator.now_us(),
        TargetKind.APP_ENGINE,
        "POST",
        "/work",
        {"Transfer-Encoding": "chunked", "Connection": "keep-alive"},
        SMUGGLED,
    )
    await emu.emulator.store.add_tasks([new], emu.emulator.now_us())
    result = await emu.drain()
    assert result["dispatched"] == 1
    assert recorder.seen == [("/work", "default")]


@pytest.mark.parametrize(("name", "value"), [("Transfer-Encoding", "chunked"), ("X A", "1"), ("X-A", "a\r\nb")])
async def test_rpc_http_bulk_add_refuses_the_header_naming_it(emulator: Handle, name: str, value: str) -> None:
    from test_gae_rpc import ERR, add_request, bulk_add

    add = add_request(name="t1")
    add.header.add(key=name.encode(), value=value.encode())
    response = await bulk_add(emulator, add)
    assert response.application_error.code == ERR.INVALID_REQUEST
    assert (name if name != "X A" else "'X A'") in response.application_error.detail
    listed = await emulator.call("GET", f"{API}/queues/default/tasks")
    assert not listed.get("tasks")


@pytest.mark.parametrize(("name", "value"), [("Transfer-Encoding", "chunked"), ("X A", "1"), ("X-A", "a\r\nb")])
async def test_grpc_create_task_refuses_the_header_naming_it(make_front_emulator: Any, name: str, value: str) -> None:
    import grpc
    from google.cloud import tasks_v2

    emu = await make_front_emulator(dispatch=False)
    queue = f"{API.removeprefix('/v2/')}/queues/default"
    task = tasks_v2.Task(
        app_engine_http_request=tasks_v2.AppEngineHttpRequest(relative_uri="/w", headers={name: value})
    )
    request = tasks_v2.CreateTaskRequest(parent=queue, task=task)
    async with grpc.aio.insecure_channel(emu.host) as channel:
        call = channel.unary_unary(
            "/google.cloud.tasks.v2.CloudTasks/CreateTask",
            request_serializer=lambda data: data,
            response_deserializer=lambda data: data,
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(tasks_v2.CreateTaskRequest.serialize(request), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (name if name != "X A" else "'X A'") in (raised.value.details() or "")
