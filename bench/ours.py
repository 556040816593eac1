"""Our emulator as a subprocess, and the measurements made against it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import deferred_client
import ingest
from deferred_client.client import BATCH_ADD, EmulatorClient
from deferred_client.config import Config
from procs import Handler, Proc, free_port, http, project_env, wait_http
from stats import lateness_ms

API = "/v2/projects/local-project/locations/us-central1/queues"
#: The pickled call of every deferred task in the benchmark is about this many bytes.
PAYLOAD_BYTES = 200


def noop(data: str) -> None:
    """What the benchmark's deferred tasks would run (the trivial app never runs it)."""


def payload_arg() -> str:
    """An argument that makes ``defer(noop, arg)`` pickle to about PAYLOAD_BYTES."""
    from deferred_client.serialize import serialize

    overhead = len(serialize(noop, ""))
    return "x" * max(1, PAYLOAD_BYTES - overhead)


class Ours:
    """``deferred-emulator serve`` on a free port of 127.0.0.1, delivering to the trivial app."""

    def __init__(self, workdir: Path, db: Path, handler: Handler, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "deferred_emulator", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--db", str(db), "--app-url", handler.url, "--log-level", "warning", *extra]
        self.proc = Proc(args, project_env(), workdir / f"emulator-{self.port}.log")
        self.startup_s = wait_http(self.url + "/_emulator/v1/health", self.proc)
        # Generous timeouts: on a busy machine a request can wait long behind deliveries.
        self.config = Config(host=f"127.0.0.1:{self.port}", timeout_s=300)
        deferred_client.configure(host=f"127.0.0.1:{self.port}", timeout_s=300)
        self.client = EmulatorClient(self.config)
        self.handler = handler

    @staticmethod
    def has_grpc() -> bool:
        """Whether this build serves gRPC too (``serve --grpc-port``)."""
        args = [sys.executable, "-m", "deferred_emulator", "serve", "--help"]
        done = subprocess.run(args, env=project_env(), capture_output=True, timeout=60, check=False)
        return b"--grpc-port" in done.stdout

    def stop(self) -> None:
        """Stop the emulator."""
        self.proc.stop()

    # -- enqueueing ---------------------------------------------------------------------------

    def defer_rate(self, n: int, threads: int = 1, countdown: float | None = None) -> float:
        """Tasks per second through sync ``deferred_client.defer()`` from ``threads`` threads."""
        arg = payload_arg()
        per = n // threads
        start = threading.Barrier(threads + 1)

        def work() -> None:
            start.wait()
            for _ in range(per):
                deferred_client.defer(noop, arg, _countdown=countdown)

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for w in workers:
            w.start()
        start.wait()
        t0 = time.perf_counter()
        for w in workers:
            w.join()
        return per * threads / (time.perf_counter() - t0)

    def warm_up(self, n: int = 20) -> None:
        """A few deliveries due now, so connections and caches are warm before timing starts; then none left."""
        self.handler.reset()
        arg = payload_arg()
        for _ in range(n):
            deferred_client.defer(noop, arg)
        got, _ = self.handler.wait_count(n, 30)
        if got < n:
            raise RuntimeError(f"warm-up: {got} of {n} tasks delivered")
        self.handler.reset()

    def delivered_per_task(self, n: int, threads: int = 4) -> float:
        """Tasks/s from the start of per-task ``defer()`` calls (due now) to the last delivery of ``n`` tasks."""
        self.handler.reset()
        t0 = time.time()
        self.defer_rate(n, threads)
        got, last = self.handler.wait_count(n, 120)
        if got < n:
            raise RuntimeError(f"delivered {got} of {n} tasks")
        return n / (last - t0)

    def batch_body(self, count: int, eta_s: float | None = None, path: str = "/task") -> bytes:
        """A tasks:batchAdd body of ``count`` tasks with ~200-byte bodies."""
        body = base64.b64encode(b"b" * PAYLOAD_BYTES).decode()
        task: dict[str, Any] = {"appEngineHttpRequest": {"relativeUri": path, "body": body}}
        if eta_s is not None:
            task["scheduleTime"] = (
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(eta_s)) + f".{int(eta_s % 1 * 1e6):06d}Z"
            )
        return json.dumps({"tasks": [{"queue": "default", "task": task}] * count}).encode()

    def batch_add(self, n: int, size: int = 100, eta_s: float | None = None) -> float:
        """Tasks per second through ``tasks:batchAdd`` of ``size`` tasks, one thread."""
        body = self.batch_body(size, eta_s)
        t0 = time.perf_counter()
        for _ in range(n // size):
            resp = self.client.transport.request("POST", BATCH_ADD, body)
            if resp.status != 200:
                raise RuntimeError(f"batchAdd answered {resp.status}: {resp.body[:300]!r}")
        return n // size * size / (time.perf_counter() - t0)

    def queue_action(self, action: str) -> None:
        """Pause or resume the default queue."""
        http("POST", f"{self.url}{API}/default:{action}", {})

    # -- delivery -----------------------------------------------------------------------------

    def backlog_rate(self, n: int) -> dict[str, float]:
        """Tasks/s delivering ``n`` tasks that piled up in a paused queue, from resume to the last one."""
        self.handler.reset()
        self.queue_action("pause")
        self.batch_add(n)
        t0 = time.time()
        self.queue_action("resume")
        got, last = self.handler.wait_count(n, 180)
        return {"delivered_per_s": got / (last - t0), "delivered": got}

    def delivery_window(self, backlog: int, window_s: float, clients: int = 0) -> dict[str, Any]:
        """Deliveries/s over ``window_s`` from ``backlog`` tasks due now, while ``clients`` connections add tasks.

        The backlog is added to the paused queue, the load generator (if any) starts, then the queue is
        resumed; after the window the queue is purged, so each run starts from the same state.
        """
        self.queue_action("pause")
        self.batch_add(backlog)
        self.handler.reset()
        log = Path(self.proc.log_path or "ingest.log").with_suffix(".ingest.log")
        load = ingest.start(self.url, clients, window_s + 2.0, log) if clients else None
        try:
            if load is not None:
                time.sleep(1.0)  # the load is at full speed before delivery starts
            self.queue_action("resume")
            time.sleep(0.5)
            c0, t0 = self.handler.count()[0], time.time()
            time.sleep(window_s)
            c1, t1 = self.handler.count()[0], time.time()
        finally:
            added = ingest.finish(load) if load is not None else {}
        self.queue_action("purge")
        out = {"delivered_per_s": (c1 - c0) / (t1 - t0), "ingest_per_s": added.get("per_s", 0.0)}
        out["backlog_ran_out"] = c1 >= backlog
        return out

    def lateness(self, n: int, ahead_s: float = 2.0, spacing_s: float = 0.004) -> dict[str, float]:
        """Lateness of ``n`` tasks each due ``ahead_s`` after it was deferred (one every ``spacing_s``)."""
        self.handler.reset()
        arg = payload_arg()
        for _ in range(n):
            deferred_client.defer(noop, arg, _countdown=ahead_s)
            time.sleep(spacing_s)
        self.handler.wait_count(n, ahead_s + 30)
        return lateness_ms(self.handler.arrivals())

    def immediate_lateness(self, n: int, spacing_s: float = 0.01) -> dict[str, float]:
        """Arrival minus ETA of tasks due at once (deferred one every ``spacing_s``)."""
        self.handler.reset()
        arg = payload_arg()
        for _ in range(n):
            deferred_client.defer(noop, arg)
            time.sleep(spacing_s)
        self.handler.wait_count(n, 30)
        return lateness_ms(self.handler.arrivals())

    def retry_delays(self, attempts: int, retry: dict[str, Any]) -> list[float]:
        """Seconds between the attempts of a task whose handler always fails."""
        self.handler.reset()
        task = {"appEngineHttpRequest": {"relativeUri": "/fail"}, "retryConfig": {**retry, "maxAttempts": attempts}}
        http("POST", f"{self.url}{API}/default/tasks", {"task": task})
        self.handler.wait_count(attempts, 60)
        times = [a[0] for a in self.handler.arrivals() if a[2] == "/fail"]
        return [b - a for a, b in zip(times, times[1:])]
