"""Java's gRPC stack (grpc-java over Netty) against the emulator, with messages serialized here.

Runs when ``javac`` and Debian's grpc-java, Netty, Guava and PerfMark jars are installed (CI installs
them: libgrpc-java, libnetty-java, libguava-java, libperfmark-java). The Cloud Tasks Java stubs are not
packaged, so ``tests/java/GrpcCalls.java`` calls the methods by name with the bytes this test
serializes, and hands back what the server answered: Java's own HTTP/2 (Netty's codec) on the wire,
a 900 KiB message each way and 50 calls at once.
"""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.cloud import tasks_v2
from test_client_fixtures import LiveEmulator

pytest_plugins = ["test_client_fixtures"]
pytestmark = [pytest.mark.subprocess, pytest.mark.timeout(300)]

JAVA_DIR = Path(__file__).parent / "java"
JARS = Path("/usr/share/java")
NEEDED = [
    *(f"grpc-{name}.jar" for name in ("api", "core", "netty", "stub", "context")),
    *(f"netty-{name}.jar" for name in ("buffer", "codec", "codec-http", "codec-http2", "common", "handler")),
    *(f"netty-{name}.jar" for name in ("resolver", "transport")),
    "guava.jar",
    "perfmark-api.jar",
]


@pytest.fixture(scope="module")
def java_calls(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The command that runs the client, compiled."""
    java, javac = shutil.which("java"), shutil.which("javac")
    missing = [jar for jar in NEEDED if not (JARS / jar).is_file()]
    if java is None or javac is None or missing:
        pytest.skip(f"javac or Debian's grpc-java jars are not installed (CI installs them): {missing}")
    out = tmp_path_factory.mktemp("java")
    classpath = ":".join([str(out), *(str(JARS / jar) for jar in NEEDED)])
    done = subprocess.run(
        [javac, "-cp", classpath, "-d", str(out), "GrpcCalls.java"],
        cwd=JAVA_DIR,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"javac failed: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    return [java, "-cp", classpath, "GrpcCalls"]


def line(method: str, message: Any) -> str:
    """One call for the client: the method and the request, serialized."""
    return f"{method} {base64.b64encode(type(message).serialize(message)).decode()}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("port", ["main", "grpc-port"])
def test_the_java_grpc_stack_works(
    java_calls: list[str], live_emulator: Callable[..., LiveEmulator], port: str
) -> None:
    # Given an emulator, and grpc-java over Netty pointed at its one port, or at --grpc-port
    grpc_port = free_port() if port == "grpc-port" else None
    emulator = live_emulator(grpc_port=grpc_port)
    queue = "projects/java-project/locations/us-central1/queues/default"
    big = bytes(range(256)) * 3600  # 900 KiB
    named = tasks_v2.Task(name=f"{queue}/tasks/from-java", http_request={"url": "https://example.com/", "body": b"hi"})
    calls = [
        line("CreateTask", tasks_v2.CreateTaskRequest(parent=queue, task=named, response_view="FULL")),
        line("CreateTask", tasks_v2.CreateTaskRequest(parent=queue, task=named)),
        line("GetQueue", tasks_v2.GetQueueRequest(name=queue.replace("default", "missing"))),
        line(
            "CreateTask",
            tasks_v2.CreateTaskRequest(
                parent=queue,
                task={"http_request": {"url": "https://example.com/big", "body": big}},
                response_view="FULL",
            ),
        ),
        "MANY 50 "
        + line("CreateTask", tasks_v2.CreateTaskRequest(parent=queue, task={"http_request": {"url": "https://e/"}})),
        line("NoSuchMethod", tasks_v2.GetQueueRequest(name=queue)),
    ]
    # When it makes those calls: a task, the same name again, a missing queue, a large task, 50 at once,
    # and a method no service has
    target = ["127.0.0.1", str(grpc_port or emulator.port)]
    done = subprocess.run(
        [*java_calls, *target], input="\n".join(calls) + "\n", capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    created, duplicate, missing, large, many, unknown = done.stdout.strip().splitlines()
    # Then each answer is what production gives
    kind, raw = created.split(" ", 1)
    assert kind == "OK", created
    task = tasks_v2.Task.deserialize(base64.b64decode(raw))
    assert (task.name, task.http_request.body) == (named.name, b"hi")
    assert duplicate == "ERR 6 Requested entity already exists"  # ALREADY_EXISTS
    assert missing.startswith("ERR 5 Queue does not exist.")  # NOT_FOUND
    kind, raw = large.split(" ", 1)
    assert kind == "OK" and tasks_v2.Task.deserialize(base64.b64decode(raw)).http_request.body == big
    assert many == "MANY 50 0"
    assert unknown.startswith("ERR 12 ")  # UNIMPLEMENTED
    # And the emulator holds them all
    status, listed = emulator.call("GET", f"/v2/{queue}/tasks?pageSize=1000")
    assert status == 200 and len(listed["tasks"]) == 1 + 1 + 50
