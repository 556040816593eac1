"""The task list on the command line: what each task runs, the filters, ETAs to the minute, zoned times, rates."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from click.testing import CliRunner, Result
from deferred_client.serialize import serialize
from deferred_emulator.cli import cli
from deferred_emulator.cli_inspect import local_time, relative, span_text
from test_client_fixtures import LiveEmulator

pytest_plugins = ["test_client_fixtures"]


def send_welcome(user_id: int, *, template: str) -> None:
    """Deferred by these tests, never run here."""


def send_invoice(number: int) -> None:
    """Deferred by these tests, never run here."""


class Shop:
    """An emulator with a `mail` queue set to 2 a minute, and helpers to fill it."""

    def __init__(self, emulator: LiveEmulator) -> None:
        self.emulator = emulator
        parent = f"/v2/projects/{emulator.settings.project}/locations/{emulator.settings.location}"
        self.queues = f"{parent}/queues"

    def add(self, name: str, payload: bytes | None = None, queue: str = "default", **task: Any) -> None:
        request: dict[str, Any] = {"relativeUri": f"/work/{name}"}
        if payload is not None:
            request = {"relativeUri": "/_ah/queue/deferred", "body": base64.b64encode(payload).decode()}
        body = {"task": {"name": name, "appEngineHttpRequest": request, **task}}
        status, data = self.emulator.call("POST", f"{self.queues}/{queue}/tasks", body)
        assert status == 200, data

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(cli, [*args, "--emulator", self.emulator.url])


@pytest.fixture
def shop(live_emulator: Callable[..., LiveEmulator]) -> Shop:
    emulator = live_emulator(db_path=":memory:")
    emulator.create_queue("mail", rateLimits={"maxDispatchesPerSecond": 2 / 60})
    return Shop(emulator)


def rows(result: Result) -> dict[str, str]:
    """Each output row by its first word."""
    assert result.exit_code == 0, result.output
    return {line.split()[0]: line for line in result.output.splitlines()[1:] if line.strip()}


def test_task_rows_show_the_callable_or_the_request(shop: Shop) -> None:
    # Given a deferred call and a plain task
    shop.add("welcome-1", serialize(send_welcome, 42, template="welcome"))
    shop.add("sync")
    # When the queue's tasks are listed
    result = shop.cli("tasks", "default")
    # Then the deferred row names the call, the other its method and URL, under RUNS
    assert result.output.splitlines()[0].split()[-1] == "RUNS"
    listed = rows(result)
    assert listed["welcome-1"].endswith(f"{__name__}.send_welcome(42, template='welcome')")
    assert listed["sync"].endswith("POST /work/sync")


def test_tasks_filter_by_name_and_callable(shop: Shop) -> None:
    # Given welcome and invoice calls
    for i in range(2):
        shop.add(f"welcome-{i}", serialize(send_welcome, i, template="t"))
        shop.add(f"invoice-{i}", serialize(send_invoice, i))
    shop.add("welcome-plain")
    # When filtered by name prefix, by callable and by both
    by_name = rows(shop.cli("tasks", "default", "--name", "welcome-"))
    by_callable = rows(shop.cli("tasks", "default", "--callable", "send_invoice"))
    both = rows(shop.cli("tasks", "default", "--name", "welcome-", "--callable", "send_welcome"))
    nothing = shop.cli("tasks", "default", "--name", "zzz")
    # Then each keeps what it names
    assert sorted(by_name) == ["welcome-0", "welcome-1", "welcome-plain"]
    assert sorted(by_callable) == ["invoice-0", "invoice-1"]
    assert sorted(both) == ["welcome-0", "welcome-1"]
    assert nothing.exit_code == 0 and nothing.output == "no tasks in queue default matching name:zzz\n"


def test_a_bad_filter_is_one_line_and_exit_2(shop: Shop) -> None:
    result = shop.cli("tasks", "default", "--name", "bad name")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: 400: Invalid filter: name:bad name cannot start a task name (letters, digits, - and _)."
    ]


def test_etas_are_to_the_minute_and_rates_in_their_unit(shop: Shop) -> None:
    # Given a task due in 1 h 59 m 30 s
    eta = datetime.now(timezone.utc) + timedelta(hours=1, minutes=59, seconds=30)
    shop.add("later", scheduleTime=eta.strftime("%Y-%m-%dT%H:%M:%SZ"))
    # When the tasks and the queues are listed
    listed = rows(shop.cli("tasks", "default"))
    queues = rows(shop.cli("queues"))
    # Then the ETA is not floored to the hour, and the 2-a-minute queue reads 2/m
    assert "in 1h 59m" in listed["later"]
    assert queues["mail"].split()[2] == "2/m" and queues["default"].split()[2] == "5/s"


def test_task_times_carry_their_zone(shop: Shop) -> None:
    shop.add("one")
    out = shop.cli("task", "one").output
    created = next(line for line in out.splitlines() if line.startswith("created"))
    zone = datetime.now().astimezone().tzname()
    assert created.endswith(f" {zone}"), created


def test_span_and_zone_helpers() -> None:
    assert [span_text(s) for s in (0, 42, 300, 303, 7140, 7199, 90000)] == [
        "0s", "42s", "5m", "5m 3s", "1h 59m", "1h 59m", "1d 1h",
    ]  # fmt: skip
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert relative("2026-01-01T01:59:59.000000Z", now) == "in 1h 59m"
    assert relative("2025-12-31T22:00:00.000000Z", now) == "2h ago"
    assert local_time("2026-01-01T00:00:00.000000Z").endswith(datetime(2026, 1, 1).astimezone().tzname() or "")
