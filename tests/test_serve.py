"""``deferred-emulator serve`` as a real process: banner, restarts after SIGKILL, and one-line errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from test_client_fixtures import AiohttpThread

# Each test starts the console script, whose imports are slow on a loaded machine.
pytestmark = [pytest.mark.subprocess, pytest.mark.timeout(300)]

API = "/v2/projects/p/locations/l/queues/default/tasks"
SCRIPT = shutil.which("deferred-emulator", path=str(Path(sys.executable).parent)) or "deferred-emulator"


class Serve:
    """One ``deferred-emulator serve`` process on a free port."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [SCRIPT, "serve", "--port", "0", "--log-level", "warning", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.banner: list[str] = []
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.stdout.close()
                raise AssertionError(f"serve exited {self.proc.wait()}: {self.banner}")
            self.banner.append(line.rstrip("\n"))
            match = re.match(r"deferred-emulator listening on (http://\S+)", line)
            if match:
                self.url = match.group(1)
                break
        else:
            raise AssertionError("no banner within 30 s")
        # Keep reading so a chatty log never fills the pipe and blocks the server.
        self.reader = threading.Thread(target=self._drain_output, daemon=True)
        self.reader.start()

    def _drain_output(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.banner.append(line.rstrip("\n"))

    def call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data, {"Content-Type": "application/json"}, method=method)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.reader.join(timeout=10)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.reader.join(timeout=10)
        return code


class App:
    """An app that records task names; while ``hold`` is set, it holds deliveries open."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.hold = threading.Event()
        self.held = threading.Semaphore(0)
        app = web.Application()
        app.router.add_post("/work", self.handle)
        self.server = AiohttpThread(app)

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.names.append(request.headers["X-AppEngine-TaskName"])
        if self.hold.is_set():
            self.held.release()
            await self._wait_released()
        return web.Response(text="ok")

    async def _wait_released(self) -> None:
        import asyncio

        for _ in range(300):
            if not self.hold.is_set():
                return
            await asyncio.sleep(0.1)


@pytest.fixture
def app() -> Iterator[App]:
    app = App()
    yield app
    app.hold.clear()
    app.server.close()


def test_tasks_waiting_and_in_flight_survive_sigkill(tmp_path: Path, app: App) -> None:
    # Given an emulator holding one delivery open and more tasks waiting behind a concurrency of 1
    db = str(tmp_path / "tasks.sqlite3")
    args = ("--db", db, "--app-url", app.server.url)
    server = Serve(*args, cwd=tmp_path)
    limits = {"rateLimits": {"maxDispatchesPerSecond": 100, "maxConcurrentDispatches": 1}}
    server.call("PATCH", "/v2/projects/p/locations/l/queues/default", limits)
    assert any("console" in line for line in server.banner)
    app.hold.set()
    names = [f"t{i}" for i in range(5)]
    for name in names:
        server.call("POST", API, {"task": {"name": name, "appEngineHttpRequest": {"relativeUri": "/work"}}})
    assert app.held.acquire(timeout=20), "no delivery started"
    # When the emulator is killed with SIGKILL mid-delivery, and restarted on the same db
    server.kill()
    app.hold.clear()
    server = Serve(*args, cwd=tmp_path)
    try:
        # Then every task is delivered (the one in flight again: at least once)
        deadline = time.monotonic() + 30
        while set(app.names) != set(names) and time.monotonic() < deadline:
            server.call("POST", "/_emulator/v1/drain", {"timeout": 5})
        assert set(app.names) == set(names)
        assert server.call("GET", API) == {"tasks": []}
    finally:
        assert server.stop() == 0


def test_sigterm_shuts_down_cleanly(tmp_path: Path) -> None:
    server = Serve("--db", str(tmp_path / "t.sqlite3"), cwd=tmp_path)
    assert server.call("GET", "/_emulator/v1/health")["ok"] is True
    # The default OIDC issuer is the address as bound (the port --port 0 picked)
    assert server.call("GET", "/.well-known/openid-configuration")["issuer"] == server.url
    assert server.stop() == 0
    assert "shutting down" in "\n".join(server.banner)


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, *args], cwd=cwd, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_bad_flags_port_in_use_and_unwritable_db_are_one_line(tmp_path: Path) -> None:
    assert "--max-task-size" in one_line_error(run_cli("serve", "--max-task-size", "zero", cwd=tmp_path))
    assert "--nope" in one_line_error(run_cli("serve", "--nope", cwd=tmp_path))
    assert "--oidc-issuer" in one_line_error(run_cli("serve", "--oidc-issuer", "ftp://x", cwd=tmp_path))
    line = one_line_error(run_cli("serve", "--target", "nonsense", cwd=tmp_path))
    assert "--target" in line
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_line_error(run_cli("serve", "--port", str(port), "--db", ":memory:", cwd=tmp_path))
        assert str(port) in line
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    line = one_line_error(run_cli("serve", "--db", str(blocker / "tasks.sqlite3"), cwd=tmp_path))
    assert "tasks.sqlite3" in line


def test_options_are_read_from_the_environment(tmp_path: Path) -> None:
    # Given the port and the db only in DEFERRED_EMULATOR_* variables
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        "DEFERRED_EMULATOR_PORT": str(port),
        "DEFERRED_EMULATOR_DB": str(tmp_path / "env.sqlite3"),
        "DEFERRED_EMULATOR_OIDC_ISSUER": "http://tasks-emulator:8123",
    }
    proc = subprocess.Popen(
        [SCRIPT, "serve"], cwd=tmp_path, env={**os.environ, **env}, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        # Then the emulator uses them
        assert f"127.0.0.1:{port}" in first
        assert (tmp_path / "env.sqlite3").exists()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/.well-known/openid-configuration", timeout=30) as resp:
            assert json.load(resp)["issuer"] == "http://tasks-emulator:8123"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stdout is not None
        proc.stdout.close()
