"""End to end: the unmodified appengine-python-standard app in examples/gae_app.py against the emulator.

The app runs in its own process, as on App Engine: ``wrap_wsgi_app`` replaces ``os.environ`` and
reloads ``threading`` process-wide, which must not leak into the test process. Its SDK calls reach
the in-process emulator through the environment ``deferred-emulator gae-env`` prints.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from conftest import Handle
from deferred_emulator.app import create_app
from deferred_emulator.gae_env import gae_environment
from deferred_emulator.settings import Settings

pytest.importorskip("google.appengine.api", reason="needs the gae extra (appengine-python-standard)")
# The first test waits for the app process to import the SDK (seconds of gRPC and Cloud Tasks imports).
pytestmark = pytest.mark.timeout(240)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "gae_app.py"
APP_ID = "dev~gae-example"
START_TIMEOUT_S = 200.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class GaeApp:
    """The example app's process, and the port its SDK expects the API server on."""

    url: str
    api_port: int
    log: Path


@pytest.fixture(scope="module")
def gae_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GaeApp]:
    """examples/gae_app.py served by wsgiref in its own process, with the environment gae-env prints."""
    port, api_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "APPENGINE_USE_CLOUDTASK_PUSH_QUEUE"}
    env.update(gae_environment("127.0.0.1", api_port, APP_ID))
    env["PORT"] = str(port)
    log = tmp_path_factory.mktemp("gae") / "app.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(EXAMPLE)], env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the example exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the example did not listen on {port}:\n{log.read_text()}")
                time.sleep(0.1)
        yield GaeApp(f"http://127.0.0.1:{port}", api_port, log)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass
class Setup:
    """An emulator on the port the app calls, and a session to drive the app."""

    emulator: Handle
    app: GaeApp
    http: aiohttp.ClientSession

    async def app_call(self, path: str, method: str = "POST") -> tuple[int, Any]:
        """Call the example app and decode its JSON answer."""
        async with self.http.request(method, self.app.url + path) as resp:
            return resp.status, await resp.json(content_type=None)

    async def done(self) -> list[Any]:
        """What the app's deferred functions and task handler did so far."""
        return list((await self.app_call("/done", "GET"))[1])


@pytest.fixture
async def setup(
    gae_app: GaeApp, aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path
) -> AsyncIterator[Setup]:
    """A fresh emulator listening where the app's SDK sends its API calls; delivery through drain."""
    settings = Settings(db_path=str(tmp_path / "tasks.sqlite3"), app_url=gae_app.url, dispatch=False)
    app = create_app(settings)
    server = await aiohttp_server(app, host="127.0.0.1", port=gae_app.api_port)
    async with aiohttp.ClientSession() as http:
        handle = Handle(str(server.make_url("")).rstrip("/"), app, http)
        yield Setup(handle, gae_app, http)


async def test_small_deferred_calls_run(setup: Setup) -> None:
    before = await setup.done()
    # Given two deferred.defer calls made by the app
    status, first = await setup.app_call("/defer?text=hello")
    assert status == 200, setup.app.log.read_text()
    _, second = await setup.app_call("/defer?text=world")
    # Then the SDK got the names the emulator chose, and the tasks wait in the default queue
    assert first["task"] and first["task"] != second["task"]
    assert first["queue"] == "default"
    waiting = await setup.emulator.emulator.list_tasks("default")
    assert {t.name for t in waiting} == {first["task"], second["task"]}
    assert all(t.url == "/_ah/queue/deferred" for t in waiting)
    # When they are delivered
    report = await setup.emulator.drain()
    # Then the SDK's own deferred handler ran them, once each
    assert (report["dispatched"], report["succeeded"]) == (2, 2), report
    done = await setup.done()
    assert done[len(before) :] in (
        [["remember", "hello"], ["remember", "world"]],
        [["remember", "world"], ["remember", "hello"]],
    )


