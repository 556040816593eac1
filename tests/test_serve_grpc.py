"""``deferred-emulator serve`` answers Google's gRPC client on its one port, and on ``--grpc-port`` too."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import grpc
import pytest
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from test_serve import Serve, one_line_error, run_cli

pytestmark = [pytest.mark.subprocess, pytest.mark.timeout(300)]


def banner_line(server: Serve, prefix: str) -> str:
    """The banner line that starts with ``prefix`` (the banner is read by a thread: wait for it, briefly)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in list(server.banner):
            if line.strip().startswith(prefix):
                return line
        time.sleep(0.01)
    raise AssertionError(f"no {prefix!r} line in {server.banner}")


def grpc_client(target: str) -> tasks_v2.CloudTasksClient:
    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(target)))


def test_serve_answers_grpc_on_its_port_and_on_grpc_port(tmp_path: Path) -> None:
    # Given serve with a gRPC-only port besides its main one
    server = Serve("--db", str(tmp_path / "t.sqlite3"), "--grpc-port", "0", cwd=tmp_path)
    try:
        host = server.url.split("://", 1)[1]
        # Then the banner names both gRPC addresses
        line = banner_line(server, "gRPC")
        found = re.search(rf"gRPC\s+{re.escape(host)} and (127\.0\.0\.1:\d+) \(gRPC only\)", line)
        assert found, line
        parent = "projects/p/locations/l/queues/default"
        # When Google's client creates a task over gRPC on the main port
        with grpc_client(host) as client:
            created = client.create_task(
                parent=parent, task=tasks_v2.Task(http_request=tasks_v2.HttpRequest(url="http://127.0.0.1:9/x"))
            )
        # Then the gRPC-only port and REST see the same task
        with grpc_client(found[1]) as client:
            assert [t.name for t in client.list_tasks(parent=parent)] == [created.name]
        assert [t["name"] for t in server.call("GET", f"/v2/{parent}/tasks")["tasks"]] == [created.name]
    finally:
        assert server.stop() == 0


def test_a_busy_grpc_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_line_error(
            run_cli("serve", "--port", "0", "--db", ":memory:", "--grpc-port", str(port), cwd=tmp_path)
        )
    assert f"gRPC on 127.0.0.1:{port}" in line
