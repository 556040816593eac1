"""End to end: the production configuration (DEFERRED_BACKEND=cloudtasks) against the emulator acting as Cloud
Tasks over REST, with a stand-in credentials object, and gcp-storage-emulator as Cloud Storage.

The app here runs as if on App Engine (GAE_ENV set), so App Engine-target deliveries are trusted by their
queue header; HTTP targets with OIDC tokens are in test_client_oidc.py.
"""

from __future__ import annotations

import base64
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import deferred_client
import pytest
from deferred_client import (
    ConfigurationError,
    PermanentTaskFailure,
    TaskAlreadyExistsError,
    TaskRetryOptions,
    TombstonedTaskError,
    defer,
    transaction,
)
from deferred_client.transport import SyncTransport
from test_client_fixtures import WSGIThread, http_post
from test_client_production_fixtures import BUCKET, TOKEN, CloudTasksStandIn, FixedToken, StorageEmulator, production

pytest_plugins = ["test_client_fixtures", "test_client_production_fixtures"]

_lock = threading.Lock()
CALLS: list[tuple[str, Any]] = []
ATTEMPTS: Counter[str] = Counter()
HEADERS: list[dict[str, str]] = []
NO_BACKOFF = TaskRetryOptions(min_backoff_seconds=0, max_backoff_seconds=0, task_retry_limit=3)
BIG = 300 * 1024


def record(*args: Any) -> None:
    with _lock:
        CALLS.append(("record", args))


def record_size(data: bytes) -> None:
    with _lock:
        CALLS.append(("size", len(data)))


def fail_for_good(data: bytes) -> None:
    with _lock:
        CALLS.append(("permanent", len(data)))
    raise PermanentTaskFailure("never")


def fail_once(key: str, data: bytes) -> None:
    with _lock:
        ATTEMPTS[key] += 1
        CALLS.append(("attempt", (ATTEMPTS[key], len(data))))
        first = ATTEMPTS[key] == 1
    if first:
        raise ValueError("try again")


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    CALLS.clear()
    ATTEMPTS.clear()
    HEADERS.clear()
    monkeypatch.setenv("GAE_ENV", "standard")  # the app runs "on App Engine": X-AppEngine-QueueName is trusted


def recording_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    """The deferred handler, noting the headers of every delivery."""
    with _lock:
        HEADERS.append({k: str(v) for k, v in environ.items() if k.startswith("HTTP_")})
    return deferred_client.application(environ, start_response)


@pytest.fixture
def app(wsgi_server: Callable[..., WSGIThread]) -> WSGIThread:
    return wsgi_server(recording_app)


@pytest.fixture
def credentials() -> FixedToken:
    return FixedToken()


