"""The benchmark's table and JSON: each line's medians (min-max) for us and the peer, the ratio, the target."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fair import Spread

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Figure:
    """One line of the table."""

    name: str
    unit: str
    ours: Spread | None
    peer: Spread | None = None
    target: str = ""
    met: bool | None = None
    #: whether a bigger number is better (rates) or a smaller one (latency, memory, CPU).
    higher_is_better: bool = True
    #: what the ratio column compares, when it is not ours against the peer.
    ratio_note: str = ""
    ratio_override: float | None = None
    #: whether a ratio means anything for this line (not for retry delays, say).
    compare: bool = True

    @property
    def ratio(self) -> float | None:
        """Median against median: ours over the peer's (the peer's over ours when smaller is better)."""
        if self.ratio_override is not None or not self.compare:
            return self.ratio_override
        ours = self.ours.median if self.ours else None
        peer = self.peer.median if self.peer else None
        if ours is None or peer is None or not math.isfinite(ours) or not math.isfinite(peer):
            return None
        if self.higher_is_better:
            return ours / peer if peer else None
        return peer / ours if ours else None

    def to_json(self) -> dict[str, Any]:
        """The figure with its ratio."""
        return {
            "name": self.name,
            "unit": self.unit,
            "ours": self.ours.to_json() if self.ours else None,
            "peer": self.peer.to_json() if self.peer else None,
            "ratio": self.ratio,
            "ratio_note": self.ratio_note,
            "target": self.target,
            "met": self.met,
        }


def one(value: float | None) -> Spread | None:
    """A Spread of a single measurement."""
    return None if value is None else Spread([float(value)], [])


def num(value: float) -> str:
    """A figure as the table shows it."""
    if not math.isfinite(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(figures: list[Figure]) -> str:
    """A Markdown table of the figures."""
    head = "| measure | unit | ours: median (min-max) | peer: median (min-max) | ratio | target | met |"
    lines = [head, "|" + "---|" * 7]
    for f in figures:
        met = "" if f.met is None else ("yes" if f.met else "NO")
        ratio = "-" if f.ratio is None else f"{f.ratio:.2f}x" + (f" {f.ratio_note}" if f.ratio_note else "")
        ours = f.ours.text(num) if f.ours else "-"
        peer = f.peer.text(num) if f.peer else "-"
        lines.append("| " + " | ".join([f.name, f.unit, ours, peer, ratio, f.target, met]) + " |")
    return "\n".join(lines)


def write(figures: list[Figure], details: dict[str, Any]) -> Path:
    """Write bench/results/<timestamp>.json and return its path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / (time.strftime("%Y%m%d-%H%M%S") + ".json")
    data = {"figures": [f.to_json() for f in figures], "details": details}
    path.write_text(json.dumps(data, indent=2, default=str))
    return path
