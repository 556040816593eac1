"""Queue rates as people write them: ``2/m`` as queue.yaml said, not ``0.0333333/s``."""

from __future__ import annotations

import re

from .models import QueueConfig

RATE_RE = re.compile(r"^(?:0|([0-9]+(?:\.[0-9]*)?)/([smhd]))$")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate_text(text: str) -> float | None:
    """Tasks per second of a queue.yaml rate (``5/s``, ``20/m``, ``0``), or None if it is not one."""
    match = RATE_RE.match(text.strip())
    if match is None:
        return None
    if match.group(1) is None:
        return 0.0
    return float(match.group(1)) / UNIT_S[match.group(2)]


def format_rate(rate_per_s: float) -> str:
    """A rate in its most natural unit: ``5/s``, ``2.5/s``, ``2/m``, ``3/h``, ``1/d``; ``0`` for none."""
    if rate_per_s <= 0:
        return "0"
    if rate_per_s >= 1:
        return f"{rate_per_s:g}/s"
    for unit in ("m", "h", "d"):
        count = rate_per_s * UNIT_S[unit]
        # A rate given as 2/m is stored as 2/60 per second: allow for the float's last bits.
        if count >= 1 and abs(count - round(count)) < 1e-6 * count:
            return f"{round(count)}/{unit}"
    for unit in ("m", "h", "d"):
        count = rate_per_s * UNIT_S[unit]
        if count >= 1:
            return f"{count:.3g}/{unit}"
    return f"{rate_per_s * UNIT_S['d']:.3g}/d"


def rate_label(queue: QueueConfig) -> str:
    """The queue's rate as its queue.yaml wrote it while that still holds, else in a natural unit."""
    given = parse_rate_text(queue.rate_text) if queue.rate_text else None
    if given is not None and abs(given - queue.rate_per_s) <= 1e-9 * max(1.0, given):
        return queue.rate_text.strip()
    return format_rate(queue.rate_per_s)
