"""``make bench``: our emulator against the peer (gcloud-tasks-emulator), like with like, in one run.

Every comparison does the same shape of work on both sides (one call per task against one call per
task), with fresh server processes for every run, at least three runs per side in rotated order,
and reports the median with min and max and the load average. Prints a table and writes
bench/results/<timestamp>.json. Options: ``--quick`` (smaller counts), ``--no-peer``, ``--no-scale``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent / "emulator"), str(BENCH.parent / "client")]

import peer  # noqa: E402
from fair import Spread, rotated, spread  # noqa: E402
from floor import floor_rate  # noqa: E402
from ours import Ours  # noqa: E402
from procs import Handler, free_port, wait_port  # noqa: E402
from report import Figure, one, table, write  # noqa: E402
from scale import build_db, measure  # noqa: E402
from stats import backoff_formula  # noqa: E402

RETRY = {"minBackoff": "0.1s", "maxBackoff": "2s", "maxDoublings": 2}
RETRY_ATTEMPTS = 7
#: How long the whole run may wait for the peer's venv to install.
PEER_INSTALL_BUDGET_S = 300
#: Connections adding tasks in the delivery-under-ingest line.
INGEST_CLIENTS = 200


def log(message: str) -> None:
    """Progress on stderr, with the load average."""
    load = os.getloadavg()[0]
    print(f"[{time.strftime('%H:%M:%S')} load {load:.1f}] {message}", file=sys.stderr, flush=True)


class Bench:
    """One run of the benchmark: the work directory, the trivial app, the counts."""

    def __init__(self, work: Path, handler: Handler, n: dict[str, int], with_peer: bool) -> None:
        self.work = work
        self.handler = handler
        self.n = n
        self.with_peer = with_peer
        self.grpc = Ours.has_grpc()
        self._dbs = 0

    @contextmanager
    def ours(self, *extra: str) -> Iterator[Ours]:
        """A fresh emulator on a fresh database."""
        self._dbs += 1
        emu = Ours(self.work, self.work / f"ours-{self._dbs}.sqlite3", self.handler, "--ignore-rate-limits", *extra)
        try:
            yield emu
        finally:
            emu.stop()

    @contextmanager
    def peer(self) -> Iterator[peer.Peer]:
        """A fresh peer (it slows down with every task it holds)."""
        p = peer.Peer(self.work, self.handler, max_retries=RETRY_ATTEMPTS - 1)
        try:
            yield p
        finally:
            p.stop()

    def _ours_defer(self, n: int, threads: int, countdown: float | None) -> dict[str, float]:
        """The rate, and the server's CPU per task (its deliveries included for tasks due now)."""
        with self.ours() as emu:
            emu.warm_up()
            cpu0 = emu.proc.cpu_s()
            rate = emu.defer_rate(n, threads, countdown=countdown)
            # Tasks due now are delivered while they are added: wait for them, so the next run starts quiet.
            if countdown is None:
                self.handler.wait_count(n, 60)
            return {"rate": rate, "server_us": (emu.proc.cpu_s() - cpu0) / n * 1e6}

    def _peer_create(self, n: int, threads: int, due_in_s: float) -> dict[str, float]:
        """The same for the peer (its CPU includes the client's one warm-up task)."""
        with self.peer() as p:
            self.handler.reset()
            cpu0 = p.proc.cpu_s()
            rate = p.enqueue_rate(n, threads, due_in_s)
            if not due_in_s:
                self.handler.wait_count(n + 1, 60)  # the client's warm-up task is delivered too
            return {"rate": rate, "server_us": (p.proc.cpu_s() - cpu0) / n * 1e6}

    def _sides(self, ours: Callable[[], Any], theirs: Callable[[], Any]) -> dict[str, Callable[[], Any]]:
        sides = {"ours": ours}
        if self.with_peer:
            sides["peer"] = theirs
        return sides

    def enqueue(self) -> dict[str, Any]:
        """Per-task enqueue: sync defer() against the peer's gRPC create_task, and the http.client floor."""
        n = self.n
        out: dict[str, Any] = {}
        sides = self._sides(
            lambda: self._ours_defer(n["enqueue"], 1, None), lambda: self._peer_create(n["enqueue"], 1, 0)
        )
        sides["floor"] = lambda: floor_rate("127.0.0.1", self.handler.port, n["floor"])
        out["due_now_1"] = rotated(sides)
        log(f"1 thread, due now: {summary(out['due_now_1'])}")
        out["due_now_4"] = rotated(
            self._sides(lambda: self._ours_defer(n["enqueue"], 4, None), lambda: self._peer_create(n["enqueue"], 4, 0))
        )
        log(f"4 threads, due now: {summary(out['due_now_4'])}")
        out["waiting_1"] = rotated(
            self._sides(
                lambda: self._ours_defer(n["waiting"], 1, 3600), lambda: self._peer_create(n["waiting"], 1, 3600)
            )
        )
        log(f"1 thread, due in an hour: {summary(out['waiting_1'])}")
        return out

    def google_client(self) -> dict[str, Any]:
        """Google's client (the same version, from the peer's venv): create_task over REST and gRPC, due now."""
        n = self.n["gclient"]

        def ours(transport: str, own_port: bool = False) -> dict[str, float]:
            # One port serves REST and gRPC alike, as users run it (the front door hands gRPC
            # connections to the gRPC protocol); --grpc-port serves the same gRPC on a port of its own.
            grpc_port = free_port() if own_port else None
            with self.ours(*(["--grpc-port", str(grpc_port)] if grpc_port else [])) as emu:
                emu.warm_up()
                endpoint = f"127.0.0.1:{grpc_port or emu.port}"
                if grpc_port:
                    wait_port(grpc_port, emu.proc)
                cpu0 = emu.proc.cpu_s()
                rate = float(peer.google_client(endpoint, transport, "enqueue", n, 1, 0)["rate"])
                self.handler.wait_count(n + 1, 60)
                # As for the peer: the client's one warm-up call is counted in, its delivery too.
                return {"rate": rate, "server_us": (emu.proc.cpu_s() - cpu0) / n * 1e6}

        sides: dict[str, Callable[[], Any]] = {"ours_rest": lambda: ours("rest")}
        if self.grpc:
            sides["ours_grpc"] = lambda: ours("grpc")
            sides["ours_grpc_port"] = lambda: ours("grpc", own_port=True)
        if self.with_peer:
            sides["peer_grpc"] = lambda: self._peer_create(n, 1, 0)
        out = rotated(sides)
        log(f"Google's client: {summary(out)}")
        return out

    def delivered(self) -> dict[str, Any]:
        """Delivered end to end, per-task enqueue from 4 threads on both sides (tasks due now)."""
        n = self.n["e2e"]

        def ours() -> float:
            with self.ours() as emu:
                emu.warm_up()
                return emu.delivered_per_task(n, 4)

        def theirs() -> float:
            with self.peer() as p:
                return p.delivered_rate(n, 4)

        out = rotated(self._sides(ours, theirs))
        log(f"delivered end to end: {summary(out)}")
        return out

    def lateness(self) -> dict[str, Any]:
        """Tasks due 2 s after they were added: arrival minus ETA."""
        n = self.n["lateness"]

        def ours() -> dict[str, float]:
            with self.ours() as emu:
                emu.warm_up()
                return emu.lateness(n)

        def theirs() -> dict[str, float]:
            with self.peer() as p:
                return p.lateness(n)

        out = rotated(self._sides(ours, theirs))
        log(f"lateness: {out['ours'][0]}")
        return out

    def ours_alone(self) -> dict[str, Any]:
        """batchAdd, delivery under heavy ingest against idle, and retry delays (ours only)."""
        out: dict[str, Any] = {}
        with self.ours() as emu:
            emu.defer_rate(200, countdown=3600)  # warm up connections and caches
            runs = [emu.batch_add(self.n["batch"], 100, eta_s=time.time() + 3600) for _ in range(3)]
            out["batch_add"] = (runs, [os.getloadavg()[0]] * 3)
            log(f"batchAdd: {[round(r) for r in runs]}")
        with self.ours() as emu:
            emu.warm_up()
            backlog, window = self.n["backlog"], self.n["window_s"]
            out["ingest"] = rotated(
                {
                    "idle": lambda: emu.delivery_window(backlog, window),
                    "busy": lambda: emu.delivery_window(backlog, window, INGEST_CLIENTS),
                }
            )
            log(f"delivery idle {out['ingest']['idle'][0]}, under ingest {out['ingest']['busy'][0]}")
            out["retry_delays"] = emu.retry_delays(RETRY_ATTEMPTS, RETRY)
        return out

    def peer_retry(self) -> list[float]:
        """The peer's delays between attempts of a failing task."""
        with self.peer() as p:
            return p.retry_delays(RETRY_ATTEMPTS)


