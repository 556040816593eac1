"""App Engine's backoff and retry decision (gae-spec §3.2), as pure functions."""

from __future__ import annotations

import pytest
from deferred_emulator.backoff import backoff_s, can_retry
from deferred_emulator.models import RetryConfig


def sequence(retry: RetryConfig, count: int) -> list[float]:
    return [round(backoff_s(retry, n), 6) for n in range(1, count + 1)]


def test_doublings_then_linear_then_capped() -> None:
    # Given the documented example: min 10 s, max 300 s, 3 doublings
    retry = RetryConfig(min_backoff_s=10, max_backoff_s=300, max_doublings=3)
    # When the waits after the first eight failures are computed
    # Then they double three times, grow by 80 s, and stop at the cap
    assert sequence(retry, 8) == [10, 20, 40, 80, 160, 240, 300, 300]


def test_no_doublings_is_linear() -> None:
    # Given min 10 s, max 200 s and no doublings
    retry = RetryConfig(min_backoff_s=10, max_backoff_s=200, max_doublings=0)
    # Then the waits grow by 10 s each time up to 200 s
    assert sequence(retry, 22) == [float(10 * n) for n in range(1, 21)] + [200, 200]


def test_defaults_reach_the_hour_after_sixteen_doublings() -> None:
    # Given the proto defaults (0.1 s, 3600 s, 16 doublings)
    retry = RetryConfig()
    waits = sequence(retry, 18)
    # Then the waits double from 0.1 s and reach the one-hour cap on the 17th failure
    assert waits[:5] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert waits[15] == pytest.approx(0.1 * 2**15)
    assert waits[16:] == [3600, 3600]


def test_min_equal_to_max_gives_a_constant_wait() -> None:
    retry = RetryConfig(min_backoff_s=5, max_backoff_s=5, max_doublings=4)
    assert sequence(retry, 6) == [5] * 6


def test_zero_backoff_retries_at_once() -> None:
    retry = RetryConfig(min_backoff_s=0, max_backoff_s=0)
    assert sequence(retry, 3) == [0, 0, 0]


def test_one_doubling_as_in_the_dispatch_recording() -> None:
    # Given the queue production's dispatch recording used: min 1 s, max 5 s, 1 doubling
    retry = RetryConfig(min_backoff_s=1, max_backoff_s=5, max_doublings=1)
    # Then the waits are 1, 2, then 2 s more each time, capped at 5
    assert sequence(retry, 5) == [1, 2, 4, 5, 5]


def test_huge_retry_numbers_do_not_overflow() -> None:
    retry = RetryConfig(min_backoff_s=0.1, max_backoff_s=3600, max_doublings=5000)
    assert backoff_s(retry, 3000) == 3600


@pytest.mark.parametrize(
    ("limit", "age", "n", "age_s", "expected"),
    [
        # no limits: retry forever
        (None, None, 1000, 10**6, True),
        # task_retry_limit 2: retries 1 and 2 happen, the 3rd does not
        (2, None, 2, 0, True),
        (2, None, 3, 0, False),
        # task_retry_limit 0: no retry at all
        (0, None, 1, 0, False),
        # task_age_limit 60 s: judged by the age since the first attempt
        (None, 60, 50, 60, True),
        (None, 60, 1, 60.5, False),
        # both: give up only when both are exceeded
        (2, 60, 3, 30, True),  # retries used up, but young enough
        (2, 60, 2, 90, True),  # too old, but retries left
        (2, 60, 3, 90, False),  # both exceeded
    ],
)
def test_can_retry(limit: int | None, age: float | None, n: int, age_s: float, expected: bool) -> None:
    # Given retry limits, when the n-th retry is considered age_s after the first attempt
    retry = RetryConfig(retry_limit=limit, age_limit_s=age)
    # Then App Engine's rule decides
    assert can_retry(retry, n, age_s) is expected
