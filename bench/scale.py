"""Big databases of waiting tasks, built fast, and what the emulator does on top of them."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from deferred_emulator.store import Store
from ours import PAYLOAD_BYTES, Ours
from procs import Handler, http

#: How many times the defer rate is measured on each database (the median counts).
DEFER_RUNS = 3
INSERT = (
    "INSERT INTO task (queue, name, state, eta_us, created_us, kind, method, url, headers, body)"
    " VALUES ('default', ?, 'waiting', ?, ?, 'appengine', 'POST', '/task', '{}', ?)"
)


def build_db(path: Path, count: int, due_in_s: float = 3600.0) -> float:
    """A database (our schema, made by the store) holding ``count`` tasks due in ``due_in_s``; seconds taken."""
    t0 = time.perf_counter()
    path.unlink(missing_ok=True)

    async def schema() -> None:
        store = await Store.open(str(path))
        await store.close()

    asyncio.run(schema())
    now_us = time.time_ns() // 1000
    eta_us = now_us + int(due_in_s * 1_000_000)
    body = b"b" * PAYLOAD_BYTES
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    step = 50_000
    for start in range(0, count, step):
        rows = ((f"w{i:08d}", eta_us + i, now_us, body) for i in range(start, min(count, start + step)))
        db.executemany(INSERT, rows)
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return time.perf_counter() - t0


def measure(workdir: Path, db: Path, handler: Handler, enqueue_n: int, idle_s: float) -> dict[str, Any]:
    """Start on ``db``: startup, idle CPU, RSS, enqueue rate and lateness of immediate tasks, /stats time."""
    emu = Ours(workdir, db, handler, "--ignore-rate-limits")
    try:
        out: dict[str, Any] = {"startup_s": emu.startup_s, "rss_after_start_mb": emu.proc.rss() / 2**20}
        time.sleep(0.5)
        out["idle_cpu_pct"] = emu.proc.idle_cpu(idle_s) * 100
        out["idle_load"] = os.getloadavg()[0]
        emu.defer_rate(200, countdown=3600)  # warm the connection and the page cache, as the core figures do
        out["defer_runs"] = [emu.defer_rate(enqueue_n, countdown=3600) for _ in range(DEFER_RUNS)]
        out["immediate_lateness"] = emu.immediate_lateness(100)
        t0 = time.perf_counter()
        http("GET", emu.url + "/_emulator/v1/stats")
        out["stats_ms"] = (time.perf_counter() - t0) * 1000
        out["peak_rss_mb"] = emu.proc.peak_rss() / 2**20
        return out
    finally:
        emu.stop()