def summary(results: dict[str, Any]) -> str:
    """Medians of each side, for the progress log."""
    parts = []
    for name, (values, _) in results.items():
        if values and isinstance(values[0], dict) and "rate" in values[0]:
            values = [v["rate"] for v in values]
        if values and isinstance(values[0], (int, float)):
            parts.append(f"{name} {statistics.median(values):,.0f}")
    return ", ".join(parts)


def figures(enq: dict[str, Any], gc: dict[str, Any], e2e: dict[str, Any], late: dict[str, Any]) -> list[Figure]:
    """The per-task comparisons against the peer, with the targets of the speed issue."""
    f: list[Figure] = []
    d1 = enq["due_now_1"]
    floor = spread(d1["floor"])
    ours1, peer1 = spread(d1["ours"], "rate"), spread(d1["peer"], "rate") if "peer" in d1 else None
    row = Figure(
        "sync defer(), 1 thread, 2k tasks due now, empty queue (peer: gRPC create_task)", "tasks/s", ours1, peer1
    )
    row.target = ">= 3x peer"
    row.met = row.ratio is not None and row.ratio >= 3
    f.append(row)
    fl = Figure("http.client keep-alive POST floor (200 B, trivial aiohttp handler)", "req/s", floor)
    ratio_floor = (ours1.median or 0) / floor.median if floor.median else None
    fl.ratio_override, fl.ratio_note = ratio_floor, "(defer() 1 thread / floor)"
    fl.target, fl.met = "defer() >= 0.75x floor", ratio_floor is not None and ratio_floor >= 0.75
    f.append(fl)
    f.append(cpu_row("sync defer(), 1 thread, due now: server CPU per task, its delivery included", d1))
    d4 = enq["due_now_4"]
    row = Figure(
        "sync defer(), 4 threads, due now, empty queue (peer: gRPC create_task)", "tasks/s", spread(d4["ours"], "rate")
    )
    row.peer = spread(d4["peer"], "rate") if "peer" in d4 else None
    row.target, row.met = ">= 3x peer", row.ratio is not None and row.ratio >= 3
    f.append(row)
    w1 = enq["waiting_1"]
    row = Figure(
        "sync defer(), 1 thread, due in an hour (queue fills to thousands)", "tasks/s", spread(w1["ours"], "rate")
    )
    row.peer = spread(w1["peer"], "rate") if "peer" in w1 else None
    f.append(row)
    f.append(cpu_row("sync defer(), 1 thread, due in an hour: server CPU per task", w1))
    peer_grpc = spread(gc["peer_grpc"], "rate") if "peer_grpc" in gc else None
    if "ours_rest" in gc:
        row = Figure("Google's client create_task, 1 thread, due now: ours REST vs peer gRPC", "tasks/s", None)
        row.ours, row.peer, row.target = spread(gc["ours_rest"], "rate"), peer_grpc, ">= 1x peer gRPC"
        row.met = row.ratio is not None and row.ratio >= 1
        f.append(row)
    for key, label in (("ours_grpc", "ours gRPC (main port)"), ("ours_grpc_port", "ours gRPC (--grpc-port)")):
        if key in gc:
            row = Figure(f"Google's client create_task, 1 thread, due now: {label} vs peer gRPC", "tasks/s", None)
            row.ours, row.peer = spread(gc[key], "rate"), peer_grpc
            row.target = ">= 2x peer"
            row.met = row.ratio is not None and row.ratio >= 2
            f.append(row)
    for key, label in (("ours_rest", "ours REST"), ("ours_grpc", "ours gRPC (main port)")):
        if key in gc:
            sides = {"ours": gc[key], **({"peer": gc["peer_grpc"]} if "peer_grpc" in gc else {})}
            name = f"Google's client, due now: server CPU per call, its delivery included: {label} vs peer gRPC"
            f.append(cpu_row(name, sides))
    row = Figure(
        "delivered end to end, per-task enqueue from 4 threads, 3k tasks due now", "tasks/s", spread(e2e["ours"])
    )
    row.peer = spread(e2e["peer"]) if "peer" in e2e else None
    row.target, row.met = ">= 3x peer", row.ratio is not None and row.ratio >= 3
    f.append(row)
    for key, limit in (("p50_ms", 5), ("p99_ms", 20)):
        row = Figure(f"lateness {key[:3]}, tasks due 2 s after they were added", "ms", spread(late["ours"], key))
        row.peer = spread(late["peer"], key) if "peer" in late else None
        row.higher_is_better, row.target = False, f"<= {limit}"
        row.met = (row.ours.median or 0) <= limit if row.ours else None
        f.append(row)
    return f


