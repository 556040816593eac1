"""Subprocesses the benchmark starts, and what /proc says about them (peak RSS, CPU seconds)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A port nobody listens on right now, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def project_env() -> dict[str, str]:
    """The environment for our own processes: unbuffered, and the source tree importable."""
    env = dict(os.environ)
    paths = [str(ROOT / "emulator"), str(ROOT / "client")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    for key in [k for k in env if k.startswith("DEFERRED_EMULATOR_")]:
        del env[key]
    return env


def http(method: str, url: str, body: Any = None, timeout: float = 30.0) -> Any:
    """A JSON request with urllib (control calls only, not timed)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else {}


class Proc:
    """A started process: its pid, and its memory and CPU as /proc reports them."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.args = args
        self.log_path = log
        out = open(log, "wb") if log else subprocess.DEVNULL
        self._out = out
        self.started = time.perf_counter()
        self.popen = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        self.pid = self.popen.pid

    def _status(self, field: str) -> int:
        """A ``kB`` field of /proc/PID/status, in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def peak_rss(self) -> int:
        """Highest resident memory so far (VmHWM), in bytes."""
        return self._status("VmHWM")

    def rss(self) -> int:
        """Resident memory now, in bytes."""
        return self._status("VmRSS")

    def cpu_s(self) -> float:
        """User plus system CPU seconds used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def idle_cpu(self, seconds: float) -> float:
        """Share of one core used over ``seconds`` of wall time (0.01 is 1%)."""
        before_cpu, before = self.cpu_s(), time.perf_counter()
        time.sleep(seconds)
        return (self.cpu_s() - before_cpu) / (time.perf_counter() - before)

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.popen.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a few seconds; this process only."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        if self._out is not subprocess.DEVNULL:
            self._out.close()  # type: ignore[union-attr]

    def tail(self, lines: int = 15) -> str:
        """The last lines of its output (for error messages)."""
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def wait_http(url: str, proc: Proc, timeout_s: float = 180.0) -> float:
    """Wait until ``url`` answers (any status); seconds since the process started."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.args[:3]} exited early:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                pass
            return time.perf_counter() - proc.started
        except urllib.error.HTTPError:
            return time.perf_counter() - proc.started
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s:\n{proc.tail()}")


def wait_port(port: int, proc: Proc, timeout_s: float = 180.0) -> float:
    """Wait until something accepts TCP connections on 127.0.0.1:port; seconds since start."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.args[:3]} exited early:\n{proc.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return time.perf_counter() - proc.started
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"nothing listens on {port} after {timeout_s}s:\n{proc.tail()}")


class Handler:
    """The trivial aiohttp app (bench/handler.py) in its own process."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Proc(
            [sys.executable, str(BENCH / "handler.py"), str(self.port)], project_env(), workdir / "handler.log"
        )
        wait_http(self.url + "/_bench/count", self.proc)

    def reset(self) -> None:
        """Forget earlier arrivals."""
        http("POST", self.url + "/_bench/reset", {})

    def count(self) -> tuple[int, float]:
        """(deliveries so far, time of the last one)."""
        data = http("GET", self.url + "/_bench/count")
        return int(data["count"]), float(data["last"])

    def arrivals(self) -> list[tuple[float, float, str]]:
        """Every recorded (arrival, eta, path)."""
        return [tuple(a) for a in http("GET", self.url + "/_bench/arrivals")["arrivals"]]  # type: ignore[misc]

    def wait_count(self, n: int, timeout_s: float) -> tuple[int, float]:
        """Poll until ``n`` deliveries came (or the timeout); (count, time of the last one)."""
        deadline = time.perf_counter() + timeout_s
        got, last = self.count()
        while got < n and time.perf_counter() < deadline:
            time.sleep(0.02)
            got, last = self.count()
        return got, last

    def stop(self) -> None:
        """Stop the app."""
        self.proc.stop()
