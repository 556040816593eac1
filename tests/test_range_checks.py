"""Durations and timestamps: range-checked at every way in, and no stored value can break a read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import API, Handle, RecordingApp
from deferred_emulator.models import QueueConfig, QueueState, RetryConfig
from deferred_emulator.queueyaml import QueueYamlError, load_queue_yaml

#: protobuf's largest Duration: accepted by the parser, but 10000 years of backoff overflow any date.
HUGE = "315576000000s"
PROTO_MAX_S = 315_576_000_000.0


def retry_queue(**retry: Any) -> dict[str, Any]:
    return {"name": f"{API[4:]}/queues/q", "retryConfig": retry}


@pytest.mark.parametrize(
    "retry",
    [
        {"minBackoff": HUGE, "maxBackoff": HUGE},
        {"maxBackoff": HUGE},
        {"minBackoff": "2592001s", "maxBackoff": "2592001s"},
        {"maxAttempts": 2**40},
        {"maxDoublings": 2**40},
    ],
)
async def test_out_of_range_retry_config_is_refused_naming_the_field(emulator: Handle, retry: dict[str, Any]) -> None:
    # When a queue is created with a retry setting past the limits
    data = await emulator.call("POST", f"{API}/queues", retry_queue(**retry), expect=400)
    # Then the answer is 400 INVALID_ARGUMENT naming the field, and no queue was made
    assert data["error"]["status"] == "INVALID_ARGUMENT"
    assert any(key in data["error"]["message"] for key in retry), data
    await emulator.call("GET", f"{API}/queues/q", expect=404)


async def test_huge_task_retry_config_is_refused(emulator: Handle) -> None:
    data = await emulator.call(
        "POST",
        f"{API}/queues/default/tasks",
        {"task": {"appEngineHttpRequest": {"relativeUri": "/w"}, "retryConfig": {"maxBackoff": HUGE}}},
        expect=400,
    )
    assert "maxBackoff" in data["error"]["message"]


async def test_thirty_day_backoff_is_accepted(emulator: Handle) -> None:
    await emulator.call("POST", f"{API}/queues", retry_queue(minBackoff="2592000s", maxBackoff="2592000s"))


async def reads_answer(emulator: Handle) -> None:
    """Every read that shows the queue or its tasks answers 200."""
    await emulator.call("GET", f"{API}/queues")
    await emulator.call("GET", f"{API}/queues/q")
    await emulator.call("GET", "/_emulator/v1/stats")
    tasks = await emulator.call("GET", f"{API}/queues/q/tasks?responseView=FULL")
    assert tasks["tasks"]
    await emulator.call("GET", "/_emulator/v1/queues/q/tasks")
    await emulator.call("GET", f"{API}/queues/q/tasks/t")


async def test_stored_huge_backoff_cannot_break_reads(emulator: Handle, app_server: RecordingApp) -> None:
    # Given a queue stored with a 10000-year backoff (as an older version let through) and an app that fails
    retry = RetryConfig(min_backoff_s=PROTO_MAX_S, max_backoff_s=PROTO_MAX_S)
    await emulator.emulator.put_queue(QueueConfig("q", rate_per_s=500, bucket_size=500, retry=retry))
    app_server.statuses = [500]
    await emulator.add("q", name="t")
    # When the task fails once and is scheduled for a retry
    result = await emulator.drain()
    assert result["dispatched"] == 1
    # Then the queue, its stats and its tasks still read (the wait is cut to 30 days)
    await reads_answer(emulator)
    task = await emulator.call("GET", f"{API}/queues/q/tasks/t")
    assert task["scheduleTime"] < "2100"


async def test_stored_out_of_range_times_show_as_the_nearest_end(emulator: Handle) -> None:
    # Given a task whose stored ETA and times are past the year 9999 (written by hand into the database)
    await emulator.emulator.put_queue(QueueConfig("q", state=QueueState.PAUSED))
    await emulator.add("q", name="t")
    store = emulator.emulator.store
    await store._exec(
        "UPDATE task SET eta_us=?, first_attempt_us=?, last_dispatch_us=?, deadline_s=?, retry=?",
        (2**62, -(2**62), 2**62, 1e300, '{"min_backoff_s": 1e300, "max_backoff_s": 1e300, "age_limit_s": 1e300}'),
    )
    # Then every read still answers, showing the last instant it can print
    await reads_answer(emulator)
    task = await emulator.call("GET", f"{API}/queues/q/tasks/t?responseView=FULL")
    assert task["scheduleTime"].startswith("9999-12-31T23:59:59")


async def test_json_nested_deeper_than_the_cap_is_400(emulator: Handle) -> None:
    body = b'{"task": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for path in (f"{API}/queues/default/tasks", "/_emulator/v1/tasks:batchAdd", f"{API}/queues"):
        async with emulator.http.post(
            emulator.url + path, data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            assert resp.status == 400, await resp.text()
            data = await resp.json()
        assert "Nested deeper than 1024 levels" in data["error"]["message"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("min_backoff_seconds", "1e12"),
        ("max_backoff_seconds", ".inf"),
        ("max_backoff_seconds", ".nan"),
        ("task_age_limit", "9" * 400 + "d"),
        ("task_retry_limit", str(2**40)),
        ("max_doublings", str(2**40)),
    ],
)
def test_queue_yaml_out_of_range_retry_is_one_clear_error(tmp_path: Path, field: str, value: str) -> None:
    path = tmp_path / "queue.yaml"
    path.write_text(f"queue:\n- name: q\n  rate: 1/s\n  retry_parameters:\n    {field}: {value}\n")
    with pytest.raises(QueueYamlError, match=field):
        load_queue_yaml(path)


def test_queue_yaml_huge_storage_limit_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "queue.yaml"
    path.write_text("total_storage_limit: " + "9" * 400 + "T\nqueue:\n- name: q\n  rate: 1/s\n")
    with pytest.raises(QueueYamlError, match="total_storage_limit"):
        load_queue_yaml(path)


@pytest.mark.parametrize("value", ["nan", "inf", "1e300", "0"])
def test_serve_refuses_a_dispatch_deadline_out_of_range(value: str, tmp_path: Path) -> None:
    from click.testing import CliRunner
    from deferred_emulator.cli import cli

    result = CliRunner().invoke(
        cli, ["serve", "--port", "0", "--db", str(tmp_path / "t.db"), "--dispatch-deadline", value]
    )
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "--dispatch-deadline" in result.output


def test_backoff_of_a_stored_nan_or_negative_wait_stays_in_range() -> None:
    import math

    from deferred_emulator.backoff import MAX_BACKOFF_S, backoff_s

    assert backoff_s(RetryConfig(min_backoff_s=math.nan, max_backoff_s=math.nan), 3) == MAX_BACKOFF_S
    assert backoff_s(RetryConfig(min_backoff_s=-5, max_backoff_s=-1), 2) == 0
    assert backoff_s(RetryConfig(min_backoff_s=PROTO_MAX_S, max_backoff_s=PROTO_MAX_S), 1) == MAX_BACKOFF_S
