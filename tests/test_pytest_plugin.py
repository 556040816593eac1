"""The pytest plugin: the ``deferred_emulator`` fixture used directly, and the example suite run as a user runs it."""

from __future__ import annotations

import gc
import os
import pickle
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import deferred_client
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from deferred_emulator.api.grpc.server import GrpcServerError
from deferred_emulator.settings import Settings
from deferred_emulator.testing import DeferredEmulator, DrainTimeoutError, EmulatorAPIError, start
from deferred_emulator.threads import EmulatorThread

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "testing"
#: What the deferred functions below did.
CALLS: list[Any] = []


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    CALLS.clear()


def record(*args: Any) -> None:
    """A deferred task."""
    CALLS.append(args)


def record_then_defer(value: Any) -> None:
    """A deferred task that defers another one, as task chains do."""
    CALLS.append(("first", value))
    deferred_client.defer(record, "second", value)


def fail(value: Any) -> None:
    """A deferred task that always fails."""
    raise RuntimeError(f"cannot handle {value!r}")


# -- the fixture, used directly ------------------------------------------------------------------


def test_the_client_finds_the_emulator_by_itself(deferred_emulator: DeferredEmulator) -> None:
    # Given the fixture (no DEFERRED_EMULATOR_HOST needed)
    assert deferred_client.current_config().base_url == deferred_emulator.url
    # When a call is deferred
    task = deferred_client.defer(record, 1)
    # Then it waits in the emulator, with the pickled call as its payload
    [queued] = deferred_emulator.tasks()
    assert (queued.name, queued.queue, queued.state) == (task.name, "default", "WAITING")
    assert (queued.url, pickle.loads(queued.payload)) == ("/_ah/queue/deferred", (record, (1,), {}))
    assert (queued.retry_count, queued.last_status, queued.last_dispatch) == (0, None, None)


def test_production_settings_in_the_environment_do_not_leak_into_the_fixture(
    deferred_emulator: DeferredEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "DEFERRED_BACKEND": "cloudtasks",
        "DEFERRED_HANDLER_URL": "https://app.example/_ah/queue/deferred",
        "DEFERRED_PAYLOAD_BUCKET": "prod-bucket",
    }.items():
        monkeypatch.setenv(name, value)
    task = deferred_client.defer(record, b"x" * 200_000)
    [queued] = deferred_emulator.tasks()
    assert queued.name == task.name and queued.url == "/_ah/queue/deferred"


def test_a_queued_payload_runs_inline(deferred_emulator: DeferredEmulator) -> None:
    # Given a deferred call
    deferred_client.defer(record, "inline", _countdown=600)
    [task] = deferred_emulator.tasks()
    # When its payload is run in the test, as testbed's deferred.run(task.payload) did
    deferred_client.run(task.payload)
    task.run()
    # Then the call happened (twice), and the task is still queued: nothing was delivered
    assert CALLS == [("inline",), ("inline",)]
    assert [t.name for t in deferred_emulator.tasks()] == [task.name]


def test_a_wsgi_app_gets_the_tasks(deferred_emulator: DeferredEmulator) -> None:
    # Given the deferred handler served by the fixture
    url = deferred_emulator.serve_wsgi(deferred_client.application)
    assert deferred_emulator.app_url == url
    deferred_client.defer(record, "delivered")
    # When the queue is drained
    result = deferred_emulator.drain()
    # Then the app ran the task, and nothing is left
    assert (result.dispatched, result.succeeded, result.failures) == (1, 1, [])
    assert CALLS == [("delivered",)]
    assert deferred_emulator.tasks() == []


def test_one_drain_runs_the_tasks_tasks_defer(deferred_emulator: DeferredEmulator) -> None:
    # Given a task that defers another when it runs
    deferred_emulator.serve_wsgi(deferred_client.application)
    deferred_client.defer(record_then_defer, 7)
    # When drained once, then both ran
    assert deferred_emulator.drain(queues="default").succeeded == 2
    assert CALLS == [("first", 7), ("second", 7)]


def test_countdown_and_advance(deferred_emulator: DeferredEmulator) -> None:
    # Given a task deferred by an hour, after the clock was already moved a day ahead
    deferred_emulator.serve_wsgi(deferred_client.application)
    start_time = deferred_emulator.now()
    assert deferred_emulator.advance(timedelta(days=1)) - start_time == timedelta(days=1)
    task = deferred_client.defer(record, "later", _countdown=3600)
    # Then it is due an hour from the emulator's now, and runs only once that hour has passed
    assert task.eta - deferred_emulator.now() == timedelta(hours=1)
    assert deferred_emulator.drain().dispatched == 0
    deferred_emulator.advance(3599)
    assert deferred_emulator.drain().dispatched == 0
    deferred_emulator.advance(1)
    assert deferred_emulator.drain().succeeded == 1
    assert CALLS == [("later",)]


