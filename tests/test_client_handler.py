"""The app-side handlers called directly: WSGI with an environ, ASGI with scope/receive/send, aiohttp in-process."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import deferred_client
import pytest
from aiohttp import web
from deferred_client import PermanentTaskFailure, SingularTaskFailure, serialize
from deferred_client.asgi import ASGIHandler
from deferred_client.config import SECRET_ENV
from deferred_client.config import configured as configured_as
from deferred_client.execution import TaskRequest, execute
from deferred_client.handler import WSGIHandler
from deferred_client.signing import sign, verify

pytest_plugins = ["test_client_fixtures"]

CALLS: list[tuple[str, Any]] = []
LOOP_THREADS: list[bool] = []


def record(value: Any) -> None:
    CALLS.append(("record", value))


def fail_permanently() -> None:
    raise PermanentTaskFailure("no point retrying")


def fail_once() -> None:
    raise SingularTaskFailure()


def crash() -> None:
    raise RuntimeError("boom")


def where_am_i() -> None:
    """Records whether it runs on the event loop's thread (it should not)."""
    try:
        asyncio.get_running_loop()
        LOOP_THREADS.append(True)
    except RuntimeError:
        LOOP_THREADS.append(False)


async def coroutine_task(value: Any) -> None:
    await asyncio.sleep(0)
    CALLS.append(("coroutine", value))


async def failing_coroutine() -> None:
    await asyncio.sleep(0)
    raise SingularTaskFailure()


#: The secret the app shares with the emulator in these tests (set for each test by ``fresh``).
KEY = "test-key"
AUTO = "auto"


@pytest.fixture(autouse=True)
def fresh(configured: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, KEY)
    CALLS.clear()
    LOOP_THREADS.clear()


def signed(task_name: str, body: bytes, secret: str = KEY, queue: str = "default", retry: str = "0") -> str:
    """The signature the emulator puts on the first attempt of a task in ``queue``."""
    return sign(secret, queue, task_name, retry, body)


def signed_headers(task_name: str, body: bytes, secret: str = KEY) -> dict[str, str]:
    """The headers of a signed first delivery."""
    return {
        "X-AppEngine-TaskName": task_name,
        "X-AppEngine-QueueName": "default",
        "X-AppEngine-TaskRetryCount": "0",
        "X-Deferred-Signature": signed(task_name, body, secret),
    }


# -- signing ------------------------------------------------------------------------------------


def test_signature_covers_the_queue_the_task_name_the_retry_count_and_the_body() -> None:
    signature = sign("secret", "q", "task1", 0, b"body")
    assert len(signature) == 64
    assert verify("secret", "q", "task1", "0", b"body", signature)
    assert verify(b"secret", "q", "task1", 0, b"body", signature)
    assert not verify("secret", "q", "task2", 0, b"body", signature)
    assert not verify("secret", "other", "task1", 0, b"body", signature)
    assert not verify("secret", "q", "task1", 1, b"body", signature)
    assert not verify("secret", "q", "task1", 0, b"body!", signature)
    assert not verify("other", "q", "task1", 0, b"body", signature)
    assert not verify("secret", "q", "task1", 0, b"body", "")
    assert not verify("secret", "q", "task1", 0, b"body", "\u00e9" * 64)  # non-ASCII: refused, not an error


# -- WSGI ---------------------------------------------------------------------------------------


def environ(
    body: bytes = b"",
    *,
    method: str = "POST",
    task_name: str | None = "task1",
    remote: str = "127.0.0.1",
    signature: str | None = AUTO,
    content_length: bool = True,
) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": "/_ah/queue/deferred",
        "SERVER_SOFTWARE": "Development/2.0",
        "REMOTE_ADDR": remote,
        "wsgi.input": io.BytesIO(body),
        "HTTP_X_APPENGINE_QUEUENAME": "default",
        "HTTP_X_APPENGINE_TASKRETRYCOUNT": "0",
    }
    if content_length:
        env["CONTENT_LENGTH"] = str(len(body))
    if task_name is not None:
        env["HTTP_X_APPENGINE_TASKNAME"] = task_name
    if signature == AUTO:
        signature = signed(task_name or "", body)
    if signature is not None:
        env["HTTP_X_DEFERRED_SIGNATURE"] = signature
    return env


