"""End to end: defer() into a real emulator, which delivers to a real app server running the handler.

The app servers are wsgiref (WSGI), uvicorn (ASGI) and aiohttp, each in a thread on 127.0.0.1.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import deferred_client
import pytest
from aiohttp import web
from deferred_client import PermanentTaskFailure, SingularTaskFailure, TaskRetryOptions, defer, serialize, transaction
from deferred_client.signing import sign, verify
from test_client_fixtures import AiohttpThread, LiveEmulator, UvicornThread, WSGIThread, http_post

pytest_plugins = ["test_client_fixtures"]

_lock = threading.Lock()
CALLS: list[tuple[str, Any]] = []
ATTEMPTS: Counter[str] = Counter()
NO_BACKOFF = TaskRetryOptions(min_backoff_seconds=0, max_backoff_seconds=0, task_retry_limit=5)


def record(*args: Any, **kwargs: Any) -> None:
    with _lock:
        CALLS.append(("record", (args, kwargs)))


def record_size(data: bytes) -> None:
    with _lock:
        CALLS.append(("size", len(data)))


class Account:
    """A top-level class whose bound methods and class methods are deferred."""

    def __init__(self, owner: str) -> None:
        self.owner = owner

    def credit(self, amount: int) -> None:
        with _lock:
            CALLS.append(("credit", (self.owner, amount)))

    @classmethod
    def open(cls, owner: str) -> None:
        with _lock:
            CALLS.append(("open", (cls.__name__, owner)))


def flaky(key: str, kind: str) -> None:
    """Fails on its first attempt with the given kind of error, then succeeds."""
    with _lock:
        ATTEMPTS[key] += 1
        attempt = ATTEMPTS[key]
    if kind == "permanent":
        raise PermanentTaskFailure("give up")
    if attempt == 1:
        raise SingularTaskFailure() if kind == "singular" else ValueError("try again")
    with _lock:
        CALLS.append(("flaky", key))


def chain(depth: int) -> None:
    """Defers itself from inside a task until depth reaches 0."""
    with _lock:
        CALLS.append(("chain", depth))
    if depth:
        defer(chain, depth - 1)


async def async_task(value: str) -> None:
    with _lock:
        CALLS.append(("async", value))


@pytest.fixture(autouse=True)
def fresh() -> None:
    CALLS.clear()
    ATTEMPTS.clear()


AppServer = WSGIThread | UvicornThread | AiohttpThread


@pytest.fixture(params=["wsgi", "asgi", "aiohttp"])
def app(
    request: pytest.FixtureRequest,
    wsgi_server: Callable[..., WSGIThread],
    asgi_server: Callable[..., UvicornThread],
    aiohttp_thread: Callable[..., AiohttpThread],
) -> AppServer:
    """The deferred handler served by each kind of server."""
    if request.param == "wsgi":
        return wsgi_server(deferred_client.application)
    if request.param == "asgi":
        return asgi_server(deferred_client.asgi_application)
    aio = web.Application()
    deferred_client.add_aiohttp_route(aio)
    return aiohttp_thread(aio)


@pytest.fixture
def emulator(app: AppServer, live_emulator: Callable[..., LiveEmulator]) -> LiveEmulator:
    """An emulator delivering to ``app``."""
    return live_emulator(app_url=app.url)


def test_functions_methods_and_class_methods_run_with_their_arguments(emulator: LiveEmulator) -> None:
    # When calls of each allowed kind are deferred
    defer(record, 1, "two", key={"three": 3})
    defer(Account("ann").credit, 25)
    defer(Account.open, "bob")
    defer(async_task, "awaited")
    emulator.drain()
    # Then each ran once in the app, with its arguments
    assert sorted(CALLS, key=repr) == sorted(
        [
            ("record", ((1, "two"), {"key": {"three": 3}})),
            ("credit", ("ann", 25)),
            ("open", ("Account", "bob")),
            ("async", "awaited"),
        ],
        key=repr,
    )


def test_a_1_mib_payload_runs_and_its_entity_is_deleted(emulator: LiveEmulator) -> None:
    task = defer(record_size, b"\x00" * (1 << 20))
    assert task.entity_key is not None
    emulator.drain()
    assert CALLS == [("size", 1 << 20)]
    assert emulator.call("GET", f"/_emulator/v1/entities/{task.entity_key}")[0] == 404


def test_permanent_failure_is_not_retried(emulator: LiveEmulator) -> None:
    task = defer(flaky, "p", "permanent", _retry_options=NO_BACKOFF)
    emulator.drain()
    assert ATTEMPTS["p"] == 1
    assert emulator.task("default", task.name)[0] == 404  # done: no retry, not failed


@pytest.mark.parametrize("kind", ["singular", "exception"])
def test_singular_failures_and_exceptions_are_retried(emulator: LiveEmulator, kind: str) -> None:
    defer(flaky, kind, kind, _retry_options=NO_BACKOFF)
    emulator.drain()
    assert ATTEMPTS[kind] == 2
    assert CALLS == [("flaky", kind)]


def out_of_stock(order: int) -> None:
    raise LookupError(f"order {order}: out of stock")


def test_a_failed_call_leaves_its_traceback_in_the_attempt(emulator: LiveEmulator) -> None:
    # Given a deferred call that raises, in a task that is not retried
    task = defer(out_of_stock, 7, _retry_options=TaskRetryOptions(task_retry_limit=0))
    emulator.drain()
    # Then its attempt keeps the handler's answer: the traceback, down to the error
    status, data = emulator.call("GET", f"/_emulator/v1/queues/default/tasks/{task.name}/attempts")
    assert status == 200, data
    [attempt] = data["attempts"]
    assert attempt["status"] == 500
    answer = attempt["response"]
    assert answer.startswith("Traceback (most recent call last):\n") and "in out_of_stock" in answer
    assert answer.rstrip().endswith("LookupError: order 7: out of stock")


def test_a_task_can_defer_more_tasks(emulator: LiveEmulator) -> None:
    defer(chain, 3)
    emulator.drain()
    assert CALLS == [("chain", 3), ("chain", 2), ("chain", 1), ("chain", 0)]


def test_transactions(emulator: LiveEmulator) -> None:
    # A transaction that raises enqueues nothing
    with pytest.raises(KeyError), transaction():
        defer(record, "rolled back", _transactional=True)
        raise KeyError("abort")
    # One that exits cleanly enqueues everything, large payloads included
    with transaction():
        defer(record, "committed", _transactional=True)
        defer(record_size, b"x" * 300_000, _transactional=True)
    emulator.drain()
    assert sorted(CALLS, key=repr) == [("record", (("committed",), {})), ("size", 300_000)]


def test_post_without_the_task_header_is_forbidden(app: AppServer, configured: None) -> None:
    status, body = http_post(app.url + "/_ah/queue/deferred", serialize(record, "forged"))
    assert status == 403
    assert b"X-AppEngine-Taskname" in body
    assert CALLS == []


def test_with_a_secret_only_signed_deliveries_run(app: AppServer, live_emulator: Callable[..., LiveEmulator]) -> None:
    # Given an emulator and an app sharing a secret
    emulator = live_emulator(app_url=app.url, secret="shared-secret")
    # Then the emulator's signed deliveries run
    defer(record, "signed")
    emulator.drain()
    assert CALLS == [("record", (("signed",), {}))]
    # And requests with a bad signature (or none) are forbidden, even from loopback
    payload = serialize(record, "forged")
    for signature in (sign("wrong-secret", "default", "t1", 0, payload), None):
        headers = {
            "X-AppEngine-TaskName": "t1",
            "X-AppEngine-QueueName": "default",
            "X-AppEngine-TaskRetryCount": "0",
            "Content-Type": "application/octet-stream",
        }
        if signature:
            headers["X-Deferred-Signature"] = signature
        status, _ = http_post(app.url + "/_ah/queue/deferred", payload, headers)
        assert status == 403
    assert len(CALLS) == 1


def test_countdown_waits_for_the_clock(app: AppServer, live_emulator: Callable[..., LiveEmulator]) -> None:
    emulator = live_emulator(app_url=app.url, virtual_clock=True)
    defer(record, "later", _countdown=3600)
    emulator.drain()
    assert CALLS == []
    status, _ = emulator.call("POST", "/_emulator/v1/clock:advance", {"seconds": 3601})
    assert status == 200
    emulator.drain()
    assert CALLS == [("record", (("later",), {}))]


async def test_a_deferred_delivery_as_the_app_receives_it(
    make_emulator: Callable[..., Any], app_server: Any, configured: None
) -> None:
    # Given the in-process emulator of tests/conftest.py, signing deliveries to a recording app
    emulator = await make_emulator(app_url=app_server.url, ignore_rate_limits=True, secret="s3")
    deferred_client.configure(host=emulator.url, secret="s3")  # an http:// URL works as well as host:port
    # When a call is deferred from asyncio code
    task = await deferred_client.defer_async(record, "x", _headers={"X-Custom": "1"}, _queue="default")
    [request] = await app_server.wait_for(1)
    # Then the app receives App Engine's request: the pickled call, the task's name, a valid signature
    assert (request.method, request.path) == ("POST", "/_ah/queue/deferred")
    assert pickle.loads(request.body) == (record, ("x",), {})
    assert request.headers["X-AppEngine-TaskName"] == task.name
    assert request.headers["X-AppEngine-QueueName"] == "default"
    assert request.headers["Content-Type"] == "application/octet-stream"
    assert request.headers["X-Custom"] == "1"
    assert verify("s3", "default", task.name, 0, request.body, request.headers["X-Deferred-Signature"])


def test_without_a_secret_the_emulator_makes_one_and_the_app_fetches_it(
    app: AppServer, live_emulator: Callable[..., LiveEmulator]
) -> None:
    # Given an emulator and an app with no secret configured on either side
    emulator = live_emulator(app_url=app.url)
    # Then the emulator's deliveries, signed with the secret it made, run
    defer(record, "first")
    emulator.drain()
    assert CALLS == [("record", (("first",), {}))]
    # And the secret it hands out is the one kept in its database
    status, data = emulator.call("GET", "/_emulator/v1/secret")
    assert status == 200 and len(data["secret"]) >= 32
    # And a delivery signed for one attempt cannot be replayed as another attempt, task or queue
    payload = serialize(record, "replayed")
    good = sign(data["secret"], "default", "t1", 0, payload)
    for queue, name, retry in (("default", "t1", "1"), ("default", "t2", "0"), ("other", "t1", "0")):
        headers = {
            "X-AppEngine-TaskName": name,
            "X-AppEngine-QueueName": queue,
            "X-AppEngine-TaskRetryCount": retry,
            "X-Deferred-Signature": good,
            "Content-Type": "application/octet-stream",
        }
        status, _ = http_post(app.url + "/_ah/queue/deferred", payload, headers)
        assert status == 403, (queue, name, retry)
    assert len(CALLS) == 1


def test_target_routes_to_the_service(
    wsgi_server: Callable[..., WSGIThread], live_emulator: Callable[..., LiveEmulator]
) -> None:
    # Given a default app and a "worker" service, each recording the requests it serves
    served: list[str] = []

    def serving(label: str) -> Callable[..., Any]:
        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            served.append(label)
            return deferred_client.application(environ, start_response)

        return app

    default, worker = wsgi_server(serving("default")), wsgi_server(serving("worker"))
    emulator = live_emulator(app_url=default.url, targets={"worker": worker.url})
    # When tasks are deferred with and without a target
    defer(record, "to worker", _target="worker")
    emulator.drain()
    defer(record, "to default")
    emulator.drain()
    # Then each went to its service
    assert served == ["worker", "default"]
    assert [c[1][0][0] for c in CALLS] == ["to worker", "to default"]


def test_the_dispatcher_delivers_on_its_own(app: AppServer, live_emulator: Callable[..., LiveEmulator]) -> None:
    # Given an emulator dispatching as `deferred-emulator serve` does (no drain)
    live_emulator(app_url=app.url, dispatch=True)
    # When tasks are deferred, then they run shortly after
    for i in range(5):
        defer(record, i)
    deadline = time.monotonic() + 10
    while len(CALLS) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(c[1][0][0] for c in CALLS) == [0, 1, 2, 3, 4]
