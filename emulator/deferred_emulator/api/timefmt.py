"""RFC 3339 timestamps and protobuf durations, as the Cloud Tasks JSON writes them."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache

from ..errors import InvalidArgument

_TS_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$")
_DURATION_RE = re.compile(r"^(-?\d+(?:\.\d{0,9})?)s$")
#: 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z, in microseconds from the epoch.
MIN_TS_US = -62_135_596_800_000_000
MAX_TS_US = 253_402_300_799_999_999
#: protobuf's Duration spans about +-10000 years.
MAX_DURATION_S = 315_576_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


# Cached: the tasks of one request share their createTime, and often their scheduleTime.
@lru_cache(maxsize=4096)
def format_ts(us: int) -> str:
    """``2026-01-02T03:04:05.123456Z`` (an instant outside the years 1 to 9999 shows as the nearest end)."""
    # Clamped rather than refused: one stored value out of range must not break every read of its queue.
    us = min(max(us, MIN_TS_US), MAX_TS_US)
    seconds, micros = divmod(us, 1_000_000)
    return f"{_format_second(seconds)}.{micros:06d}Z"


@lru_cache(maxsize=4096)
def _format_second(seconds: int) -> str:
    # Cached: the tasks of one request, and of one busy second, share their second.
    dt = _EPOCH + timedelta(seconds=seconds)
    # Not strftime: its %Y drops the leading zeros of years before 1000 on some platforms.
    return f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt:%H:%M:%S}"


def parse_ts(text: object, field: str) -> int:
    """Microseconds since the epoch from an RFC 3339 string (any offset, up to nanoseconds)."""
    # The form clients send, UTC with an optional fraction, takes a shortcut through a cache of whole
    # seconds: the timestamps of one request, and of one busy second, mostly share theirs.
    if isinstance(text, str) and len(text) >= 20 and text[-1] == "Z":
        second = _utc_second(text[:19])
        if second is not None:
            frac = text[19:-1]
            if not frac:
                return second * 1_000_000
            if frac[0] == "." and 2 <= len(frac) <= 10 and frac[1:].isdecimal():
                return second * 1_000_000 + int(frac[1:7].ljust(6, "0"))
    return _parse_ts(text, field)


@lru_cache(maxsize=4096)
def _utc_second(head: str) -> int | None:
    """Seconds since the epoch of ``YYYY-MM-DDTHH:MM:SS`` (UTC); None if it is not a valid one."""
    try:
        return _parse_ts(head + "Z", "") // 1_000_000
    except InvalidArgument:
        return None


def _parse_ts(text: object, field: str) -> int:
    match = _TS_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidArgument(f"Invalid value for {field}: {text!r} is not an RFC 3339 timestamp.")
    year, month, day, hour, minute, second, frac, offset = match.groups()
    h, m, s = int(hour), int(minute), int(second)
    try:
        days = _epoch_day(int(year), int(month), int(day))
        if h > 23 or m > 59 or s > 59:
            raise ValueError("hour, minute or second out of range")
        offset_s = 0
        if offset not in ("Z", "z"):
            oh, om = int(offset[1:3]), int(offset[4:6])
            if oh > 23 or om > 59:
                raise ValueError("offset out of range")
            offset_s = (-1 if offset[0] == "-" else 1) * (oh * 3600 + om * 60)
    except ValueError as exc:
        raise InvalidArgument(f"Invalid value for {field}: {text!r} ({exc}).") from exc
    micros = int(frac[:6].ljust(6, "0")) if frac else 0
    us = (days * 86400 + h * 3600 + m * 60 + s - offset_s) * 1_000_000 + micros
    if not MIN_TS_US <= us <= MAX_TS_US:
        # An offset can carry a valid wall-clock time out of the years 1 to 9999, which nothing could print.
        raise InvalidArgument(f"Invalid value for {field}: {text!r} is outside the years 0001 to 9999.")
    return us


@lru_cache(maxsize=1024)
def _epoch_day(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a date (ValueError for a date that does not exist)."""
    return date(year, month, day).toordinal() - _EPOCH_ORDINAL


@lru_cache(maxsize=1024)
def format_duration(seconds: float) -> str:
    """``600s``, ``0.100s``: the protobuf JSON form of a Duration (clamped to its range)."""
    if not -MAX_DURATION_S <= seconds <= MAX_DURATION_S:
        # A stored value out of range (or NaN) shows as the nearest end rather than breaking the read.
        seconds = -MAX_DURATION_S if seconds < 0 else MAX_DURATION_S
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds:.9f}".rstrip("0") + "s"


def parse_duration(text: object, field: str) -> float:
    """Seconds from ``"600s"`` (a bare number is accepted too), within protobuf's Duration range."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION_RE.match(text) if isinstance(text, str) else None
        if match is None:
            raise InvalidArgument(f'Invalid value for {field}: {text!r} is not a duration such as "10s".')
        seconds = float(match.group(1))
    if not -MAX_DURATION_S <= seconds <= MAX_DURATION_S:  # also refuses NaN
        raise InvalidArgument(f"Invalid value for {field}: {text!r} is out of range (at most 10000 years).")
    return seconds


def pacific(us: int) -> str:
    """An instant as production prints it in errors (US Pacific time)."""
    try:
        from zoneinfo import ZoneInfo

        tz: timezone | ZoneInfo = ZoneInfo("America/Los_Angeles")
    except Exception:
        tz = timezone(timedelta(hours=-8))
    us = min(max(us, MIN_TS_US + 86_400_000_000), MAX_TS_US - 86_400_000_000)
    dt = (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=us)).astimezone(tz)
    return dt.isoformat(timespec="seconds")