def call_wsgi(app: Callable[..., Any], env: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"], seen["headers"] = status, headers

    body = b"".join(app(env, start_response))
    return int(seen["status"].split()[0]), dict(seen["headers"]), body


def test_wsgi_success_runs_the_call() -> None:
    status, headers, body = call_wsgi(deferred_client.application, environ(serialize(record, 7)))
    assert (status, body) == (200, b"Success")
    assert headers["Content-Type"].startswith("text/plain")
    assert headers["Content-Length"] == "7"
    assert CALLS == [("record", 7)]


def test_wsgi_without_the_task_name_header_is_forbidden(caplog: pytest.LogCaptureFixture) -> None:
    status, _, body = call_wsgi(deferred_client.application, environ(serialize(record, 1), task_name=None))
    assert status == 403
    assert b"X-AppEngine-Taskname' was not set" in body
    assert CALLS == []
    assert "XSRF" in caplog.text


def test_wsgi_permanent_failure_and_unreadable_payloads_answer_200(caplog: pytest.LogCaptureFixture) -> None:
    status, _, body = call_wsgi(deferred_client.application, environ(serialize(fail_permanently)))
    assert (status, body) == (200, b"PermanentTaskFailure")
    assert "no point retrying" in caplog.text and "Traceback" in caplog.text
    status, _, body = call_wsgi(deferred_client.application, environ(b"\x80\x05garbage"))
    assert (status, body) == (200, b"PermanentTaskFailure")


def test_wsgi_singular_failure_is_408_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="deferred_client")
    status, _, body = call_wsgi(deferred_client.application, environ(serialize(fail_once)))
    assert (status, body) == (408, b"SingularTaskFailure")
    [rec] = [r for r in caplog.records if "SingularTaskFailure" in r.getMessage()]
    assert rec.levelno == logging.DEBUG


def test_wsgi_other_exceptions_are_500_with_the_error(caplog: pytest.LogCaptureFixture) -> None:
    status, _, body = call_wsgi(deferred_client.application, environ(serialize(crash)))
    # the emulator keeps each attempt's answer, so the whole traceback goes back to it
    assert status == 500 and is_traceback_of(body.decode(), "RuntimeError: boom")
    assert "Traceback" in caplog.text


def is_traceback_of(text: str, error: str) -> bool:
    """Whether ``text`` is a Python traceback that ends with ``error``."""
    return text.startswith("Traceback (most recent call last):\n") and text.rstrip("\n").endswith("\n" + error)


def fails_with_a_long_cause() -> None:
    try:
        raise KeyError("k" * 90_000)
    except KeyError as exc:
        raise ValueError("at the bottom") from exc


def test_a_long_traceback_keeps_its_end() -> None:
    # Given a call whose traceback is about 90 KB long (its cause's message)
    reply = execute(TaskRequest("POST", {"x-appengine-taskname": "t"}, serialize(fails_with_a_long_cause), None))
    # Then the answer fits what the emulator keeps, and ends with the error
    assert reply.status == 500 and len(reply.body) <= 64 * 1024
    assert reply.text.startswith("...\n") and reply.text.rstrip().endswith("ValueError: at the bottom")


def test_in_production_the_answer_is_the_error_alone() -> None:
    # Cloud Tasks keeps no answers: the traceback stays in the app's logs
    with configured_as(backend="cloudtasks", project="p", location="l"):
        reply = execute(TaskRequest("POST", {"x-cloudtasks-taskname": "t"}, serialize(crash), None))
    assert (reply.status, reply.text) == (500, "RuntimeError: boom")


def test_wsgi_runs_coroutine_functions() -> None:
    status, _, _ = call_wsgi(deferred_client.application, environ(serialize(coroutine_task, "c")))
    assert status == 200
    assert CALLS == [("coroutine", "c")]


def test_wsgi_refuses_unsigned_deliveries_from_any_peer() -> None:
    for remote in ("10.1.2.3", "127.0.0.1", "::1", ""):
        status, _, body = call_wsgi(
            deferred_client.application, environ(serialize(record, 1), remote=remote, signature=None)
        )
        assert status == 403, remote
        assert b"X-Deferred-Signature" in body
    assert CALLS == []


def test_wsgi_needs_a_valid_signature_for_this_queue_task_and_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "s3cret")
    payload = serialize(record, "signed")
    wrong = (
        None,
        "0" * 64,
        signed("other-task", payload, "s3cret"),
        signed("task1", payload, "wrong"),
        signed("task1", payload, "s3cret", queue="other"),
        signed("task1", payload, "s3cret", retry="1"),
    )
    for signature in wrong:
        status, _, body = call_wsgi(deferred_client.application, environ(payload, signature=signature))
        assert status == 403
        assert b"X-Deferred-Signature" in body
    # A valid signature is accepted from anywhere
    good = signed("task1", payload, "s3cret")
    status, _, _ = call_wsgi(deferred_client.application, environ(payload, signature=good, remote="192.0.2.1"))
    assert status == 200
    assert CALLS == [("record", "signed")]


