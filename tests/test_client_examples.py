"""Each example under examples/ runs as its README says: a real process, a real emulator, a deferred task delivered."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from test_client_fixtures import LiveEmulator, http_post

pytest_plugins = ["test_client_fixtures"]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 150) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the example exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"the example did not listen on {port}:\n{log.read_text()}")


# Each example starts as a process of its own; importing a framework took up to 31 s on a slow CI machine.
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "example", ["flask_example", "django_example", "fastapi_example", "starlette_example", "aiohttp_example"]
)
def test_example_defers_and_runs_a_task(
    example: str, live_emulator: Callable[..., LiveEmulator], tmp_path: Path
) -> None:
    # Given an emulator and the example app sharing a secret, as the README runs them
    port = free_port()
    emulator = live_emulator(app_url=f"http://127.0.0.1:{port}", secret="example-secret")
    env = {
        **os.environ,
        "PORT": str(port),
        "DEFERRED_EMULATOR_HOST": emulator.host,
        "DEFERRED_EMULATOR_SECRET": "example-secret",
    }
    log = tmp_path / "example.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(EXAMPLES / f"{example}.py")], env=env, stdout=out, stderr=out)
    try:
        wait_for_port(port, proc, log)
        # When a request to the app defers a task
        status, body = http_post(f"http://127.0.0.1:{port}/signup/ann")
        assert status == 202, body
        assert json.loads(body)["task"]
        emulator.drain()
        # Then the emulator delivered it and the app ran it
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/sent", timeout=10) as resp:
            assert json.loads(resp.read()) == ["ann"], log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
