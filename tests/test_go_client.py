"""Go's gRPC stack (grpc-go, with the Cloud Tasks stubs Google generates for Go) against the emulator.

Runs when ``go`` and Debian's grpc-go and genproto sources are installed (CI installs them:
golang-go, golang-google-grpc-dev, golang-google-genproto-dev); the client is built in GOPATH mode
from those sources, no download. A third HTTP/2 and gRPC implementation beside grpcio's C core and
Node's grpc-js: its own SETTINGS, windows and pings, a 900 KiB message each way and 50 calls at once.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from test_client_fixtures import LiveEmulator

pytest_plugins = ["test_client_fixtures"]
pytestmark = [pytest.mark.subprocess, pytest.mark.timeout(300)]

GO_DIR = Path(__file__).parent / "go"
GOPATH = Path("/usr/share/gocode")
STUBS = GOPATH / "src/google.golang.org/genproto/googleapis/cloud/tasks/v2"


@pytest.fixture(scope="module")
def go_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The client, built."""
    go = shutil.which("go")
    if go is None or not STUBS.is_dir() or not (GOPATH / "src/google.golang.org/grpc").is_dir():
        pytest.skip("go and Debian's grpc-go and genproto are not installed (CI installs them)")
    out = tmp_path_factory.mktemp("go") / "client"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH), "GOCACHE": str(out.parent / "cache")}
    done = subprocess.run(
        [go, "build", "-o", str(out), "client.go"], cwd=GO_DIR, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, f"go build failed: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("port", ["main", "grpc-port"])
def test_the_go_grpc_stack_works(go_client: Path, live_emulator: Callable[..., LiveEmulator], port: str) -> None:
    # Given an emulator, and grpc-go pointed at its one port, or at --grpc-port
    grpc_port = free_port() if port == "grpc-port" else None
    emulator = live_emulator(grpc_port=grpc_port)
    project, location = "go-project", "us-central1"
    target = f"127.0.0.1:{grpc_port or emulator.port}"
    # When it creates a queue and a task, lists, hits two errors, sends and reads back a large task,
    # makes 50 calls at once and pauses the queue
    done = subprocess.run([str(go_client), target, project, location], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    queue = f"projects/{project}/locations/{location}/queues/go-queue"
    task = f"{queue}/tasks/from-go"
    # Then it saw what production would answer
    assert seen["queue"] == {"name": queue, "rate": 3, "state": "RUNNING"}
    assert seen["task"] == {"name": task, "body": "hello from go", "method": "PUT"}
    assert seen["listed"] == [task]
    assert seen["duplicate"] == {"code": 6, "details": "Requested entity already exists"}  # ALREADY_EXISTS
    assert seen["missing"]["code"] == 5 and seen["missing"]["details"].startswith("Queue does not exist.")
    assert seen["big"] is True
    assert (seen["concurrent"], seen["errors"]) == (50, [])
    assert seen["paused"] == "PAUSED"
    # And the emulator holds the task as sent, and every task the calls made
    status, stored = emulator.task("go-queue", "from-go")
    assert status == 200, stored
    assert stored["httpRequest"]["headers"]["X-From"] == "go"
    status, listed = emulator.call("GET", f"/v2/{queue}/tasks?pageSize=1000")
    assert status == 200 and len(listed["tasks"]) == 1 + 1 + 50
