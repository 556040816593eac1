"""Properties of RFC 3339 timestamps and durations: round trips, offsets, and only clean errors on junk."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from deferred_emulator.api import timefmt
from deferred_emulator.api.timefmt import format_duration, format_ts, parse_duration, parse_ts
from deferred_emulator.errors import InvalidArgument
from hypothesis import given, settings
from hypothesis import strategies as st

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: 0001-01-01 .. 9999-12-31 in microseconds from the epoch.
MIN_US = (datetime(1, 1, 1, tzinfo=timezone.utc) - EPOCH) // timedelta(microseconds=1)
MAX_US = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc) - EPOCH) // timedelta(microseconds=1)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(deadline=None, max_examples=50)
@given(st.integers(MIN_US, MAX_US))
def test_timestamps_round_trip(us: int) -> None:
    assert parse_ts(format_ts(us), "t") == us


@settings(deadline=None, max_examples=50)
@given(
    st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(9998, 12, 30)),
    st.integers(-23 * 60 - 59, 23 * 60 + 59),
    st.sampled_from(["T", "t"]),
)
def test_any_offset_means_the_same_instant(local: datetime, offset_min: int, sep: str) -> None:
    # Given a wall-clock time at some UTC offset, written as RFC 3339
    aware = local.replace(tzinfo=timezone(timedelta(minutes=offset_min)))
    text = aware.isoformat(sep=sep)
    # Then it parses to that instant
    assert parse_ts(text, "t") == (aware - EPOCH) // timedelta(microseconds=1)


@settings(deadline=None, max_examples=50)
@given(st.integers(0, MAX_US), st.integers(0, 999))
def test_nanoseconds_are_truncated_to_microseconds(us: int, nanos: int) -> None:
    text = format_ts(us).removesuffix("Z") + f"{nanos:03d}Z"
    assert parse_ts(text, "t") == us


@settings(deadline=None, max_examples=50)
@given(json_values)
def test_junk_timestamps_are_invalid_arguments(value: Any) -> None:
    try:
        us = parse_ts(value, "Task.scheduleTime")
    except InvalidArgument as exc:
        assert "Task.scheduleTime" in exc.message
    else:
        assert MIN_US <= us <= MAX_US
        format_ts(us)  # whatever is accepted can be written back


@settings(deadline=None, max_examples=50)
@given(st.text(alphabet="0123456789-:TZz.+ ", max_size=40))
def test_near_miss_timestamps_are_invalid_arguments(text: str) -> None:
    try:
        parse_ts(text, "t")
    except InvalidArgument:
        pass


@settings(deadline=None, max_examples=50)
@given(st.decimals(min_value=0, max_value=10**9, places=9, allow_nan=False))
def test_durations_round_trip(value: Any) -> None:
    seconds = float(value)
    assert parse_duration(format_duration(seconds), "d") == pytest.approx(seconds, rel=1e-9, abs=1e-9)


@settings(deadline=None, max_examples=50)
@given(json_values)
def test_junk_durations_are_invalid_arguments_or_finite(value: Any) -> None:
    try:
        seconds = parse_duration(value, "RetryConfig.minBackoff")
    except InvalidArgument as exc:
        assert "RetryConfig.minBackoff" in exc.message
    else:
        assert abs(seconds) <= 315_576_000_000


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01"])
def test_instants_outside_the_printable_years_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument, match="outside the years"):
        parse_ts(text, "t")


@pytest.mark.parametrize("value", [float("inf"), float("nan"), "9" * 400 + "s", 1e300])
def test_durations_out_of_range_are_refused(value: Any) -> None:
    with pytest.raises(InvalidArgument):
        parse_duration(value, "d")


@settings(deadline=None, max_examples=100)
@given(st.integers(MIN_US, MAX_US), st.sampled_from(["", ".", ".1", ".12", ".123456", ".123456789", ".1234567890"]))
def test_the_utc_shortcut_agrees_with_the_full_parser(us: int, fraction: str) -> None:
    # Given a UTC timestamp with any fraction (or a malformed one)
    text = format_ts(us)[:19] + fraction + "Z"
    # Then the shortcut for that form and the full parser accept and refuse the same texts, alike
    results = []
    for parse in (parse_ts, timefmt._parse_ts):
        try:
            results.append(parse(text, "t"))
        except InvalidArgument as exc:
            results.append(exc.message)
    assert results[0] == results[1]


@pytest.mark.parametrize("text", ["2026-02-30T00:00:00Z", "2026-01-01T24:00:00Z", "2026-01-01T00:60:00.5Z"])
def test_impossible_dates_and_times_are_refused_by_the_shortcut_too(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_ts(text, "t")
