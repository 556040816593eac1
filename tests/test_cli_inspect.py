"""The inspection commands, run with CliRunner against a live emulator in another thread."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner, Result
from deferred_client.serialize import serialize
from deferred_emulator.cli import cli
from deferred_emulator.cli_inspect import emulator_url, relative, table
from test_client_fixtures import AiohttpThread, LiveEmulator

pytest_plugins = ["test_client_fixtures"]


def notify(user: str, *, urgent: bool = False) -> None:
    """Deferred by the tests; never run here."""


@dataclass
class App:
    """An app in a thread that records the paths it is sent and answers with scripted statuses."""

    server: AiohttpThread | None = None
    paths: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.paths.append(request.path)
        self.arrived.set()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text=f"answered {status}")


@dataclass
class World:
    """An emulator delivering to a recording app, with helpers to fill it."""

    emulator: LiveEmulator
    app: App

    @property
    def url(self) -> str:
        return self.emulator.url

    def add(self, queue: str, name: str, **task: Any) -> None:
        task.setdefault("appEngineHttpRequest", {"relativeUri": f"/work/{name}"})
        parent = f"/v2/projects/{self.emulator.settings.project}/locations/{self.emulator.settings.location}"
        status, data = self.emulator.call("POST", f"{parent}/queues/{queue}/tasks", {"task": {"name": name, **task}})
        assert status == 200, data

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(cli, [*args, "--emulator", self.url])


@pytest.fixture
def world(
    live_emulator: Callable[..., LiveEmulator], aiohttp_thread: Callable[[web.Application], AiohttpThread]
) -> Iterator[World]:
    """A live emulator (no automatic dispatch) with a `mail` queue, delivering to a recording app."""
    app = App()
    web_app = web.Application()
    web_app.router.add_route("*", "/{tail:.*}", app.handle)
    app.server = aiohttp_thread(web_app)
    emulator = live_emulator(app_url=app.server.url, db_path=":memory:")
    emulator.create_queue("mail")
    yield World(emulator, app)


def in_seconds(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def lines(result: Result) -> list[list[str]]:
    """The output's rows, split into words."""
    return [line.split() for line in result.output.splitlines()]


def test_queues_prints_a_table_of_counts(world: World) -> None:
    # Given two tasks due in `default` and one in `mail`
    world.add("default", "a")
    world.add("default", "b")
    world.add("mail", "m")
    # When listing queues
    result = world.cli("queues")
    # Then a header and one row per queue show state, rate and counts
    assert result.exit_code == 0, result.output
    head, *rows = lines(result)
    assert head[:4] == ["QUEUE", "STATE", "RATE", "BUCKET"]
    by_name = {row[0]: row for row in rows}
    assert by_name["default"][1:7] == ["RUNNING", "5/s", "5", "2", "2", "0"]
    assert by_name["mail"][4] == "1"
    # And numbers are right-aligned under their headers
    text = result.output.splitlines()
    col_end = text[0].index("WAITING") + len("WAITING")
    assert all(line[col_end - 1] != " " for line in text[1:])


def test_tasks_lists_a_queue_and_filters_by_state(world: World) -> None:
    # Given a failed task and a waiting one
    world.app.statuses += [500]
    world.add("default", "broken", retryConfig={"maxAttempts": 1})
    world.emulator.drain()
    world.add("default", "fresh")
    # When listing all, then failed only
    everything = world.cli("tasks", "default")
    failed = world.cli("tasks", "default", "--state", "failed")
    # Then each shows the right tasks with their state and last status
    assert everything.exit_code == 0, everything.output
    rows = {row[0]: row for row in lines(everything)[1:]}
    assert rows["broken"][1] == "FAILED" and rows["broken"][4] == "500"
    assert rows["fresh"][1] == "DUE"
    assert [row[0] for row in lines(failed)[1:]] == ["broken"]
    assert "no failed tasks in queue mail" in world.cli("tasks", "mail", "--state", "failed").output


def test_task_shows_headers_payload_and_attempts(world: World) -> None:
    # Given a deferred task that failed once and waits for its retry
    body = base64.b64encode(serialize(notify, "ann", urgent=True)).decode()
    world.app.statuses += [503]
    request = {"relativeUri": "/_ah/queue/deferred", "body": body, "headers": {"X-Trace": "abc"}}
    world.add("mail", "n1", appEngineHttpRequest=request, retryConfig={"minBackoff": "3600s", "maxBackoff": "3600s"})
    world.emulator.drain()
    # When it is shown by name alone
    result = world.cli("task", "n1")
    # Then its queue, call, headers and attempt are printed
    assert result.exit_code == 0, result.output
    assert "queue     mail" in result.output
    assert f"{__name__}.notify('ann', urgent=True)" in result.output
    assert "X-Trace: abc" in result.output
    attempt = lines(result)[-1]
    assert attempt[0] == "1" and "503" in attempt and "answered" in attempt


def test_run_delivers_a_task_now(world: World) -> None:
    # Given a task due in an hour
    world.add("mail", "later", scheduleTime=in_seconds(3600))
    # When it is run from the command line
    result = world.cli("run", "later")
    # Then the app receives it
    assert result.exit_code == 0, result.output
    assert "running task later of queue mail" in result.output
    assert world.app.arrived.wait(10) and world.app.paths == ["/work/later"]


