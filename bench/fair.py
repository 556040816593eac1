"""Runs repeated in rotated order, and their spread: the median of at least three, with min and max."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

RUNS = 3


@dataclass
class Spread:
    """Every run of one measure: its median, min and max, and the load average when it was taken."""

    runs: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        """The median run (None without runs)."""
        return statistics.median(self.runs) if self.runs else None

    def text(self, fmt: Callable[[float], str]) -> str:
        """``median (min-max)``."""
        if not self.runs:
            return "-"
        med = self.median
        assert med is not None
        return f"{fmt(med)} ({fmt(min(self.runs))}-{fmt(max(self.runs))})"

    def to_json(self) -> dict[str, Any]:
        """Runs, loads and median."""
        return {"runs": self.runs, "loads": self.loads, "median": self.median}


def rotated(sides: dict[str, Callable[[], Any]], runs: int = RUNS) -> dict[str, tuple[list[Any], list[float]]]:
    """Run each side ``runs`` times, run i starting with side i (mod sides) so no side always goes first.

    Per side: the results, and the load average after each.
    """
    names = list(sides)
    out: dict[str, tuple[list[Any], list[float]]] = {name: ([], []) for name in names}
    for i in range(runs):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            value = sides[name]()
            out[name][0].append(value)
            out[name][1].append(os.getloadavg()[0])
    return out


def spread(results: tuple[list[Any], list[float]], key: str | None = None) -> Spread:
    """The Spread of a side's results (or of one field of them)."""
    values, loads = results
    return Spread([float(v if key is None else v[key]) for v in values], list(loads))
