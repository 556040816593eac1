"""queue.yaml applied to a running emulator: at start, on change, and what a removal does."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import API, Handle, MakeEmulator, RecordingApp
from deferred_emulator.api.timefmt import format_ts
from deferred_emulator.cli import banner
from deferred_emulator.models import QueueConfig, QueueState, RetryConfig
from deferred_emulator.queuesync import REMOVED, merged, removed

TWO_QUEUES = """
queue:
- name: mail
  rate: 20/s
  bucket_size: 7
  max_concurrent_requests: 3
  retry_parameters:
    task_retry_limit: 4
    task_age_limit: 1h
    min_backoff_seconds: 2
    max_backoff_seconds: 60
    max_doublings: 2
- name: reports
  rate: 5/s
"""


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (bounded) until ``condition()`` holds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def rewrite(path: Path, text: str) -> None:
    """Replace the file and make sure its mtime moves, however coarse the filesystem clock."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    if path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


@pytest.fixture
def yaml_path(tmp_path: Path) -> Path:
    path = tmp_path / "queue.yaml"
    path.write_text(TWO_QUEUES)
    return path


async def start(make_emulator: MakeEmulator, app: RecordingApp, path: Path, **settings: object) -> Handle:
    return await make_emulator(app_url=app.url, queue_yaml=str(path), queue_yaml_poll_s=0.05, **settings)


async def test_queues_show_in_the_cloud_tasks_json(
    make_emulator: MakeEmulator, app_server: RecordingApp, yaml_path: Path
) -> None:
    # Given an emulator started with a queue.yaml
    emu = await start(make_emulator, app_server, yaml_path)
    # When the queues are listed
    listed = await emu.call("GET", f"{API}/queues")
    names = [q["name"].rsplit("/", 1)[1] for q in listed["queues"]]
    mail = await emu.call("GET", f"{API}/queues/mail")
    # Then the file's queues are there, with default, and mail's settings as Cloud Tasks shows them
    assert names == ["default", "mail", "reports"]
    assert mail["state"] == "RUNNING"
    assert mail["rateLimits"] == {"maxDispatchesPerSecond": 20.0, "maxBurstSize": 7, "maxConcurrentDispatches": 3}
    assert mail["retryConfig"] == {
        "maxAttempts": 5,
        "maxRetryDuration": "3600s",
        "minBackoff": "2s",
        "maxBackoff": "60s",
        "maxDoublings": 2,
    }


async def test_default_queue_exists_without_a_file(make_emulator: MakeEmulator) -> None:
    # Given an emulator without queue.yaml
    emu = await make_emulator()
    # Then default exists at 5/s with a bucket of 5
    default = await emu.call("GET", f"{API}/queues/default")
    assert default["rateLimits"]["maxDispatchesPerSecond"] == 5
    assert default["rateLimits"]["maxBurstSize"] == 5
    assert default["state"] == "RUNNING"


async def test_the_file_overrides_default_and_removing_it_restores_the_defaults(
    make_emulator: MakeEmulator, app_server: RecordingApp, yaml_path: Path
) -> None:
    # Given a file that slows the default queue down
    yaml_path.write_text("queue:\n- name: default\n  rate: 1/m\n  bucket_size: 1\n")
    emu = await start(make_emulator, app_server, yaml_path)
    default = await emu.call("GET", f"{API}/queues/default")
    assert default["rateLimits"]["maxDispatchesPerSecond"] == pytest.approx(1 / 60)
    assert default["rateLimits"]["maxBurstSize"] == 1
    # When default is taken out of the file
    rewrite(yaml_path, "queue:\n- name: other\n  rate: 1/s\n")
    await until(lambda: emu.emulator.queues["default"].source == "default")
    # Then default is back to 5/s, bucket 5, still running (default always exists)
    default = await emu.call("GET", f"{API}/queues/default")
    assert default["rateLimits"]["maxDispatchesPerSecond"] == 5
    assert default["rateLimits"]["maxBurstSize"] == 5
    assert default["state"] == "RUNNING"