def test_delete_removes_a_task(world: World) -> None:
    # Given a task
    world.add("default", "gone")
    # When it is deleted with its queue named
    result = world.cli("delete", "gone", "--queue", "default")
    # Then it is no longer there
    assert result.exit_code == 0 and "deleted task gone of queue default" in result.output
    assert world.emulator.task("default", "gone")[0] == 404


def test_pause_resume_and_purge(world: World) -> None:
    # Given a queue with tasks
    world.add("mail", "x")
    world.add("mail", "y")
    # When it is paused, Then `queues` shows it PAUSED
    assert world.cli("pause", "mail").output == "paused queue mail\n"
    assert {row[0]: row[1] for row in lines(world.cli("queues"))[1:]}["mail"] == "PAUSED"
    # When resumed and purged, Then it runs again and is empty
    assert world.cli("resume", "mail").exit_code == 0
    assert world.cli("purge", "mail").output == "purged queue mail\n"
    rows = {row[0]: row for row in lines(world.cli("queues"))[1:]}
    assert rows["mail"][1] == "RUNNING" and rows["mail"][4] == "0"


def test_resuming_a_queue_whose_rate_is_0_says_nothing_will_move(world: World) -> None:
    # Given a paused queue whose rate is 0
    parent = f"/v2/projects/{world.emulator.settings.project}/locations/{world.emulator.settings.location}"
    status, _ = world.emulator.call(
        "PATCH",
        f"{parent}/queues/mail?updateMask=rateLimits.maxDispatchesPerSecond",
        {"rateLimits": {"maxDispatchesPerSecond": 0}},
    )
    assert status == 200
    world.cli("pause", "mail")
    # When it is resumed, Then the CLI says nothing will be delivered rather than a bare "resumed"
    result = world.cli("resume", "mail")
    assert result.exit_code == 0
    assert "rate is 0" in result.output and "nothing will be delivered" in result.output


def test_retry_failed_puts_tasks_back(world: World) -> None:
    # Given two failed tasks
    world.app.statuses += [500, 500]
    world.add("default", "f1", retryConfig={"maxAttempts": 1})
    world.add("default", "f2", retryConfig={"maxAttempts": 1})
    world.emulator.drain()
    # When one, then the rest are retried
    one = world.cli("retry-failed", "default", "--task", "f1")
    rest = world.cli("retry-failed", "default")
    # Then the counts are reported and the app gets them again
    assert one.output == "retrying 1 failed task of queue default\n"
    assert rest.output == "retrying 1 failed task of queue default\n"
    assert world.emulator.drain()["succeeded"] == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["task", "ghost"], "Error: no task named 'ghost' in any queue\n"),
        (["task", "ghost", "--queue", "default"], "Error: no task named 'ghost' in queue 'default'\n"),
        (["task", "ghost", "--queue", "nope"], "Error: no queue named 'nope'\n"),
        (["run", "ghost"], "Error: no task named 'ghost' in any queue\n"),
        (["delete", "ghost", "--queue", "default"], "Error: no task named 'ghost' in queue 'default'\n"),
        (["pause", "nope"], "Error: no queue named 'nope'\n"),
        (["resume", "nope"], "Error: no queue named 'nope'\n"),
        (["purge", "nope"], "Error: no queue named 'nope'\n"),
        (["tasks", "nope"], "Error: no queue named 'nope'\n"),
        (["retry-failed", "nope"], "Error: no queue named 'nope'\n"),
        (["retry-failed", "default", "--task", "ghost"], "Error: no failed task named 'ghost' in queue 'default'\n"),
    ],
)
def test_mistakes_are_one_line_and_exit_2(world: World, args: list[str], message: str) -> None:
    # When a command names something that does not exist
    result = world.cli(*args)
    # Then it fails with one line and exit status 2
    assert result.exit_code == 2
    assert result.output == message


def test_unreachable_emulator_is_one_line_and_exit_2() -> None:
    # Given nothing listening on the port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # When a command runs against it
    result = CliRunner().invoke(cli, ["queues", "--emulator", f"http://127.0.0.1:{port}"])
    # Then it says so in one line and exits with status 2
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: cannot reach the emulator at http://127.0.0.1:{port} ([Errno 111] Connection refused); is it running?"
    ]


def test_the_emulator_is_found_through_the_environment(world: World) -> None:
    # Given DEFERRED_EMULATOR_HOST as host:port and no --emulator
    result = CliRunner().invoke(cli, ["queues"], env={"DEFERRED_EMULATOR_HOST": world.emulator.host})
    # Then the command reaches it
    assert result.exit_code == 0 and "default" in result.output


def test_emulator_url_resolution() -> None:
    # The flag wins, then the environment (host:port), then the default
    assert emulator_url("http://h:1/", {"DEFERRED_EMULATOR_HOST": "e:2"}) == "http://h:1"
    assert emulator_url(None, {"DEFERRED_EMULATOR_HOST": "e:2"}) == "http://e:2"
    assert emulator_url(None, {}) == "http://127.0.0.1:8123"


def test_table_and_relative_times() -> None:
    # Numbers go right, text left, and widths follow the widest cell
    assert table(["A", "NUM"], [["xyz", 5], ["q", 123]], right=[1]) == "A    NUM\nxyz    5\nq    123"
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert relative("2026-01-01T00:05:00.000000Z", now) == "in 5m"
    assert relative("2025-12-31T23:59:30.000000Z", now) == "30s ago"
    assert relative("2026-01-01T00:00:00.500000Z", now) == "now"