@pytest.fixture(autouse=True)
def sent_bodies(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The bodies the client's transport sends (the emulator's own records say where they went)."""
    bodies: list[bytes] = []
    send = SyncTransport.request

    def spy(self: SyncTransport, method: str, path: str, body: bytes | None = None, *args: Any) -> Any:
        bodies.append(body or b"")
        return send(self, method, path, body, *args)

    monkeypatch.setattr(SyncTransport, "request", spy)
    return bodies


@pytest.fixture
def cloud(
    app: WSGIThread, cloud_tasks: Callable[..., CloudTasksStandIn], storage: StorageEmulator, credentials: FixedToken
) -> Iterator[CloudTasksStandIn]:
    emulator = cloud_tasks(app_url=app.url)
    production(emulator, credentials)
    yield emulator


def assert_only_cloud_tasks_calls(emulator: CloudTasksStandIn, bodies: list[bytes]) -> None:
    """Every request was a Cloud Tasks v2 call with the bearer token, using no emulator extension."""
    seen = emulator.client_requests()
    assert seen, "the client sent nothing"
    for request in seen:
        assert request.path.startswith("/v2/"), request.path
        assert request.authorization == f"Bearer {TOKEN}", request
    assert len(bodies) == len(seen)
    assert not any(b'"countdown"' in body or b'"queue"' in body for body in bodies)


def test_defer_speaks_cloud_tasks_v2_with_the_bearer_token(
    cloud: CloudTasksStandIn, credentials: FixedToken, sent_bodies: list[bytes]
) -> None:
    # When defer() runs with the Cloud Tasks backend
    task = defer(record, "hello", 1)
    defer(record, "again", 2)
    # Then the task is in the configured project and location, and runs when delivered
    assert task.queue == "default" and task.name
    cloud.drain()
    assert sorted(CALLS) == [("record", ("again", 2)), ("record", ("hello", 1))]
    # And every request was a Cloud Tasks v2 call with the credentials' token (refreshed once)
    assert_only_cloud_tasks_calls(cloud, sent_bodies)
    paths = {r.path for r in cloud.client_requests()}
    assert paths == {"/v2/projects/prod-project/locations/europe-west1/queues/default/tasks"}
    assert credentials.refreshes == 1


def test_a_300_kib_payload_goes_through_the_bucket(
    cloud: CloudTasksStandIn, storage: StorageEmulator, sent_bodies: list[bytes]
) -> None:
    # When a payload over 100 KiB is deferred
    task = defer(record_size, b"x" * BIG)
    # Then it waits in the bucket under the prefix, and the task itself is small
    objects = storage.objects()
    assert len(objects) == 1 and objects[0].startswith("deferred/")
    assert task.entity_key == objects[0]
    body = base64.b64decode(cloud.tasks()[0]["appEngineHttpRequest"]["body"])
    assert len(body) < 1000 and objects[0].encode() in body
    # And it runs once, after which its object is gone
    cloud.drain()
    assert CALLS == [("size", BIG)]
    assert storage.objects() == []
    assert_only_cloud_tasks_calls(cloud, sent_bodies)


def test_a_permanent_failure_deletes_the_payload(cloud: CloudTasksStandIn, storage: StorageEmulator) -> None:
    defer(fail_for_good, b"y" * BIG, _retry_options=NO_BACKOFF)
    assert len(storage.objects()) == 1
    cloud.drain()
    assert CALLS == [("permanent", BIG)]
    assert storage.objects() == []


def test_a_retry_reads_the_payload_again(cloud: CloudTasksStandIn, storage: StorageEmulator) -> None:
    defer(fail_once, "k", b"z" * BIG, _retry_options=NO_BACKOFF)
    cloud.drain()
    # The first attempt failed and kept the object; the retry read it again and then deleted it
    assert CALLS == [("attempt", (1, BIG)), ("attempt", (2, BIG))]
    assert storage.objects() == []


def test_named_duplicates_are_told_apart_by_get_task(cloud: CloudTasksStandIn, sent_bodies: list[bytes]) -> None:
    defer(record, "first", _name="once")
    with pytest.raises(TaskAlreadyExistsError, match="is in queue"):
        defer(record, "second", _name="once")
    cloud.drain()
    with pytest.raises(TombstonedTaskError, match="existed recently"):
        defer(record, "third", _name="once")
    assert CALLS == [("record", ("first",))]
    # Production answers ALREADY_EXISTS alike for both: a GetTask told them apart
    gets = [r for r in cloud.client_requests() if r.method == "GET"]
    assert [r.path.rsplit("/", 1)[1] for r in gets] == ["once", "once"]
    assert_only_cloud_tasks_calls(cloud, sent_bodies)


def test_options_arrive_as_set(
    wsgi_server: Callable[..., WSGIThread],
    cloud_tasks: Callable[..., CloudTasksStandIn],
    storage: StorageEmulator,
    credentials: FixedToken,
    app: WSGIThread,
    sent_bodies: list[bytes],
) -> None:
    worker = wsgi_server(recording_app)
    emulator = cloud_tasks(app_url=app.url, targets={"worker": worker.url})
    production(emulator, credentials)
    emulator.create_queue("mail")
    eta = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=2)
    retry = TaskRetryOptions(min_backoff_seconds=2, max_backoff_seconds=30, max_doublings=3, task_retry_limit=4)
    before = time.time()
    defer(record, "countdown", _countdown=600, _queue="mail", _headers={"X-Trace": "t-1"})
    defer(record, "eta", _eta=eta, _queue="mail", _retry_options=retry)
    defer(record, "routed", _target="worker", _headers={"X-Trace": "t-2"})
    tasks = {base64.b64decode(t["appEngineHttpRequest"]["body"]): t for t in emulator.tasks("mail")}
    by_arg = {next(a for a in (b"countdown", b"eta") if a in body): task for body, task in tasks.items()}
    countdown = datetime.fromisoformat(by_arg[b"countdown"]["scheduleTime"].replace("Z", "+00:00")).timestamp()
    assert before + 600 - 1 <= countdown <= time.time() + 600 + 1
    assert by_arg[b"countdown"]["appEngineHttpRequest"]["headers"]["X-Trace"] == "t-1"
    assert datetime.fromisoformat(by_arg[b"eta"]["scheduleTime"].replace("Z", "+00:00")) == eta
    assert by_arg[b"eta"]["retryConfig"] == {
        "maxAttempts": 5,
        "minBackoff": "2s",
        "maxBackoff": "30s",
        "maxDoublings": 3,
        "maxRetryDuration": "0s",
    }
    [routed] = emulator.tasks("default")
    assert routed["appEngineHttpRequest"]["appEngineRouting"]["service"] == "worker"
    emulator.drain(queues=["default"])
    assert CALLS == [("record", ("routed",))]
    assert HEADERS[-1]["HTTP_X_TRACE"] == "t-2" and HEADERS[-1]["HTTP_X_APPENGINE_QUEUENAME"] == "default"
    assert_only_cloud_tasks_calls(emulator, sent_bodies)


def test_a_transaction_is_one_batch_create_per_queue(
    cloud: CloudTasksStandIn, storage: StorageEmulator, sent_bodies: list[bytes]
) -> None:
    cloud.create_queue("mail")
    with transaction():
        one = defer(record, 1, _transactional=True)
        defer(record, 2, _transactional=True, _queue="mail")
        defer(record_size, b"b" * BIG, _transactional=True)
        assert cloud.client_requests() == [] and storage.objects() == []
    batches = [r.path.rsplit("/", 2)[1:] for r in cloud.client_requests()]
    assert sorted(batches) == [["default", "tasks:batchCreate"], ["mail", "tasks:batchCreate"]]
    assert one.name in {t["name"].rsplit("/", 1)[1] for t in cloud.tasks("default")}
    assert len(storage.objects()) == 1
    cloud.drain()
    assert sorted(CALLS) == [("record", (1,)), ("record", (2,)), ("size", BIG)]
    assert storage.objects() == []
    assert_only_cloud_tasks_calls(cloud, sent_bodies)


def test_a_transaction_that_raises_sends_nothing(cloud: CloudTasksStandIn, storage: StorageEmulator) -> None:
    with pytest.raises(RuntimeError), transaction():
        defer(record_size, b"b" * BIG, _transactional=True)
        raise RuntimeError("rolled back")
    assert cloud.client_requests() == [] and storage.objects() == []


async def test_defer_async_in_production(
    cloud: CloudTasksStandIn, storage: StorageEmulator, sent_bodies: list[bytes]
) -> None:
    await deferred_client.defer_async(record, "async")
    await deferred_client.defer_async(record_size, b"a" * BIG)
    async with transaction():
        await deferred_client.defer_async(record, "txn", _transactional=True)
    assert len(storage.objects()) == 1
    cloud.drain()
    assert sorted(CALLS) == [("record", ("async",)), ("record", ("txn",)), ("size", BIG)]
    assert_only_cloud_tasks_calls(cloud, sent_bodies)


def test_a_large_payload_without_a_bucket_is_a_clear_error(
    cloud: CloudTasksStandIn, credentials: FixedToken, storage: StorageEmulator
) -> None:
    production(cloud, credentials, payload_bucket="")
    deferred_client.configure(**{**_explicit(cloud, credentials), "payload_bucket": None})
    with pytest.raises(ConfigurationError, match="DEFERRED_PAYLOAD_BUCKET"):
        defer(record_size, b"x" * BIG)
    assert cloud.tasks() == [] and storage.objects() == []


def _explicit(emulator: CloudTasksStandIn, credentials: FixedToken) -> dict[str, Any]:
    return {
        "backend": "cloudtasks",
        "cloud_tasks_url": f"http://{emulator.host}",
        "project": emulator.settings.project,
        "location": emulator.settings.location,
        "credentials": credentials,
    }


def test_production_needs_its_location_and_a_backend_that_exists(configured: None) -> None:
    deferred_client.configure(backend="cloudtasks", project="p", credentials=FixedToken())
    with pytest.raises(ConfigurationError, match="DEFERRED_LOCATION"):
        defer(record, 1)
    deferred_client.configure(backend="cloud-tasks")
    with pytest.raises(ConfigurationError, match="DEFERRED_BACKEND must be 'emulator' or 'cloudtasks'"):
        defer(record, 1)


def test_off_app_engine_the_queue_header_is_not_trusted(
    cloud: CloudTasksStandIn, app: WSGIThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A production handler that is not on App Engine gets a request with App Engine's headers
    monkeypatch.delenv("GAE_ENV")
    monkeypatch.delenv("GAE_APPLICATION", raising=False)
    body = deferred_client.serialize(record, "forged")
    headers = {"X-AppEngine-QueueName": "default", "X-AppEngine-TaskName": "t1"}
    status, text = http_post(app.url + "/_ah/queue/deferred", body, headers)
    assert status == 403 and b"only on App Engine" in text
    # And a request with no proof at all, even on App Engine
    monkeypatch.setenv("GAE_APPLICATION", "s~prod-project")
    status, _ = http_post(app.url + "/_ah/queue/deferred", body, {"X-AppEngine-TaskName": "t1"})
    assert status == 403
    assert CALLS == []


def test_a_handler_with_no_backend_configured_runs_nothing(
    app: WSGIThread, configured: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A production app that forgot DEFERRED_BACKEND: no emulator, no secret, whatever headers come
    for name in ("DEFERRED_BACKEND", "DEFERRED_EMULATOR_HOST", "DEFERRED_EMULATOR_SECRET"):
        monkeypatch.delenv(name, raising=False)
    deferred_client.configure()
    body = deferred_client.serialize(record, "forged")
    headers = {"X-AppEngine-QueueName": "default", "X-AppEngine-TaskName": "t1", "Authorization": "Bearer x"}
    status, text = http_post(app.url + "/_ah/queue/deferred", body, headers)
    assert status == 403 and b"DEFERRED_BACKEND=cloudtasks" in text
    assert CALLS == []


def test_the_environment_variables_of_the_readme_configure_production(
    app: WSGIThread,
    cloud_tasks: Callable[..., CloudTasksStandIn],
    storage: StorageEmulator,
    credentials: FixedToken,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emulator = cloud_tasks(app_url=app.url)
    for name, value in {
        "DEFERRED_BACKEND": "cloudtasks",
        "DEFERRED_CLOUD_TASKS_URL": f"http://{emulator.host}",
        "GOOGLE_CLOUD_PROJECT": emulator.settings.project,
        "DEFERRED_LOCATION": emulator.settings.location,
        "DEFERRED_PAYLOAD_BUCKET": BUCKET,
        "DEFERRED_PAYLOAD_PREFIX": "big/",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DEFERRED_EMULATOR_HOST", raising=False)
    deferred_client.configure(credentials=credentials)  # the one setting with no variable
    task = defer(record_size, b"e" * BIG)
    assert task.entity_key is not None and task.entity_key.startswith("big/")
    emulator.drain()
    assert CALLS == [("size", BIG)] and storage.objects() == []


def test_a_bucket_that_does_not_exist_fails_the_defer_and_creates_no_task(
    cloud: CloudTasksStandIn, credentials: FixedToken
) -> None:
    production(cloud, credentials, payload_bucket="no-such-bucket")
    with pytest.raises(deferred_client.Error, match="Cloud Storage upload to gs://no-such-bucket/deferred/"):
        defer(record_size, b"x" * BIG)
    assert cloud.tasks() == []