async def test_rate_zero_pauses(make_emulator: MakeEmulator, app_server: RecordingApp, yaml_path: Path) -> None:
    # Given a queue at rate 0 holding a task
    yaml_path.write_text("queue:\n- name: held\n  rate: 0\n")
    emu = await start(make_emulator, app_server, yaml_path)
    await emu.add("held")
    # Then it is paused: even drain delivers nothing from it
    assert (await emu.call("GET", f"{API}/queues/held"))["state"] == "PAUSED"
    assert (await emu.drain())["dispatched"] == 0
    # When the file gives it a rate
    rewrite(yaml_path, "queue:\n- name: held\n  rate: 5/s\n")
    # Then it resumes and the task is delivered
    await app_server.wait_for(1)
    assert emu.emulator.queues["held"].state is QueueState.RUNNING


async def test_removing_a_queue_pauses_it_and_keeps_its_tasks(
    make_emulator: MakeEmulator, app_server: RecordingApp, yaml_path: Path
) -> None:
    # Given a running emulator whose file defines mail and reports, and a task due in a minute in reports
    emu = await start(make_emulator, app_server, yaml_path)
    await emu.add("reports", name="later", scheduleTime=format_ts(emu.emulator.now_us() + 60_000_000))
    # When reports is removed from the file
    rewrite(yaml_path, TWO_QUEUES.split("- name: reports")[0])
    await until(lambda: emu.emulator.queues["reports"].state is QueueState.PAUSED)
    # Then the queue is paused, not deleted: listed, its task kept, new tasks accepted but not delivered
    reports = await emu.call("GET", f"{API}/queues/reports")
    assert reports["state"] == "PAUSED"
    tasks = await emu.call("GET", f"{API}/queues/reports/tasks")
    assert [t["name"].rsplit("/", 1)[1] for t in tasks["tasks"]] == ["later"]
    await emu.add("reports", name="new")
    assert (await emu.drain())["dispatched"] == 0
    assert app_server.requests == []
    # When it is put back
    rewrite(yaml_path, TWO_QUEUES)
    # Then it runs again and the due task is delivered
    [req] = await app_server.wait_for(1)
    assert req.headers["X-AppEngine-TaskName"] == "new"
    assert emu.emulator.queues["reports"].source == "yaml"


