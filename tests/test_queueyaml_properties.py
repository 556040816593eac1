"""Properties of queue.yaml parsing: any input gives queues or one clear error, and valid files read back."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from deferred_emulator.queueyaml import (
    MAX_BUCKET_SIZE,
    MAX_CONCURRENT_REQUESTS,
    QUEUE_FIELDS,
    RETRY_FIELDS,
    UNIT_S,
    QueueYamlError,
    parse_queue_yaml,
)
from hypothesis import given, settings
from hypothesis import strategies as st

KEYS = st.sampled_from(("queue", "total_storage_limit", *QUEUE_FIELDS, *RETRY_FIELDS, "retry_parameters", "x"))
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(("5/s", "0", "1.5/m", "10/x", "2d", "0s", "-1", "120M", "v1.worker", "pull", "push"))
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=20,
)


def parses_or_says_why(text: str) -> None:
    """The one promise for any input: queues, or a QueueYamlError of one line."""
    try:
        parse_queue_yaml(text)
    except QueueYamlError as exc:
        message = str(exc)
        assert message.startswith("queue.yaml") and "\n" not in message


@settings(deadline=None, max_examples=100)
@given(DOCUMENTS)
def test_any_structure_is_read_or_refused_in_one_line(document: Any) -> None:
    parses_or_says_why(yaml.safe_dump({"queue": [document]} if isinstance(document, dict) else document))


@settings(deadline=None, max_examples=80)
@given(st.text(max_size=200))
def test_any_text_is_read_or_refused_in_one_line(text: str) -> None:
    parses_or_says_why(text)


names = st.from_regex(r"\A[A-Za-z0-9-]{1,100}\Z")
units = st.sampled_from(sorted(UNIT_S))


@settings(deadline=None, max_examples=60)
@given(
    name=names,
    per=st.integers(1, 500),
    unit=units,
    bucket=st.integers(1, MAX_BUCKET_SIZE),
    concurrent=st.none() | st.integers(1, MAX_CONCURRENT_REQUESTS),
    limit=st.none() | st.integers(0, 10**6),
    low=st.integers(0, 3600),
    span=st.integers(0, 3600),
    doublings=st.integers(0, 100),
)
def test_a_valid_queue_reads_back(
    name: str,
    per: int,
    unit: str,
    bucket: int,
    concurrent: int | None,
    limit: int | None,
    low: int,
    span: int,
    doublings: int,
) -> None:
    # Given a push queue with every field inside App Engine's bounds
    retry: dict[str, Any] = {"min_backoff_seconds": low, "max_backoff_seconds": low + span, "max_doublings": doublings}
    if limit is not None:
        retry["task_retry_limit"] = limit
    entry: dict[str, Any] = {"name": name, "rate": f"{per}/{unit}", "bucket_size": bucket, "retry_parameters": retry}
    if concurrent is not None:
        entry["max_concurrent_requests"] = concurrent
    # When it is parsed, Then each value comes back as the queue's setting
    [queue] = parse_queue_yaml(yaml.safe_dump({"queue": [entry]})).queues
    assert queue.name == name
    assert queue.rate_per_s == pytest.approx(per / UNIT_S[unit])
    assert queue.bucket_size == bucket and queue.max_concurrent == concurrent
    assert queue.retry.retry_limit == limit
    assert (queue.retry.min_backoff_s, queue.retry.max_backoff_s) == (low, low + span)
    assert queue.retry.max_doublings == doublings


@settings(deadline=None, max_examples=100)
@given(name=names, bucket=st.integers(MAX_BUCKET_SIZE + 1, 10**9) | st.integers(-(10**9), 0))
def test_a_bucket_out_of_bounds_is_named_in_the_error(name: str, bucket: int) -> None:
    text = yaml.safe_dump({"queue": [{"name": name, "rate": "1/s", "bucket_size": bucket}]})
    with pytest.raises(QueueYamlError) as caught:
        parse_queue_yaml(text)
    assert caught.value.queue == name and caught.value.field == "bucket_size"