def cpu_row(name: str, results: dict[str, Any]) -> Figure:
    """Server CPU per task of both sides, from /proc (steadier than rates on a shared machine)."""
    row = Figure(name, "us", spread(results["ours"], "server_us"), higher_is_better=False)
    row.peer = spread(results["peer"], "server_us") if "peer" in results else None
    return row


def alone_figures(alone: dict[str, Any], scale: dict[int, Any]) -> list[Figure]:
    """Ours without a peer counterpart: batchAdd, delivery under ingest, and the big database."""
    f = []
    row = Figure("tasks:batchAdd of 100 tasks, 1 thread", "tasks/s", spread(alone["batch_add"]))
    row.target, row.met = ">= 20,000", (row.ours.median or 0) >= 20_000 if row.ours else None
    f.append(row)
    idle, busy = spread(alone["ingest"]["idle"], "delivered_per_s"), spread(alone["ingest"]["busy"], "delivered_per_s")
    ingest = spread(alone["ingest"]["busy"], "ingest_per_s")
    f.append(Figure("delivered/s from a backlog, API idle", "tasks/s", idle))
    row = Figure(f"delivered/s from a backlog, {INGEST_CLIENTS} connections adding tasks", "tasks/s", busy)
    ratio = (busy.median or 0) / idle.median if idle.median else None
    row.ratio_override, row.ratio_note = ratio, "(under ingest / idle)"
    row.target, row.met = ">= 0.5x idle", ratio is not None and ratio >= 0.5
    f.append(row)
    f.append(Figure(f"  tasks added/s meanwhile by the {INGEST_CLIENTS} connections", "tasks/s", ingest))
    empty = scale.get(0)
    for size, s in scale.items():
        label = "empty database" if size == 0 else f"{size:,} tasks waiting"
        rows = [
            Figure(f"{label}: startup", "s", one(s["startup_s"]), higher_is_better=False),
            Figure(f"{label}: peak RSS", "MB", one(s["peak_rss_mb"]), higher_is_better=False),
            Figure(
                f"{label}: CPU while idle ({s['idle_s']:.0f} s)", "%", one(s["idle_cpu_pct"]), higher_is_better=False
            ),
            Figure(f"{label}: sync defer(), 1 thread, due in an hour", "tasks/s", Spread(s["defer_runs"], [])),
            Figure(f"{label}: immediate task lateness p50", "ms", one(s["immediate_lateness"]["p50_ms"])),
            Figure(f"{label}: immediate task lateness p99", "ms", one(s["immediate_lateness"]["p99_ms"])),
        ]
        if size and size == max(scale):
            rows[0].target, rows[0].met = "< 2", s["startup_s"] < 2
            rows[1].target, rows[1].met = "<= 150", s["peak_rss_mb"] <= 150
            rows[2].target, rows[2].met = "< 1", s["idle_cpu_pct"] < 1
            if empty:
                base = statistics.median(empty["defer_runs"])
                rows[3].target = "within 10% of empty"
                rows[3].met = statistics.median(s["defer_runs"]) >= 0.9 * base
        f += rows
    return f