def test_failed_tasks_are_kept(deferred_emulator: DeferredEmulator) -> None:
    # Given a task without retries whose function raises
    deferred_emulator.serve_wsgi(deferred_client.application)
    options = deferred_client.TaskRetryOptions(task_retry_limit=0)
    deferred_client.defer(fail, "order-9", _retry_options=options, _name="doomed")
    # When drained
    result = deferred_emulator.drain()
    # Then it failed for good, and is listed with the app's answer
    [failure] = result.failures
    assert (failure.task, failure.status, failure.will_retry, result.failed) == ("doomed", 500, False, 1)
    [failed] = deferred_emulator.failed()
    assert (failed.name, failed.state, failed.last_status, failed.retry_count) == ("doomed", "FAILED", 500, 1)
    assert deferred_emulator.tasks() == []
    assert deferred_emulator.task("doomed").state == "FAILED"


def test_reset_empties_the_queues(deferred_emulator: DeferredEmulator) -> None:
    # Given a waiting task with a name
    deferred_client.defer(record, 1, _name="unique")
    # When reset, then nothing is left and the name can be used again
    deferred_emulator.reset()
    assert deferred_emulator.tasks() == []
    deferred_client.defer(record, 2, _name="unique")
    assert [t.name for t in deferred_emulator.tasks()] == ["unique"]


def test_draining_without_an_app_says_what_to_do(deferred_emulator: DeferredEmulator) -> None:
    deferred_client.defer(record, 1)
    with pytest.raises(RuntimeError, match="app_url"):
        deferred_emulator.drain()


