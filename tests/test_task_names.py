"""Task names: App Engine's rules, generated names, duplicates and tombstones with a configurable lifetime."""

from __future__ import annotations

import re
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import API, Handle, MakeEmulator, RecordingApp
from deferred_emulator import cli as cli_module

TASKS = f"{API}/queues/default/tasks"


@pytest.fixture
async def emu(make_emulator: MakeEmulator, app_server: RecordingApp) -> Handle:
    """An emulator that delivers only when drained, on the virtual clock, with 60 s tombstones."""
    return await make_emulator(app_url=app_server.url, dispatch=False, virtual_clock=True, tombstone_ttl_s=60)


async def add(emu: Handle, name: str | None = None, expect: int = 200, queue: str = "default") -> dict[str, Any]:
    task: dict[str, Any] = {"appEngineHttpRequest": {"relativeUri": "/work"}}
    if name is not None:
        task["name"] = name
    return dict(await emu.call("POST", f"{API}/queues/{queue}/tasks", {"task": task}, expect=expect))


def short(task: dict[str, Any]) -> str:
    return str(task["name"]).rsplit("/", 1)[1]


async def test_name_length_and_characters(emu: Handle) -> None:
    # Given names at the limit and just over it
    longest = "a-_9" * 125
    assert short(await add(emu, longest)) == longest
    assert short(await add(emu, f"{API[4:]}/queues/default/tasks/full-path")) == "full-path"
    # Then 501 characters, a space or a dot are refused with production's message
    for bad in ("a" * 501, "not a valid id", "dotted.name"):
        error = (await add(emu, bad, expect=400))["error"]
        assert error["status"] == "INVALID_ARGUMENT"
        assert error["message"] == (
            f'Task ID "{bad}" can contain only letters ([A-Za-z]), numbers ([0-9]), hyphens (-), or underscores (_).'
            " Task ID must between 1 and 500 characters."
        )


async def test_unnamed_tasks_get_unique_generated_names(emu: Handle) -> None:
    names = {short(await add(emu)) for _ in range(5)}
    assert len(names) == 5
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,500}", name) for name in names)


async def test_duplicate_of_a_waiting_task(emu: Handle) -> None:
    # Given a waiting task
    await add(emu, "once")
    # When the same name is added again
    error = (await add(emu, "once", expect=409))["error"]
    # Then 409 ALREADY_EXISTS, in production's words (conformance errors.json, task/create/already-exists)
    assert error["status"] == "ALREADY_EXISTS"
    assert error["message"] == "Requested entity already exists"


async def test_names_are_per_queue(emu: Handle) -> None:
    await emu.call("POST", f"{API}/queues", {"name": f"{API[4:]}/queues/other"})
    await add(emu, "same")
    await add(emu, "same", queue="other")


async def test_duplicate_names_in_one_batch(emu: Handle) -> None:
    tasks = [{"queue": "default", "task": {"name": "twin"}}] * 2
    error = await emu.call("POST", "/_emulator/v1/tasks:batchAdd", {"tasks": tasks}, expect=400)
    assert "twice" in error["error"]["message"]
    # and nothing was added (all or none)
    assert (await emu.call("GET", TASKS))["tasks"] == []


async def assert_tombstoned(emu: Handle, name: str) -> None:
    error = (await add(emu, name, expect=409))["error"]
    assert error["status"] == "ALREADY_EXISTS"
    assert "tombstoned" in error["message"]
    got = await emu.call("GET", f"{TASKS}/{name}", expect=404)
    assert got["error"]["message"] == (
        "The task no longer exists, though a task with this name existed recently."
        " The task either successfully completed or was deleted."
    )


async def test_success_leaves_a_tombstone(emu: Handle, app_server: RecordingApp) -> None:
    await add(emu, "ran")
    assert (await emu.drain())["succeeded"] == 1
    await assert_tombstoned(emu, "ran")


async def test_delete_leaves_a_tombstone(emu: Handle) -> None:
    await add(emu, "deleted")
    await emu.call("DELETE", f"{TASKS}/deleted")
    await assert_tombstoned(emu, "deleted")


async def test_purge_leaves_tombstones(emu: Handle) -> None:
    await add(emu, "purged")
    await emu.call("POST", f"{API}/queues/default:purge", {})
    await assert_tombstoned(emu, "purged")


async def test_giving_up_leaves_a_tombstone(emu: Handle, app_server: RecordingApp) -> None:
    # Given a task allowed one attempt, which fails
    app_server.statuses = [500]
    task = {"name": "gave-up", "retryConfig": {"maxAttempts": 1}}
    await emu.call("POST", TASKS, {"task": task})
    assert (await emu.drain())["failed"] == 1
    # Then the name is tombstoned although the FAILED task is kept
    error = (await add(emu, "gave-up", expect=409))["error"]
    assert "tombstoned" in error["message"]
    assert (await emu.call("GET", f"{TASKS}/gave-up"))["state"] == "FAILED"


async def test_tombstones_expire_after_their_lifetime(emu: Handle) -> None:
    # Given a name tombstoned with a 60 s lifetime
    await add(emu, "reuse")
    await emu.call("DELETE", f"{TASKS}/reuse")
    # When 50 s pass, it is still reserved (the virtual clock also moves with real time, hence the margin)
    await emu.call("POST", "/_emulator/v1/clock:advance", {"seconds": 50})
    await assert_tombstoned(emu, "reuse")
    # When the 60 s are over, it can be used again
    await emu.call("POST", "/_emulator/v1/clock:advance", {"seconds": 11})
    assert short(await add(emu, "reuse")) == "reuse"


async def test_reset_clears_tombstones(emu: Handle) -> None:
    await add(emu, "again")
    await emu.call("DELETE", f"{TASKS}/again")
    await emu.call("POST", "/_emulator/v1/reset", {})
    assert short(await add(emu, "again")) == "again"


async def test_default_lifetime_is_seven_days(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(dispatch=False, virtual_clock=True)
    await add(emu, "week")
    await emu.call("DELETE", f"{TASKS}/week")
    await emu.call("POST", "/_emulator/v1/clock:advance", {"seconds": 7 * 86400 - 60})
    await add(emu, "week", expect=409)
    await emu.call("POST", "/_emulator/v1/clock:advance", {"seconds": 120})
    await add(emu, "week")


def serve_settings(monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str] | None = None) -> Any:
    """The Settings ``serve`` builds from ``args`` (the server loop replaced by one that records them)."""
    seen: dict[str, Any] = {}

    async def fake_run(settings: Any, sock: Any) -> None:
        sock.close()
        seen["settings"] = settings

    monkeypatch.setattr(cli_module, "run_server", fake_run)
    result = CliRunner().invoke(cli_module.cli, ["serve", "--db", ":memory:", "-p", "0", *args], env=env)
    assert result.exit_code == 0, result.output
    return seen["settings"]


def test_tombstone_ttl_flag_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert serve_settings(monkeypatch, []).tombstone_ttl_s == 7 * 86400
    assert serve_settings(monkeypatch, ["--tombstone-ttl", "3600"]).tombstone_ttl_s == 3600
    env = {"DEFERRED_EMULATOR_TOMBSTONE_TTL": "90"}
    assert serve_settings(monkeypatch, [], env).tombstone_ttl_s == 90


def test_negative_tombstone_ttl_is_refused() -> None:
    result = CliRunner().invoke(cli_module.cli, ["serve", "--db", ":memory:", "--tombstone-ttl", "-1"])
    assert result.exit_code == 2
    assert "--tombstone-ttl" in result.output