def retry_rows(ours: list[float], theirs: list[float]) -> list[Figure]:
    """Delays between attempts of a failing task, ours against the formula and the peer's."""
    rows = []
    for i in range(RETRY_ATTEMPTS - 1):
        expected = backoff_formula(i + 1, 0.1, 2.0, 2)
        o = ours[i] if i < len(ours) else None
        q = theirs[i] if i < len(theirs) else None
        row = Figure(f"retry delay {i + 1} (formula {expected:g} s)", "s", one(o), one(q), target=f"{expected:g}")
        row.compare = False
        row.met = o is not None and 0 <= (o - expected) * 1000 <= 50
        rows.append(row)
    return rows


def main() -> None:
    """Run everything and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--no-peer", action="store_true", help="skip gcloud-tasks-emulator")
    parser.add_argument("--no-scale", action="store_true", help="skip the 1,000,000-task database")
    args = parser.parse_args()
    q = args.quick
    n = {
        "enqueue": 500 if q else 2000,
        "floor": 1000 if q else 4000,
        "waiting": 500 if q else 3000,
        "gclient": 300 if q else 1500,
        "e2e": 600 if q else 3000,
        "lateness": 100 if q else 300,
        "batch": 5000 if q else 20000,
        "backlog": 10000 if q else 40000,
        "window_s": 1 if q else 3,
        "scale_enqueue": 300 if q else 1000,
    }
    sizes = [] if args.no_scale else ([20_000] if q else [1_000_000])
    idle_s = 3.0 if q else 10.0
    started = time.perf_counter()
    details: dict[str, Any] = {"counts": n, "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}
    log("starting")
    with tempfile.TemporaryDirectory(prefix="deferred-bench-") as tmp:
        work = Path(tmp)
        install_log = work / "peer-install.log"
        installing = None if args.no_peer else peer.start_install(install_log)
        # The big database is built while the peer's venv installs (on a fresh checkout); nothing is
        # timed until the install is over, as pip's CPU would come off the figures.
        for size in [0, *sizes]:
            log(f"building a database of {size:,} waiting tasks")
            details[f"build_{size}_s"] = build_db(work / f"scale-{size}.sqlite3", size)
        peer_problem = "skipped (--no-peer)" if args.no_peer else None
        if not args.no_peer:
            log("waiting for the peer's venv" if installing else "peer venv ready")
            budget = max(30.0, PEER_INSTALL_BUDGET_S - (time.perf_counter() - started))
            peer_problem = peer.finish_install(installing, install_log, budget)
        details["peer_install_s"] = time.perf_counter() - started
        handler = Handler(work)
        try:
            bench = Bench(work, handler, n, with_peer=False)
            alone = bench.ours_alone()
            scale: dict[int, Any] = {}
            for size in [0, *sizes]:
                db = work / f"scale-{size}.sqlite3"
                scale[size] = {**measure(work, db, handler, n["scale_enqueue"], idle_s), "idle_s": idle_s}
                db.unlink(missing_ok=True)
                log(f"{size:,} waiting: {scale[size]}")
            bench.with_peer = peer_problem is None
            enq = bench.enqueue()
            gclient = bench.google_client() if bench.with_peer else {}
            e2e = bench.delivered()
            late = bench.lateness()
            peer_retry = bench.peer_retry() if bench.with_peer else []
        finally:
            handler.stop()
    details.update({"enqueue": enq, "google_client": gclient, "e2e": e2e, "lateness": late, "alone": alone})
    details.update({"scale": scale, "peer_problem": peer_problem, "loadavg_end": os.getloadavg()})
    details["total_s"] = time.perf_counter() - started
    rows = figures(enq, gclient, e2e, late) if gclient or args.no_peer else []
    rows += alone_figures(alone, scale) + retry_rows(alone["retry_delays"], peer_retry)
    path = write(rows, details)
    print(table(rows))
    if peer_problem:
        print(f"\npeer: {peer_problem}")
    if not bench.grpc:
        print("\nours over gRPC: this build serves no gRPC (no --grpc-port)")
    start, end = details["loadavg_start"], details["loadavg_end"]
    print(
        f"\n{len(rows)} figures in {details['total_s']:.0f}s on {os.cpu_count()} CPUs; load average"
        f" {start[0]:.1f} at start, {end[0]:.1f} at the end (1-min), {end[2]:.1f} over the last 15 min"
    )
    print(f"written to {path.relative_to(BENCH.parent)}")


if __name__ == "__main__":
    main()
