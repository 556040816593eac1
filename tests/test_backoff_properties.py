"""Properties of the backoff and retry decision, for any retry settings and attempt count."""

from __future__ import annotations

from fractions import Fraction

from deferred_emulator.backoff import backoff_s, can_retry
from deferred_emulator.models import RetryConfig
from hypothesis import given, settings
from hypothesis import strategies as st

seconds = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
attempts = st.integers(min_value=1, max_value=10**9)


@st.composite
def retry_configs(draw: st.DrawFn) -> RetryConfig:
    low, high = sorted((draw(seconds), draw(seconds)))
    return RetryConfig(
        retry_limit=draw(st.none() | st.integers(0, 10**6)),
        age_limit_s=draw(st.none() | seconds),
        min_backoff_s=low,
        max_backoff_s=high,
        max_doublings=draw(st.integers(0, 10**6)),
    )


def test_the_documented_sequence() -> None:
    retry = RetryConfig(min_backoff_s=10, max_backoff_s=300, max_doublings=3)
    assert [backoff_s(retry, n) for n in range(1, 9)] == [10, 20, 40, 80, 160, 240, 300, 300]


@settings(deadline=None, max_examples=50)
@given(retry_configs(), attempts)
def test_backoff_is_the_formula_and_never_overflows(retry: RetryConfig, n: int) -> None:
    # min(max_backoff, min_backoff * 2**min(n-1, max_doublings) * max(1, n - max_doublings)), in exact arithmetic
    # (past 2100 doublings any positive minimum is over every maximum drawn: keep the exact numbers small)
    doublings = min(n - 1, retry.max_doublings, 2100)
    exact = min(
        Fraction(retry.max_backoff_s),
        Fraction(retry.min_backoff_s) * 2**doublings * max(1, n - min(n - 1, retry.max_doublings)),
    )
    got = backoff_s(retry, n)
    assert 0 <= got <= retry.max_backoff_s
    assert abs(Fraction(got) - exact) <= exact * Fraction(1, 10**9) + Fraction(1, 10**12)


@settings(deadline=None, max_examples=50)
@given(retry_configs(), attempts)
def test_backoff_never_shrinks(retry: RetryConfig, n: int) -> None:
    assert backoff_s(retry, n) <= backoff_s(retry, n + 1)


@settings(deadline=None, max_examples=50)
@given(retry_configs(), attempts, seconds)
def test_giving_up_is_final(retry: RetryConfig, n: int, age: float) -> None:
    # Once a retry is refused, a later one at the same or a greater age is refused too.
    if not can_retry(retry, n, age):
        assert not can_retry(retry, n + 1, age)
        assert not can_retry(retry, n, age + 1)


@settings(deadline=None, max_examples=50)
@given(attempts, seconds)
def test_without_limits_it_always_retries(n: int, age: float) -> None:
    assert can_retry(RetryConfig(), n, age)


@settings(deadline=None, max_examples=50)
@given(st.integers(0, 1000), seconds, attempts, seconds)
def test_both_limits_must_be_exceeded(limit: int, age_limit: float, n: int, age: float) -> None:
    retry = RetryConfig(retry_limit=limit, age_limit_s=age_limit)
    assert can_retry(retry, n, age) == (n <= limit or age <= age_limit)