def test_a_drain_that_times_out_raises(deferred_emulator: DeferredEmulator) -> None:
    # Given an app that answers only when the test lets it
    release = threading.Event()

    def slow_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        release.wait(timeout=10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    deferred_emulator.serve_wsgi(slow_app)
    deferred_client.defer(record, 1)
    # When drained with a short timeout, then it raises; once the app answers, a drain completes
    with pytest.raises(DrainTimeoutError, match="still due or in flight"):
        deferred_emulator.drain(timeout=0.2)
    release.set()
    # (the answer may be recorded before the next drain starts, so that drain's count is not asserted)
    deferred_emulator.drain()
    assert deferred_emulator.tasks() == []


def test_api_errors_are_raised(deferred_emulator: DeferredEmulator) -> None:
    with pytest.raises(EmulatorAPIError) as info:
        deferred_emulator.tasks("no-such-queue")
    assert info.value.status == 404


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_googles_client_reaches_the_fixture_on_either_transport(
    deferred_emulator: DeferredEmulator, transport: str
) -> None:
    # Given Google's client from the fixture (gRPC on the same host:port as REST)
    assert deferred_emulator.grpc_target == deferred_emulator.host
    from google.cloud import tasks_v2

    with deferred_emulator.cloud_tasks_client(transport) as client:
        # When it creates a task
        parent = client.queue_path("local-project", "us-central1", "default")
        request = tasks_v2.HttpRequest(url="http://127.0.0.1:9/hook", body=b"ping")
        created = client.create_task(parent=parent, task=tasks_v2.Task(http_request=request))
    # Then the helpers see it
    [task] = deferred_emulator.tasks()
    assert (task.name, task.payload, task.url) == (created.name.rsplit("/", 1)[1], b"ping", "http://127.0.0.1:9/hook")


def test_the_client_helper_names_its_transports(deferred_emulator: DeferredEmulator) -> None:
    with pytest.raises(ValueError, match="'grpc' or 'rest'"):
        deferred_emulator.cloud_tasks_client("http")


@pytest.mark.parametrize("deferred_emulator_settings", [{"secret": "s3cret", "max_task_size": 200}])
def test_settings_can_be_overridden(deferred_emulator: DeferredEmulator) -> None:
    # Given an emulator that signs deliveries and takes only small tasks
    assert deferred_client.current_config().secret == "s3cret"
    deferred_emulator.serve_wsgi(deferred_client.application)
    # When a large call is deferred (its payload goes to the emulator's entity store)
    deferred_client.defer(record, "x" * 1000)
    # Then the signed delivery is accepted and the payload fetched
    assert deferred_emulator.drain().succeeded == 1
    assert CALLS == [("x" * 1000,)]


def test_start_restores_the_client_configuration(tmp_path: Path) -> None:
    # Given a configuration of the app's own
    deferred_client.configure(host="127.0.0.1:1", project="my-project", timeout_s=5)
    try:
        # When an emulator is started and stopped
        with start(tmp_path) as emulator:
            inside = deferred_client.current_config()
        after = deferred_client.current_config()
    finally:
        deferred_client.configure()
    # Then the client used it meanwhile (keeping the other options), and the old configuration after
    assert (inside.base_url, inside.project, inside.timeout_s, inside.secret) == (emulator.url, "my-project", 5, None)
    assert (after.host, after.project) == ("127.0.0.1:1", "my-project")


# -- async tests -------------------------------------------------------------------------------


async def test_an_aiohttp_app_on_the_tests_loop(
    deferred_emulator: DeferredEmulator, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    # Given an aiohttp app served on the test's own event loop
    app = web.Application()
    deferred_client.add_aiohttp_route(app)
    server = await aiohttp_server(app, host="127.0.0.1")
    deferred_emulator.app_url = str(server.make_url(""))
    # When a call is deferred from async code and the queue drained without blocking the loop
    await deferred_client.defer_async(record, "async")
    result = await deferred_emulator.drain_async()
    # Then the app ran it
    assert (result.succeeded, CALLS) == (1, [("async",)])


async def test_a_blocking_drain_in_an_async_test_points_to_drain_async(
    deferred_emulator: DeferredEmulator, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    # Given an app on the test's loop, which a blocking drain keeps from answering
    app = web.Application()
    deferred_client.add_aiohttp_route(app)
    server = await aiohttp_server(app, host="127.0.0.1")
    deferred_emulator.app_url = str(server.make_url(""))
    await deferred_client.defer_async(record, 1)
    # When drained without await, then the error says what to use instead
    with pytest.raises(DrainTimeoutError, match="drain_async"):
        deferred_emulator.drain(timeout=0.2)
    assert (await deferred_emulator.drain_async()).failures == []


# -- the plugin as users get it ---------------------------------------------------------------


def test_importing_the_plugin_loads_no_server() -> None:
    # Given a fresh interpreter, when the plugin (and the fixture's types) are imported
    heavy = ("aiohttp", "aiosqlite", "deferred_emulator.app", "deferred_client")
    code = (
        "import sys, deferred_emulator.pytest_plugin, deferred_emulator.testing;"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    # Then neither the server nor its dependencies were imported
    assert out.stdout.strip() == "[]", out.stderr


def user_env() -> dict[str, str]:
    """This environment (PYTHONPATH included) without any emulator settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DEFERRED_EMULATOR_")}


@pytest.mark.subprocess
@pytest.mark.timeout(600)
def test_the_example_suite_passes_as_users_run_it() -> None:
    # Given the example project, which has no conftest: the fixture can only come from the entry point
    assert not list(EXAMPLE.glob("conftest.py"))
    # When its tests run in a pytest process of their own, with no emulator settings in the environment
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE"]
    # (two plugins of this project's dev environment that the example does not use slow its start)
    command += ["-p", "no:schemathesis", "-p", "no:hypothesispytest"]
    run = subprocess.run(command, cwd=EXAMPLE, env=user_env(), capture_output=True, text=True, timeout=540)
    # Then every test passes
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"\b5 passed\b", run.stdout), run.stdout


def test_the_readme_shows_the_example_test() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Testing your app", 1)[1]
    [block] = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)[:1]
    assert block == (EXAMPLE / "test_shop.py").read_text()


def test_an_emulator_that_cannot_start_leaves_nothing_open(tmp_path: Path) -> None:
    # Given a --grpc-port another program listens on
    before = set(threading.enumerate())
    with socket.create_server(("127.0.0.1", 0)) as taken:
        settings = Settings(db_path=str(tmp_path / "t.sqlite3"), port=0, grpc_port=taken.getsockname()[1])
        # When the fixture's emulator thread starts, then it fails
        with pytest.raises(GrpcServerError):
            EmulatorThread(settings)
    # And its store's connection threads and its loop's thread have ended, the collector left nothing to close
    # (a socket or session it finds open fails this test: warnings are errors)
    started = [t for t in set(threading.enumerate()) - before if not t.daemon or "connection_worker" in t.name]
    for thread in started:
        thread.join(timeout=10)
    assert not [t for t in started if t.is_alive()]
    gc.collect()
