"""Small statistics helpers shared by the measurements."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def lateness_ms(arrivals: Sequence[tuple[float, float, str]]) -> dict[str, float]:
    """p50, p99 and max of arrival minus ETA, in milliseconds, over deliveries that carried an ETA."""
    late = [(arrival - eta) * 1000 for arrival, eta, _ in arrivals if eta > 0]
    return {
        "p50_ms": percentile(late, 50),
        "p99_ms": percentile(late, 99),
        "max_ms": max(late) if late else float("nan"),
        "count": len(late),
    }


def backoff_formula(n: int, min_s: float, max_s: float, doublings: int) -> float:
    """The documented delay after the n-th failure."""
    return min(max_s, min_s * 2 ** min(n - 1, doublings) * max(1, n - doublings))
