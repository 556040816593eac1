"""queue.yaml: parsing and App Engine's validation rules, each just inside and just outside."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from deferred_emulator import cli as cli_module
from deferred_emulator.models import QueueState, RetryConfig
from deferred_emulator.queueyaml import QueueYamlError, load_queue_yaml, parse_queue_yaml

EXAMPLE = """
total_storage_limit: 120M
queue:
- name: default
  rate: 1/s
  bucket_size: 2
- name: mail
  rate: 120/m
  bucket_size: 40
  max_concurrent_requests: 10
  target: v2.worker
  retry_parameters:
    task_retry_limit: 7
    task_age_limit: 2d
    min_backoff_seconds: 10
    max_backoff_seconds: 300
    max_doublings: 3
- name: paused
  rate: 0
- name: leases
  mode: pull
  retry_parameters:
    task_retry_limit: 3
"""


def one_queue(body: str) -> str:
    """A file with one queue named q whose entry lines are ``body``."""
    lines = "\n".join("  " + line for line in body.strip().splitlines())
    return f"queue:\n- name: q\n{lines}\n"


def error_of(text: str) -> str:
    with pytest.raises(QueueYamlError) as info:
        parse_queue_yaml(text, "conf/queue.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_example_file() -> None:
    # Given a queue.yaml using every field
    # When it is parsed
    file = parse_queue_yaml(EXAMPLE)
    queues = {q.name: q for q in file.queues}
    # Then each queue has App Engine's meaning of its settings
    assert file.total_storage_limit == 120 * 1024**2
    assert (queues["default"].rate_per_s, queues["default"].bucket_size) == (1.0, 2)
    mail = queues["mail"]
    assert (mail.rate_per_s, mail.bucket_size, mail.max_concurrent, mail.target) == (2.0, 40, 10, "v2.worker")
    assert mail.retry == RetryConfig(7, 172800.0, 10.0, 300.0, 3)
    assert mail.state is QueueState.RUNNING and mail.mode == "push" and mail.source == "yaml"
    assert queues["paused"].state is QueueState.PAUSED and queues["paused"].rate_per_s == 0
    assert queues["leases"].mode == "pull" and queues["leases"].retry.retry_limit == 3


@pytest.mark.parametrize(
    ("rate", "per_s"),
    [("5/s", 5.0), ("120/m", 2.0), ("3600/h", 1.0), ("86400/d", 1.0), ("2.5/s", 2.5), ("0", 0.0), ("0/s", 0.0)],
)
def test_rate_units(rate: str, per_s: float) -> None:
    [queue] = parse_queue_yaml(one_queue(f"rate: {rate}")).queues
    assert queue.rate_per_s == pytest.approx(per_s)
    assert (queue.state is QueueState.PAUSED) is (per_s == 0)


@pytest.mark.parametrize("rate", ["500/s", "30000/m"])
def test_rate_at_the_production_cap_is_accepted(rate: str) -> None:
    [queue] = parse_queue_yaml(one_queue(f"rate: {rate}")).queues
    assert queue.rate_per_s == 500


@pytest.mark.parametrize("rate", ["500.1/s", "30001/m"])
def test_rate_over_the_production_cap_is_refused(rate: str) -> None:
    assert "conf/queue.yaml: queue q: rate:" in error_of(one_queue(f"rate: {rate}"))
    assert "500/s" in error_of(one_queue(f"rate: {rate}"))


@pytest.mark.parametrize("rate", ["5", "5/x", "five/s", "-1/s", "5/s 10", "/s", "true"])
def test_malformed_rate(rate: str) -> None:
    assert error_of(one_queue(f"rate: {rate}")).startswith("conf/queue.yaml: queue q: rate: ")


def test_push_queue_needs_a_rate() -> None:
    assert "queue q: rate: required for push queues" in error_of(one_queue("bucket_size: 5"))


@pytest.mark.parametrize(("field", "low", "high"), [("bucket_size", 1, 500), ("max_concurrent_requests", 1, 5000)])
def test_integer_bounds(field: str, low: int, high: int) -> None:
    # Given values at the bounds, then just outside them
    for good in (low, high):
        [queue] = parse_queue_yaml(one_queue(f"rate: 1/s\n{field}: {good}")).queues
        assert good in (queue.bucket_size, queue.max_concurrent)
    for bad in (low - 1, high + 1):
        message = error_of(one_queue(f"rate: 1/s\n{field}: {bad}"))
        # Then the error names the file, the queue, the field and the bounds
        assert message == f"conf/queue.yaml: queue q: {field}: {bad} must be between {low} and {high}"
    assert "must be a whole number" in error_of(one_queue(f"rate: 1/s\n{field}: ten"))
    assert "must be a whole number" in error_of(one_queue(f"rate: 1/s\n{field}: 2.5"))


def test_defaults_for_bucket_and_concurrency() -> None:
    [queue] = parse_queue_yaml(one_queue("rate: 1/s")).queues
    assert queue.bucket_size == 5 and queue.max_concurrent is None and queue.retry == RetryConfig()


@pytest.mark.parametrize("target", ["worker", "v2.worker", "a-b", "x" * 63])
def test_target_accepted(target: str) -> None:
    [queue] = parse_queue_yaml(one_queue(f"rate: 1/s\ntarget: {target}")).queues
    assert queue.target == target


@pytest.mark.parametrize("target", ["Worker", "-worker", "a.b.c", "x" * 64, "wor_ker"])
def test_target_refused(target: str) -> None:
    assert "queue q: target:" in error_of(one_queue(f"rate: 1/s\ntarget: {target}"))


def test_mode() -> None:
    assert "queue q: mode: 'poll' must be push or pull" in error_of(one_queue("mode: poll"))


@pytest.mark.parametrize("line", ["rate: 1/s", "bucket_size: 5", "max_concurrent_requests: 2", "target: worker"])
def test_pull_queue_refuses_push_settings(line: str) -> None:
    field = line.split(":")[0]
    assert f"queue q: {field}: not allowed on a pull queue" in error_of(one_queue(f"mode: pull\n{line}"))


def test_pull_queue_only_takes_a_retry_limit() -> None:
    text = one_queue("mode: pull\nretry_parameters:\n  task_age_limit: 1d")
    assert "queue q: retry_parameters.task_age_limit: not allowed on a pull queue" in error_of(text)


def retry_of(lines: str) -> RetryConfig:
    body = "rate: 1/s\nretry_parameters:\n" + "\n".join("  " + line for line in lines.splitlines())
    [queue] = parse_queue_yaml(one_queue(body)).queues
    return queue.retry


def retry_error(lines: str) -> str:
    body = "rate: 1/s\nretry_parameters:\n" + "\n".join("  " + line for line in lines.splitlines())
    return error_of(one_queue(body))


@pytest.mark.parametrize(
    ("text", "seconds"), [("1s", 1), ("90s", 90), ("15m", 900), ("1.5h", 5400), ("2d", 172800), ("1.9s", 1)]
)
def test_task_age_limit_units(text: str, seconds: int) -> None:
    assert retry_of(f"task_age_limit: {text}").age_limit_s == seconds


@pytest.mark.parametrize("text", ["0s", "0.5s", "10", "15x", "d", "-1s"])
def test_task_age_limit_refused(text: str) -> None:
    assert "queue q: retry_parameters.task_age_limit:" in retry_error(f"task_age_limit: {text}")


def test_retry_numbers_just_inside_and_outside() -> None:
    assert retry_of("task_retry_limit: 0").retry_limit == 0
    assert "task_retry_limit: -1 must be at least 0" in retry_error("task_retry_limit: -1")
    assert retry_of("max_doublings: 0").max_doublings == 0
    assert "max_doublings: -1 must be at least 0" in retry_error("max_doublings: -1")
    assert retry_of("min_backoff_seconds: 0").min_backoff_s == 0
    assert "min_backoff_seconds: -0.1 must not be negative" in retry_error("min_backoff_seconds: -0.1")
    assert retry_of("max_backoff_seconds: 0").max_backoff_s == 0
    assert "max_backoff_seconds: -1 must not be negative" in retry_error("max_backoff_seconds: -1")
    assert "must be a number of seconds" in retry_error("min_backoff_seconds: soon")
    assert "retry_parameters.retry_limit: unknown field" in retry_error("retry_limit: 3")


def test_backoff_fix_ups() -> None:
    # A lone min above the default max raises the max; a lone max below the default min lowers the min
    assert retry_of("min_backoff_seconds: 5000") == RetryConfig(min_backoff_s=5000, max_backoff_s=5000)
    assert retry_of("max_backoff_seconds: 0.05") == RetryConfig(min_backoff_s=0.05, max_backoff_s=0.05)
    # Lone values that fit the other default leave it alone
    assert retry_of("min_backoff_seconds: 10") == RetryConfig(min_backoff_s=10, max_backoff_s=3600)
    assert retry_of("max_backoff_seconds: 60") == RetryConfig(min_backoff_s=0.1, max_backoff_s=60)
    # Both given: min may equal max, but not exceed it
    assert retry_of("min_backoff_seconds: 5\nmax_backoff_seconds: 5").max_backoff_s == 5
    message = retry_error("min_backoff_seconds: 6\nmax_backoff_seconds: 5")
    assert message == (
        "conf/queue.yaml: queue q: retry_parameters.min_backoff_seconds: 6 is greater than max_backoff_seconds (5)"
    )


@pytest.mark.parametrize(
    ("text", "size"),
    [("120M", 120 * 1024**2), ("1.5K", 1536), ("100", 100), ("10B", 10), ("1G", 1024**3), ("2T", 2 * 1024**4)],
)
def test_total_storage_limit(text: str, size: int) -> None:
    assert parse_queue_yaml(f"total_storage_limit: {text}\nqueue: []").total_storage_limit == size


@pytest.mark.parametrize("text", ["12X", "''", "-5M", "M"])
def test_total_storage_limit_refused(text: str) -> None:
    assert "conf/queue.yaml: total_storage_limit:" in error_of(f"total_storage_limit: {text}\nqueue: []")


def test_queue_names() -> None:
    name = "a" * 100
    [queue] = parse_queue_yaml(f"queue:\n- name: {name}\n  rate: 1/s").queues
    assert queue.name == name
    assert "queue #1: name:" in error_of(f"queue:\n- name: {name}a\n  rate: 1/s")
    assert "queue #1: name:" in error_of("queue:\n- name: a_b\n  rate: 1/s")
    assert "queue #2: name: required" in error_of("queue:\n- name: a\n  rate: 1/s\n- rate: 1/s")
    assert "queue a: name: defined twice" in error_of("queue:\n- name: a\n  rate: 1/s\n- name: a\n  rate: 2/s")


def test_at_most_one_hundred_queues() -> None:
    def file(count: int) -> str:
        return "queue:\n" + "".join(f"- name: q{i}\n  rate: 1/s\n" for i in range(count))

    assert len(parse_queue_yaml(file(100)).queues) == 100
    assert "queue: 101 queues; App Engine allows at most 100" in error_of(file(101))


def test_unknown_fields_are_named() -> None:
    assert error_of(one_queue("rate: 1/s\nrat: 2/s")).startswith("conf/queue.yaml: queue q: rat: unknown field")
    assert error_of("queues:\n- name: a").startswith("conf/queue.yaml: queues: unknown field")


def test_file_shapes() -> None:
    assert "empty queue configuration" in error_of("")
    assert "expected a mapping" in error_of("- name: a")
    assert "queue: expected a list" in error_of("queue: default")
    assert "entry 1 is not a mapping" in error_of("queue:\n- default")
    assert error_of("queue:\n- name: a\n  rate: [1/s").startswith("conf/queue.yaml: line ")
    # A file with only file-wide settings is valid (production's parser allows it)
    assert parse_queue_yaml("total_storage_limit: 1M").queues == ()
    assert parse_queue_yaml("resume_paused_queues: true\nqueue: []").resume_paused_queues is True
    assert "resume_paused_queues: expected true or false" in error_of("resume_paused_queues: maybe")


def test_load_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "queue.yaml"
    path.write_text(EXAMPLE)
    assert len(load_queue_yaml(path).queues) == 4
    with pytest.raises(QueueYamlError, match="no such file"):
        load_queue_yaml(tmp_path / "missing.yaml")
    path.write_bytes(b"queue:\n- name: \xff\n")
    with pytest.raises(QueueYamlError, match="not UTF-8"):
        load_queue_yaml(path)


# -- the serve command ---------------------------------------------------------------------------


def test_serve_stops_with_one_line_naming_the_field(tmp_path: Path) -> None:
    # Given a queue.yaml with a bucket too large
    path = tmp_path / "queue.yaml"
    path.write_text("queue:\n- name: mail\n  rate: 5/s\n  bucket_size: 501\n")
    # When serve is started with it
    result = CliRunner().invoke(cli_module.cli, ["serve", "--queue-yaml", str(path), "--db", ":memory:", "-p", "0"])
    # Then it exits with status 2 and one line naming file, queue and field
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines == [f"Error: {path}: queue mail: bucket_size: 501 must be between 1 and 500"]


def test_serve_reads_queue_yaml_in_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given ./queue.yaml with a bad rate and no --queue-yaml flag
    monkeypatch.chdir(tmp_path)
    Path("queue.yaml").write_text("queue:\n- name: mail\n  rate: fast\n")
    # When serve starts there
    result = CliRunner().invoke(cli_module.cli, ["serve", "--db", ":memory:", "-p", "0"])
    # Then that file is the one checked
    assert result.exit_code == 2
    assert result.output.startswith("Error: queue.yaml: queue mail: rate: 'fast' must be")
    assert "Traceback" not in result.output


def test_serve_refuses_a_missing_queue_yaml(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = CliRunner().invoke(cli_module.cli, ["serve", "--queue-yaml", str(missing), "--db", ":memory:", "-p", "0"])
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: {missing}: no such file"


def test_serve_starts_with_a_good_queue_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a valid file, and the server loop replaced by one that builds the app and prints its banner
    path = tmp_path / "queue.yaml"
    path.write_text(EXAMPLE)
    seen: dict[str, Any] = {}

    async def fake_run(settings: Any, sock: Any) -> None:
        sock.close()
        seen["settings"] = settings

    monkeypatch.setattr(cli_module, "run_server", fake_run)
    # When serve starts
    result = CliRunner().invoke(cli_module.cli, ["serve", "--queue-yaml", str(path), "--db", ":memory:", "-p", "0"])
    # Then the settings carry the file
    assert result.exit_code == 0, result.output
    assert seen["settings"].queue_yaml == str(path)


def test_the_readme_example_is_valid() -> None:
    # Given the example queue.yaml the README shows
    path = Path(__file__).resolve().parent.parent / "examples" / "queue.yaml"
    # When it is loaded
    file = load_queue_yaml(path)
    queues = {q.name: q for q in file.queues}
    # Then it means what its comments say
    assert file.total_storage_limit == 500 * 1024**2
    assert (queues["default"].rate_per_s, queues["default"].bucket_size) == (10, 20)
    assert queues["mail"].rate_per_s == pytest.approx(2 / 60)
    assert queues["mail"].retry == RetryConfig(5, 86400, 10, 300, 3)
    assert queues["reports"].state is QueueState.PAUSED
    assert queues["leases"].mode == "pull"
