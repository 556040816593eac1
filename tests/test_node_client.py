"""Google's Node.js client, ``@google-cloud/tasks``, on its default transport (gRPC) against the emulator.

Runs when ``node`` and ``npm`` are installed (CI installs Debian's); the package is installed into
tests/node/node_modules from tests/node/package-lock.json on first use (``make install-dev`` does it too).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from test_client_fixtures import LiveEmulator

pytest_plugins = ["test_client_fixtures"]
pytestmark = [pytest.mark.subprocess, pytest.mark.timeout(300)]

NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the client package installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed (CI installs Debian's nodejs and npm)")
    if not (NODE_DIR / "node_modules" / "@google-cloud" / "tasks").is_dir():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True, timeout=240
        )
        assert done.returncode == 0, f"npm ci failed: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    return node


def test_the_node_client_works_over_grpc(node: str, live_emulator: Callable[..., LiveEmulator]) -> None:
    # Given an emulator, and Node's client pointed at its one port (servicePath, port, insecure channel)
    emulator = live_emulator()
    project, location = "node-project", "us-central1"
    # When the client creates a queue and a task, lists, hits two errors, reads IAM and pauses the queue
    done = subprocess.run(
        [node, "client.js", "127.0.0.1", str(emulator.port), project, location],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    queue = f"projects/{project}/locations/{location}/queues/node-queue"
    task = f"{queue}/tasks/from-node"
    # Then it saw what production would answer
    assert seen["queue"] == {"name": queue, "rate": 3, "state": "RUNNING"}
    assert seen["task"] == {"name": task, "body": "hello from node", "method": "PUT"}
    assert seen["listed"] == [task]
    assert seen["duplicate"] == {"code": 6, "details": "Requested entity already exists"}  # ALREADY_EXISTS
    assert seen["missing"]["code"] == 5  # NOT_FOUND
    assert seen["missing"]["details"].startswith("Queue does not exist.")
    assert (seen["etag"], seen["paused"]) == ("ACAB", "PAUSED")
    # And the emulator holds the task as sent
    status, stored = emulator.task("node-queue", "from-node")
    assert status == 200, stored
    assert stored["httpRequest"]["headers"]["X-From"] == "node"
