"""The benchmark's table and JSON: each figure for us, the peer and the raw loop, with our ratios."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Figure:
    """One line of the table."""

    name: str
    unit: str
    ours: float | None
    peer: float | None = None
    raw: float | None = None
    target: str = ""
    met: bool | None = None
    #: whether a bigger number is better (rates) or a smaller one (latency, memory, CPU).
    higher_is_better: bool = True

    @property
    def vs_peer(self) -> float | None:
        """Ours divided by the peer's (the peer's over ours when smaller is better)."""
        return _ratio(self.ours, self.peer, self.higher_is_better)

    @property
    def vs_raw(self) -> float | None:
        """Ours divided by the raw loop's."""
        return _ratio(self.ours, self.raw, True)

    def to_json(self) -> dict[str, Any]:
        """The figure with its ratios."""
        return {**asdict(self), "vs_peer": self.vs_peer, "vs_raw": self.vs_raw}


def _ratio(ours: float | None, other: float | None, higher_is_better: bool) -> float | None:
    if ours is None or other is None or not math.isfinite(ours) or not math.isfinite(other):
        return None
    if higher_is_better:
        return ours / other if other else None
    return other / ours if ours else None


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(figures: list[Figure]) -> str:
    """A Markdown table of the figures."""
    head = "| measure | unit | ours | peer | raw loop | ours vs peer | ours vs raw | target | met |"
    lines = [head, "|" + "---|" * 9]
    for f in figures:
        met = "" if f.met is None else ("yes" if f.met else "NO")
        cells = [f.name, f.unit, _num(f.ours), _num(f.peer), _num(f.raw), _ratio_text(f.vs_peer)]
        cells += [_ratio_text(f.vs_raw), f.target, met]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write(figures: list[Figure], details: dict[str, Any]) -> Path:
    """Write bench/results/<timestamp>.json and return its path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / (time.strftime("%Y%m%d-%H%M%S") + ".json")
    data = {"figures": [f.to_json() for f in figures], "details": details}
    path.write_text(json.dumps(data, indent=2, default=str))
    return path