def test_wsgi_handler_with_its_own_secret() -> None:
    app = WSGIHandler(secret="mine")
    payload = serialize(record, 1)
    assert call_wsgi(app, environ(payload, signature=signed("task1", payload, "mine")))[0] == 200
    assert call_wsgi(app, environ(payload))[0] == 403


def test_wsgi_non_post_is_405() -> None:
    status, headers, _ = call_wsgi(deferred_client.application, environ(method="GET"))
    assert status == 405 and headers["Allow"] == "POST"


def test_wsgi_body_without_content_length() -> None:
    env = environ(serialize(record, "chunked"), content_length=False)
    env["wsgi.input_terminated"] = True
    assert call_wsgi(deferred_client.application, env)[0] == 200
    assert CALLS == [("record", "chunked")]


def test_wsgi_logs_task_headers_at_the_chosen_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="deferred_client")
    try:
        deferred_client.set_log_level(logging.WARNING)
        call_wsgi(deferred_client.application, environ(serialize(record, 1)))
    finally:
        deferred_client.set_log_level(logging.INFO)
    [rec] = [r for r in caplog.records if "X-AppEngine-TaskName:task1" in r.getMessage()]
    assert rec.levelno == logging.WARNING
    assert "X-AppEngine-QueueName:default" in rec.getMessage()


def test_wrap_wsgi_app_routes_only_the_deferred_url() -> None:
    def app(env: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"the app"]

    wrapped = deferred_client.wrap_wsgi_app(app)
    assert call_wsgi(wrapped, environ(serialize(record, 1)))[2] == b"Success"
    other = environ()
    other["PATH_INFO"] = "/"
    assert call_wsgi(wrapped, other)[2] == b"the app"


# -- ASGI ---------------------------------------------------------------------------------------


