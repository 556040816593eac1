"""Per-queue statistics, shared by the Cloud Tasks queue JSON, the stats endpoint and the console."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..dispatcher import Dispatcher
from ..service import Emulator
from .common import dispatcher_of, emulator_of
from .timefmt import format_ts


async def queue_stats(request: web.Request) -> dict[str, dict[str, Any]]:
    """Cloud Tasks ``stats`` for every queue, with the emulator's own counts beside them."""
    return await stats_of(emulator_of(request), dispatcher_of(request))


async def stats_of(emulator: Emulator, dispatcher: Dispatcher) -> dict[str, dict[str, Any]]:
    """``queue_stats`` for an emulator and its dispatcher."""
    counts = await emulator.store.counts(emulator.now_us())
    minute = dispatcher.last_minute()
    out: dict[str, dict[str, Any]] = {}
    for name, queue in emulator.queues.items():
        c = counts.get(name, {})
        waiting, running, failed = c.get("waiting", 0), c.get("running", 0), c.get("failed", 0)
        ok, bad = minute.get(name, (0, 0))
        oldest = c.get("oldest_eta_us")
        entry: dict[str, Any] = {
            "tasksCount": str(waiting + running),
            "executedLastMinuteCount": str(ok + bad),
            "concurrentDispatchesCount": str(dispatcher.in_flight(name)),
            "effectiveExecutionRate": queue.rate_per_s,
            "waiting": waiting,
            "due": c.get("due", 0),
            "inFlight": dispatcher.in_flight(name),
            "failed": failed,
            "succeededLastMinute": ok,
            "failedLastMinute": bad,
        }
        if oldest is not None:
            entry["oldestEstimatedArrivalTime"] = format_ts(oldest)
        out[name] = entry
    return out