async def test_a_large_payload_goes_through_the_datastore_and_is_deleted(setup: Setup) -> None:
    before = len(await setup.done())
    # Given a deferred call with a 300 KiB argument (over the 100 KiB task limit)
    status, body = await setup.app_call("/defer-large?kib=300&label=big")
    assert status == 200, setup.app.log.read_text()
    # Then the payload sits in the entities table, tied to the small task that names it
    [task] = await setup.emulator.emulator.list_tasks("default")
    assert task.name == body["task"]
    assert len(task.body) < 1024
    [(key, size, _, task_id)] = await setup.emulator.emulator.store.list_entities()
    assert key.startswith("dee_") and size > 300 * 1024
    assert task_id == task.id
    # When the task is delivered
    report = await setup.emulator.drain()
    # Then the function ran with the whole argument and its entity is gone
    assert report["succeeded"] == 1, report
    assert (await setup.done())[before:] == [["measure", "big", 300 * 1024]]
    assert await setup.emulator.emulator.store.list_entities() == []


async def test_a_named_task_added_twice_is_refused(setup: Setup) -> None:
    # Given a named taskqueue.add
    status, body = await setup.app_call("/add?name=nightly-report&what=report")
    assert (status, body["task"]) == (200, "nightly-report")
    # When the app adds the same name again
    status, body = await setup.app_call("/add?name=nightly-report")
    # Then the SDK raised its own TaskAlreadyExistsError
    assert (status, body["error"]) == (409, "TaskAlreadyExistsError")
    # And once the task ran, the name is tombstoned
    before = len(await setup.done())
    assert (await setup.emulator.drain())["succeeded"] == 1
    [[kind, what, headers]] = (await setup.done())[before:]
    assert (kind, what) == ("work", "report")
    assert headers["X-Appengine-Taskname"] == "nightly-report"
    assert headers["X-Appengine-Queuename"] == "default"
    assert headers["X-Appengine-Current-Namespace"] == ""
    status, body = await setup.app_call("/add?name=nightly-report")
    assert (status, body["error"]) == (409, "TombstonedTaskError")


async def test_adding_to_an_unknown_queue_raises_unknown_queue_error(setup: Setup) -> None:
    # When the app adds a task to a queue the emulator does not have
    status, body = await setup.app_call("/add?queue=no-such-queue")
    # Then the SDK raised UnknownQueueError, with a message naming the queue
    assert (status, body["error"]) == (409, "UnknownQueueError")
    assert "no-such-queue" in body["message"]
    assert await setup.emulator.emulator.list_tasks("default") == []


async def test_a_permanent_task_failure_is_not_retried(setup: Setup) -> None:
    before = len(await setup.done())
    # Given a deferred function that raises PermanentTaskFailure
    await setup.app_call("/defer-failing?label=doomed")
    # When it is delivered
    report = await setup.emulator.drain()
    # Then the handler answered 200, so the task is done after one run
    assert (report["dispatched"], report["succeeded"], report["retried"]) == (1, 1, 0), report
    assert (await setup.done())[before:] == [["give_up", "doomed"]]
    assert await setup.emulator.emulator.list_tasks("default") == []


async def test_transactional_defer_is_enqueued_on_commit_and_dropped_on_rollback(setup: Setup) -> None:
    # Given a deferred call inside db.run_in_transaction that commits
    status, body = await setup.app_call("/defer-in-transaction?text=committed")
    assert status == 200, setup.app.log.read_text()
    # Then the task is queued under the name the SDK reported
    [task] = await setup.emulator.emulator.list_tasks("default")
    assert task.name == body["task"]
    # When another transaction raises after deferring
    status, body = await setup.app_call("/defer-in-transaction?text=rolled-back&fail=1")
    assert (status, body["error"]) == (409, "changed my mind")
    # Then only the committed task exists, and it runs
    assert [t.name for t in await setup.emulator.emulator.list_tasks("default")] == [task.name]
    before = len(await setup.done())
    assert (await setup.emulator.drain())["succeeded"] == 1
    assert (await setup.done())[before:] == [["remember", "committed"]]