async def call_asgi(
    app: Callable[..., Awaitable[None]],
    body: bytes,
    *,
    task_name: str | None = "task1",
    client: tuple[str, int] | None = ("127.0.0.1", 5555),
    headers: list[tuple[bytes, bytes]] | None = None,
    method: str = "POST",
    sign_it: bool = True,
) -> tuple[int, dict[bytes, bytes], bytes]:
    raw = list(headers or [])
    if task_name is not None:
        raw.append((b"x-appengine-taskname", task_name.encode()))
        raw += [(b"x-appengine-queuename", b"default"), (b"x-appengine-taskretrycount", b"0")]
        if sign_it and not any(k == b"x-deferred-signature" for k, _ in raw):
            raw.append((b"x-deferred-signature", signed(task_name, body).encode()))
    scope = {"type": "http", "method": method, "path": "/_ah/queue/deferred", "headers": raw, "client": client}
    chunks = [body[: len(body) // 2], body[len(body) // 2 :]]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, end = sent
    return start["status"], dict(start["headers"]), end["body"]


async def test_asgi_success_runs_the_call_off_the_loop() -> None:
    status, headers, body = await call_asgi(deferred_client.asgi_application, serialize(record, "a"))
    assert (status, body) == (200, b"Success")
    assert headers[b"content-type"].startswith(b"text/plain")
    assert CALLS == [("record", "a")]
    await call_asgi(deferred_client.asgi_application, serialize(where_am_i))
    assert LOOP_THREADS == [False]


async def test_asgi_semantics() -> None:
    app = deferred_client.asgi_application
    assert (await call_asgi(app, serialize(record, 1), task_name=None))[0] == 403
    assert (await call_asgi(app, serialize(fail_permanently)))[:3:2] == (200, b"PermanentTaskFailure")
    assert (await call_asgi(app, b"junk"))[0] == 200
    assert (await call_asgi(app, serialize(fail_once)))[:3:2] == (408, b"SingularTaskFailure")
    status, _, body = await call_asgi(app, serialize(crash))
    assert status == 500 and is_traceback_of(body.decode(), "RuntimeError: boom")
    assert (await call_asgi(app, serialize(record, 1), sign_it=False))[0] == 403
    assert (await call_asgi(app, serialize(record, 1), client=None, sign_it=False))[0] == 403
    assert (await call_asgi(app, b"", method="GET"))[0] == 405
    assert CALLS == []


async def test_asgi_awaits_coroutines_on_the_loop() -> None:
    assert (await call_asgi(deferred_client.asgi_application, serialize(coroutine_task, 5)))[0] == 200
    assert CALLS == [("coroutine", 5)]
    assert (await call_asgi(deferred_client.asgi_application, serialize(failing_coroutine)))[0] == 408


async def test_asgi_signature() -> None:
    app = ASGIHandler(secret="k")
    payload = serialize(record, "s")
    good = [(b"x-deferred-signature", signed("task1", payload, "k").encode())]
    assert (await call_asgi(app, payload, client=("198.51.100.1", 1), headers=good))[0] == 200
    assert (await call_asgi(app, payload, headers=[(b"x-deferred-signature", b"00")]))[0] == 403
    assert CALLS == [("record", "s")]


async def test_asgi_lifespan_is_answered() -> None:
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await deferred_client.asgi_application({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


# -- aiohttp ------------------------------------------------------------------------------------


async def test_aiohttp_handler(aiohttp_client: Callable[..., Awaitable[Any]]) -> None:
    app = web.Application()
    deferred_client.add_aiohttp_route(app)
    client = await aiohttp_client(app)
    url = "/_ah/queue/deferred"
    ok = await client.post(url, data=serialize(record, "aio"), headers=signed_headers("t", serialize(record, "aio")))
    assert (ok.status, await ok.text()) == (200, "Success")
    assert (await client.post(url, data=serialize(record, 1))).status == 403
    for call, status in ((fail_permanently, 200), (fail_once, 408)):
        payload = serialize(call)
        assert (await client.post(url, data=payload, headers=signed_headers("t", payload))).status == status
    crashed = await client.post(url, data=serialize(crash), headers=signed_headers("t", serialize(crash)))
    assert crashed.status == 500 and is_traceback_of(await crashed.text(), "RuntimeError: boom")
    assert (await client.get(url)).status == 405
    await client.post(url, data=serialize(where_am_i), headers=signed_headers("t", serialize(where_am_i)))
    assert CALLS == [("record", "aio")]
    assert LOOP_THREADS == [False]


async def test_aiohttp_handler_checks_signatures(
    aiohttp_client: Callable[..., Awaitable[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, "k2")
    app = web.Application()
    app.router.add_post("/_ah/queue/deferred", deferred_client.aiohttp_handler)
    client = await aiohttp_client(app)
    payload = serialize(record, "ok")
    headers = signed_headers("t", payload, "k2")
    assert (await client.post("/_ah/queue/deferred", data=payload, headers=headers)).status == 200
    headers["X-Deferred-Signature"] = signed("t", b"other", "k2")
    assert (await client.post("/_ah/queue/deferred", data=payload, headers=headers)).status == 403
    assert CALLS == [("record", "ok")]


def test_a_blocking_task_does_not_block_the_asgi_loop() -> None:
    # Given a task that blocks until released, running through the ASGI handler
    async def main() -> None:
        started = threading.Event()
        release = threading.Event()
        BLOCKERS[:] = [started, release]
        running = asyncio.create_task(call_asgi(deferred_client.asgi_application, serialize(block)))
        # When the loop does other work meanwhile, then it is not stuck behind the task
        await asyncio.to_thread(started.wait, 5)
        await asyncio.sleep(0)
        release.set()
        assert (await running)[0] == 200

    asyncio.run(main())


BLOCKERS: list[threading.Event] = []


def block() -> None:
    started, release = BLOCKERS
    started.set()
    assert release.wait(5)


async def test_aiohttp_handler_refuses_unsigned_deliveries_even_from_loopback() -> None:
    # Given an unsigned delivery to the aiohttp handler from a loopback peer
    from unittest import mock

    from aiohttp.test_utils import make_mocked_request

    transport = mock.Mock()
    transport.get_extra_info.return_value = ("127.0.0.1", 4000)
    payload = serialize(record, "local")

    async def body() -> bytes:
        return payload

    request = make_mocked_request(
        "POST", "/_ah/queue/deferred", headers={"X-AppEngine-TaskName": "t"}, transport=transport
    )
    request.read = body  # type: ignore[method-assign]
    # When it is handled, then it is refused and nothing ran
    response = await deferred_client.aiohttp_handler(request)
    assert response.status == 403
    assert CALLS == []
    # And the same delivery signed with the app's secret runs, from any peer
    transport.get_extra_info.return_value = ("203.0.113.9", 4000)
    good = make_mocked_request("POST", "/_ah/queue/deferred", headers=signed_headers("t", payload), transport=transport)
    good.read = body  # type: ignore[method-assign]
    assert (await deferred_client.aiohttp_handler(good)).status == 200
    assert CALLS == [("record", "local")]