async def test_a_bad_edit_keeps_the_previous_settings(
    make_emulator: MakeEmulator, app_server: RecordingApp, yaml_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a running emulator
    emu = await start(make_emulator, app_server, yaml_path)
    # When the file is saved with a mistake
    with caplog.at_level(logging.ERROR, logger="deferred_emulator.queuesync"):
        rewrite(yaml_path, TWO_QUEUES.replace("bucket_size: 7", "bucket_size: 0"))
        await until(lambda: any("bucket_size" in r.getMessage() for r in caplog.records))
    # Then the error is logged in one line naming queue and field, and nothing changed
    [record] = [r for r in caplog.records if "bucket_size" in r.getMessage()]
    assert f"{yaml_path}: queue mail: bucket_size: 0 must be between 1 and 500" in record.getMessage()
    assert emu.emulator.queues["mail"].bucket_size == 7
    # When it is fixed
    rewrite(yaml_path, TWO_QUEUES.replace("bucket_size: 7", "bucket_size: 9"))
    # Then the new settings apply
    await until(lambda: emu.emulator.queues["mail"].bucket_size == 9)


async def test_a_pause_through_the_api_outlives_a_reload(
    make_emulator: MakeEmulator, app_server: RecordingApp, yaml_path: Path
) -> None:
    # Given mail paused through the API
    emu = await start(make_emulator, app_server, yaml_path)
    await emu.call("POST", f"{API}/queues/mail:pause", {})
    # When the file changes mail's rate
    rewrite(yaml_path, TWO_QUEUES.replace("rate: 20/s", "rate: 10/s"))
    await until(lambda: emu.emulator.queues["mail"].rate_per_s == 10)
    # Then mail takes the new rate but stays paused
    assert emu.emulator.queues["mail"].state is QueueState.PAUSED
    # When the file asks for paused queues to be resumed
    rewrite(yaml_path, "resume_paused_queues: true\n" + TWO_QUEUES)
    # Then it resumes
    await until(lambda: emu.emulator.queues["mail"].state is QueueState.RUNNING)


async def test_pull_queue_is_listed_but_refuses_push_tasks(
    make_emulator: MakeEmulator, app_server: RecordingApp, yaml_path: Path
) -> None:
    # Given a pull queue
    yaml_path.write_text("queue:\n- name: leases\n  mode: pull\n")
    emu = await start(make_emulator, app_server, yaml_path)
    # Then it is listed as a pull queue
    leases = await emu.call("GET", f"{API}/queues/leases")
    assert leases["mode"] == "PULL"
    # When a push task is added
    error = await emu.call("POST", f"{API}/queues/leases/tasks", {"task": {"appEngineHttpRequest": {}}}, expect=400)
    # Then it is refused with a clear error
    assert error["error"]["status"] == "FAILED_PRECONDITION"
    assert "INVALID_QUEUE_MODE" in error["error"]["message"]
    assert "pull queue" in error["error"]["message"]


async def test_queues_removed_while_stopped_are_paused_at_start(
    make_emulator: MakeEmulator, app_server: RecordingApp, yaml_path: Path, tmp_path: Path
) -> None:
    # Given a database where reports came from queue.yaml and holds a task (the emulator not dispatching)
    first = await start(make_emulator, app_server, yaml_path, dispatch=False)
    await first.add("reports")
    # When a second emulator starts on that database with a file that no longer lists reports
    other = tmp_path / "other.yaml"
    other.write_text(TWO_QUEUES.split("- name: reports")[0])
    second = await start(make_emulator, app_server, other)
    # Then reports is paused from the start and its task is kept, undelivered
    assert second.emulator.queues["reports"].state is QueueState.PAUSED
    assert second.emulator.queues["reports"].source == REMOVED
    tasks = await second.call("GET", f"{API}/queues/reports/tasks")
    assert len(tasks["tasks"]) == 1
    assert (await second.drain())["dispatched"] == 0


def test_merge_rules() -> None:
    # Given a queue as the file wants it
    wanted = QueueConfig("q", rate_per_s=3, bucket_size=4, retry=RetryConfig(retry_limit=1), source="yaml")
    # A new queue runs, and takes the creation time given
    new = merged(None, wanted, 123, False)
    assert (new.state, new.created_us) == (QueueState.RUNNING, 123)
    # An existing queue keeps its creation and purge times
    current = QueueConfig("q", created_us=5, purge_us=6, source="api")
    kept = merged(current, wanted, 123, False)
    assert (kept.created_us, kept.purge_us, kept.rate_per_s, kept.source) == (5, 6, 3, "yaml")
    # A queue the file had removed, or paused with rate 0, is resumed by the file
    gone = removed(QueueConfig("q", source="yaml"))
    assert (gone.state, gone.source) == (QueueState.PAUSED, REMOVED)
    assert merged(gone, wanted, 0, False).state is QueueState.RUNNING
    zero = QueueConfig("q", state=QueueState.PAUSED, rate_per_s=0, source="yaml")
    assert merged(zero, wanted, 0, False).state is QueueState.RUNNING
    # A pause from elsewhere stays, unless resume_paused_queues
    paused = QueueConfig("q", state=QueueState.PAUSED, source="yaml", rate_per_s=3)
    assert merged(paused, wanted, 0, False).state is QueueState.PAUSED
    assert merged(paused, wanted, 0, True).state is QueueState.RUNNING
    # Rate 0 always pauses
    assert merged(None, wanted.with_changes(rate_per_s=0.0), 0, True).state is QueueState.PAUSED


async def test_banner_lists_the_files_queues(make_emulator: MakeEmulator, tmp_path: Path) -> None:
    # Given an emulator started with the README's example file
    example = Path(__file__).resolve().parent.parent / "examples" / "queue.yaml"
    emu = await make_emulator(queue_yaml=str(example), dispatch=False)
    # When serve would print its banner
    text = banner(emu.app, emu.emulator.settings, 8123)
    # Then it names the file and shows each queue's rate, bucket, concurrency and state
    assert f"queues    {example} (reloaded when it changes)" in text
    lines = {line.split()[0]: line.split(None, 1)[1] for line in text.splitlines() if line.startswith("    ")}
    assert lines["mail"] == "2/m, bucket 1, 1 at once, running"
    assert lines["reports"] == "0, bucket 5, paused"
    assert lines["leases"] == "pull"
    assert lines["default"] == "10/s, bucket 20, running"
