"""deferred_client's task options, retry options, error mapping and configuration (no emulator needed)."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import deferred_client
import pytest
from deferred_client import (
    EmulatorUnavailableError,
    InvalidEtaError,
    InvalidQueueNameError,
    InvalidTaskError,
    InvalidTaskNameError,
    InvalidTaskRetryOptionsError,
    InvalidUrlError,
    TaskRetryOptions,
)
from deferred_client import errors as e
from deferred_client.config import HOST_ENV, SECRET_ENV, Config
from deferred_client.task import Task, TaskSpec, format_time, parse_time

pytest_plugins = ["test_client_fixtures"]

NOW = 1_700_000_000.0


def spec(**overrides: object) -> TaskSpec:
    options: dict[str, object] = {
        "queue": "default",
        "url": "/_ah/queue/deferred",
        "headers": None,
        "name": None,
        "countdown": None,
        "eta": None,
        "target": None,
        "retry": None,
        "now": NOW,
    }
    options.update(overrides)
    return TaskSpec.build(**options)  # type: ignore[arg-type]


def test_retry_options_map_to_the_emulators_retry_config() -> None:
    options = TaskRetryOptions(
        min_backoff_seconds=0.1, max_backoff_seconds=30, max_doublings=3, task_retry_limit=4, task_age_limit=59.2
    )
    assert options.task_age_limit == 60  # rounded up, as App Engine does
    assert options.to_json() == {
        "maxAttempts": 5,
        "maxRetryDuration": "60s",
        "minBackoff": "0.1s",
        "maxBackoff": "30s",
        "maxDoublings": 3,
    }
    assert TaskRetryOptions().to_json() == {}  # no limits: the fields are left out
    assert TaskRetryOptions(task_retry_limit=0).to_json() == {"maxAttempts": 1}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_backoff_seconds": -1},
        {"task_retry_limit": -1},
        {"task_age_limit": -0.5},
        {"max_doublings": -2},
        {"min_backoff_seconds": 10, "max_backoff_seconds": 5},
    ],
)
def test_invalid_retry_options(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidTaskRetryOptionsError):
        TaskRetryOptions(**kwargs)


def test_task_json_carries_every_option() -> None:
    s = spec(
        name="job-1",
        countdown=90.5,
        target="worker",
        headers={"X-Custom": "1"},
        retry=TaskRetryOptions(task_retry_limit=2),
    )
    task = s.to_json(b"\x80\x05data", "projects/p/locations/l/queues/default")
    assert task == {
        "name": "projects/p/locations/l/queues/default/tasks/job-1",
        "scheduleTime": "2023-11-14T22:14:50.500000Z",
        "countdown": "90.5s",
        "appEngineHttpRequest": {
            "httpMethod": "POST",
            "relativeUri": "/_ah/queue/deferred",
            "headers": {"Content-Type": "application/octet-stream", "X-Custom": "1"},
            "body": base64.b64encode(b"\x80\x05data").decode(),
            "appEngineRouting": {"service": "worker"},
        },
        "retryConfig": {"maxAttempts": 3},
    }
    json.dumps(task)


def test_headers_can_override_the_content_type() -> None:
    assert spec(headers={"Content-Type": "application/x-pickle"}).headers == {"Content-Type": "application/x-pickle"}


def test_size_overhead_is_app_engines() -> None:
    # method + URL + each header's name and value plus 4
    s = spec(headers={"X-A": "bc"})
    assert s.overhead == len("POST") + len("/_ah/queue/deferred") + (12 + 24 + 4) + (3 + 2 + 4)


def test_url_none_means_the_queues_url() -> None:
    assert spec(url=None, queue="mail").url == "/_ah/queue/mail"


@pytest.mark.parametrize("url", ["relative", "http://elsewhere/x", "//host/x", "/frag#ment", "/" + "x" * 2083])
def test_invalid_urls(url: str) -> None:
    with pytest.raises(InvalidUrlError):
        spec(url=url)


def test_invalid_names() -> None:
    for bad in ("has space", "", "x" * 501, "dot.ted"):
        with pytest.raises(InvalidTaskNameError):
            spec(name=bad)
    assert spec(name="x" * 500).name == "x" * 500
    with pytest.raises(InvalidQueueNameError):
        spec(queue="bad_queue")


def test_countdown_and_eta() -> None:
    assert spec(countdown=-5).eta_s == NOW - 5  # a past ETA is allowed
    aware = datetime(2023, 11, 15, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert spec(eta=aware).eta_s == datetime(2023, 11, 15, 10, 0, tzinfo=timezone.utc).timestamp()
    naive = datetime(2023, 11, 15, 10, 0)
    assert spec(eta=naive).eta_s == aware.timestamp()  # naive means UTC
    assert spec().eta_s is None


def test_countdown_and_eta_together_are_refused() -> None:
    with pytest.raises(InvalidTaskError, match="not both"):
        spec(countdown=1, eta=datetime.now(timezone.utc))


def test_eta_more_than_30_days_ahead_is_refused() -> None:
    spec(countdown=30 * 86400)
    with pytest.raises(InvalidEtaError):
        spec(countdown=30 * 86400 + 1)
    with pytest.raises(InvalidTaskError):
        spec(countdown="soon")
    with pytest.raises(InvalidEtaError):
        spec(eta="tomorrow")


def test_time_formats() -> None:
    assert format_time(0.25) == "1970-01-01T00:00:00.250000Z"
    assert format_time(1.9999999) == "1970-01-01T00:00:02.000000Z"
    assert parse_time("2026-01-02T03:04:05.123456789Z") == datetime(2026, 1, 2, 3, 4, 5, 123456, timezone.utc)
    assert parse_time("2026-01-02T03:04:05Z") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert parse_time("2026-01-02T05:04:05+02:00") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def test_task_from_json_takes_the_short_name() -> None:
    task = Task.from_json(
        {"name": "projects/p/locations/l/queues/q/tasks/123", "scheduleTime": "2026-01-02T03:04:05.5Z"}, "q"
    )
    assert task == Task("123", "q", datetime(2026, 1, 2, 3, 4, 5, 500000, timezone.utc))


def body(code: int, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "status": "X"}}).encode()


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (409, "Requested entity already exists: task 'a' already exists and has not yet run", e.TaskAlreadyExistsError),
        (409, "Requested entity already exists: task name 'a' is tombstoned: ...", e.TombstonedTaskError),
        (404, "Queue does not exist.", e.UnknownQueueError),
        (400, "Task size too large", e.TaskTooLargeError),
        (400, 'Task ID "a b" can contain only letters', e.InvalidTaskNameError),
        (400, "The Task.scheduleTime is too far in the future.", e.InvalidEtaError),
        (400, "AppEngineHttpRequest.relativeUri must start with '/'", e.InvalidUrlError),
        (400, "Invalid value for appEngineHttpRequest.body: not valid base64", e.InvalidTaskError),
        (403, "no", e.PermissionDeniedError),
        (503, "busy", e.TransientError),
        (500, "Internal error in the emulator", e.InternalError),
    ],
)
def test_error_mapping(status: int, message: str, expected: type[Exception]) -> None:
    error = e.error_from_response(status, body(status, message), adding=True)
    assert type(error) is expected
    assert message in str(error)


def test_error_hierarchy_mirrors_app_engine() -> None:
    for cls in (
        e.TaskAlreadyExistsError,
        e.TombstonedTaskError,
        e.InvalidTaskNameError,
        e.TaskTooLargeError,
        e.InvalidUrlError,
        e.InvalidEtaError,
    ):
        assert issubclass(cls, e.InvalidTaskError)
    assert issubclass(e.TransactionalRequestTooLargeError, e.TaskTooLargeError)
    assert issubclass(e.InvalidQueueNameError, e.InvalidQueueError)
    assert e.BadTransactionState is e.BadTransactionStateError
    for name in deferred_client.__all__:
        obj = getattr(deferred_client, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, deferred_client.Error), name


def test_non_json_error_bodies_are_shown() -> None:
    assert "Bad Gateway" in str(e.error_from_response(502, b"<html>Bad Gateway</html>"))


def test_config_from_environment(monkeypatch: pytest.MonkeyPatch, configured: None) -> None:
    monkeypatch.setenv(HOST_ENV, "localhost:9999")
    monkeypatch.setenv(SECRET_ENV, "s3")
    config = deferred_client.current_config()
    assert (config.host, config.secret, config.project_id(), config.location_id()) == (
        "localhost:9999",
        "s3",
        "local-project",
        "us-central1",
    )
    assert config.base_url == "http://localhost:9999"
    assert config.endpoint() == ("http", "localhost", 9999, "")
    # configure() overrides what it is given; the rest still comes from the environment
    config = deferred_client.configure(project="p", secret="")
    assert (config.host, config.secret, config.project) == ("localhost:9999", None, "p")
    monkeypatch.setenv(HOST_ENV, "http://127.0.0.1:1/prefix/")
    assert deferred_client.current_config().endpoint() == ("http", "127.0.0.1", 1, "/prefix")


def test_no_emulator_configured_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, configured: None) -> None:
    monkeypatch.delenv(HOST_ENV, raising=False)
    with pytest.raises(
        EmulatorUnavailableError, match=f"No task queue is configured: set {HOST_ENV}.*DEFERRED_BACKEND"
    ):
        deferred_client.defer(len, "x")
    with pytest.raises(deferred_client.ConfigurationError, match="bad port"):
        Config(host="localhost:notaport").endpoint()


def test_unreachable_emulator_is_a_clear_error(configured: None) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    deferred_client.configure(host=f"127.0.0.1:{port}")
    with pytest.raises(
        EmulatorUnavailableError, match=rf"emulator at http://127.0.0.1:{port} did not answer.*{HOST_ENV}"
    ):
        deferred_client.defer(len, "x")


async def test_unreachable_emulator_is_a_clear_error_from_asyncio(configured: None) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    deferred_client.configure(host=f"127.0.0.1:{port}")
    with pytest.raises(EmulatorUnavailableError, match=f"127.0.0.1:{port} did not answer"):
        await deferred_client.defer_async(len, "x")
