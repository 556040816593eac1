"""The peer, gcloud-tasks-emulator (its own venv: it pins protobuf < 5), and Google's client run from that venv."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from procs import BENCH, Handler, Proc, free_port, wait_port
from stats import lateness_ms

VENV = BENCH / ".peer-venv"
REQUIREMENTS = BENCH / "peer-requirements.txt"
PY = VENV / "bin" / "python"
MARKER = VENV / ".installed"


def _wanted() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def venv_ready() -> bool:
    """Whether bench/.peer-venv holds exactly the pinned requirements."""
    return MARKER.exists() and MARKER.read_text() == _wanted()


def start_install(log: Path) -> subprocess.Popen[bytes] | None:
    """Begin building bench/.peer-venv in the background (None when it is already there)."""
    if venv_ready():
        return None
    script = (
        f"rm -rf '{VENV}' && '{sys.executable}' -m venv '{VENV}'"
        f" && '{PY}' -m pip install -q --no-compile --disable-pip-version-check -r '{REQUIREMENTS}'"
        f" && printf %s {_wanted()} > '{MARKER}'"
    )
    with open(log, "wb") as out:
        return subprocess.Popen(["bash", "-c", script], stdout=out, stderr=subprocess.STDOUT)


def finish_install(proc: subprocess.Popen[bytes] | None, log: Path, timeout_s: float) -> str | None:
    """Wait for the install; None when the venv is usable, else why not."""
    if proc is not None:
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return f"installing gcloud-tasks-emulator took over {timeout_s:.0f}s"
    if venv_ready():
        return None
    tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
    return "could not install gcloud-tasks-emulator: " + (" | ".join(tail) or "unknown error")


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def google_client(endpoint: str, transport: str, *args: Any, timeout_s: float = 300) -> dict[str, Any]:
    """Run bench/gclient.py (Google's client, from the peer's venv) against ``endpoint``; its JSON answer."""
    cmd = [str(PY), str(BENCH / "gclient.py"), endpoint, transport, *map(str, args)]
    done = subprocess.run(cmd, env=_clean_env(), capture_output=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"google client {args}: {done.stderr.decode(errors='replace')[-800:]}")
    return dict(json.loads(done.stdout.decode().strip().splitlines()[-1]))


class Peer:
    """gcloud-tasks-emulator on a free port of 127.0.0.1, delivering to the trivial app."""

    def __init__(self, workdir: Path, handler: Handler, max_retries: int = 6) -> None:
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.handler = handler
        args = [str(PY), str(BENCH / "peer_server.py"), str(self.port), str(handler.port), str(max_retries)]
        self.proc = Proc(args, _clean_env(), workdir / f"peer-{self.port}.log")
        self.startup_s = wait_port(self.port, self.proc)

    def drive(self, *args: Any) -> dict[str, Any]:
        """Google's client over gRPC, the peer's only transport."""
        return google_client(self.endpoint, "grpc", *args)

    def stop(self) -> None:
        """Stop the peer."""
        self.proc.stop()

    def enqueue_rate(self, n: int, threads: int = 1, due_in_s: float = 0) -> float:
        """create_task per second from ``threads`` threads (tasks due now when ``due_in_s`` is 0)."""
        return float(self.drive("enqueue", n, threads, due_in_s)["rate"])

    def delivered_rate(self, n: int, threads: int = 4) -> float:
        """Tasks/s from the start of per-task enqueueing to the last delivery of ``n`` tasks due now."""
        self.handler.reset()
        out = self.drive("enqueue", n, threads, 0)
        got, last = self.handler.wait_count(n + 1, 180)  # the driver's warm-up task is delivered too
        if got < n + 1:
            raise RuntimeError(f"the peer delivered {got} of {n + 1} tasks")
        return n / (last - out["t0"])

    def lateness(self, n: int, ahead_s: float = 2.0, spacing_s: float = 0.004) -> dict[str, float]:
        """Lateness of ``n`` tasks each due ``ahead_s`` after it was created."""
        self.handler.reset()
        self.drive("spaced", n, ahead_s, spacing_s)
        self.handler.wait_count(n, ahead_s + 60)
        return lateness_ms(self.handler.arrivals())

    def retry_delays(self, attempts: int) -> list[float]:
        """Seconds between the attempts of a task whose handler always fails."""
        self.handler.reset()
        self.drive("fail")
        deadline = time.perf_counter() + 30
        times: list[float] = []
        while len(times) < attempts and time.perf_counter() < deadline:
            time.sleep(0.1)
            times = [a[0] for a in self.handler.arrivals() if a[2] == "/fail"]
        return [b - a for a, b in zip(times, times[1:])]
