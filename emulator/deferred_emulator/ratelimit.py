"""A token bucket per queue: ``bucket_size`` tokens, refilled at ``rate`` per second."""

from __future__ import annotations

import math


class TokenBucket:
    """Tokens for dispatches; times are monotonic seconds, passed in."""

    def __init__(self, rate_per_s: float, capacity: int, now_s: float) -> None:
        self.rate_per_s = rate_per_s
        self.capacity = max(1, capacity)
        self.tokens = float(self.capacity)
        self.updated_s = now_s

    def configure(self, rate_per_s: float, capacity: int, now_s: float | None = None) -> None:
        """Change rate and size, keeping the tokens already earned (up to the new size)."""
        if now_s is not None:
            self._refill(now_s)  # tokens earned so far accrue at the old rate
        self.rate_per_s = rate_per_s
        self.capacity = max(1, capacity)
        self.tokens = min(self.tokens, float(self.capacity))

    def _refill(self, now_s: float) -> None:
        elapsed = max(0.0, now_s - self.updated_s)
        self.tokens = min(float(self.capacity), self.tokens + elapsed * self.rate_per_s)
        self.updated_s = now_s

    def available(self, now_s: float) -> int:
        """Whole tokens available now."""
        self._refill(now_s)
        return int(math.floor(self.tokens + 1e-9))

    def take(self, count: int, now_s: float) -> None:
        """Spend ``count`` tokens (callers ask ``available`` first)."""
        self._refill(now_s)
        self.tokens -= count

    def wait_s(self, now_s: float) -> float | None:
        """Seconds until one token is available; None when the rate is 0 (never)."""
        self._refill(now_s)
        if self.tokens >= 1 - 1e-9:
            return 0.0
        if self.rate_per_s <= 0:
            return None
        return (1 - self.tokens) / self.rate_per_s
