"""Google's ``google-cloud-tasks`` client against an emulator, over gRPC or REST; prints one JSON line.

Runs in bench/.peer-venv, so the peer and our emulator are driven by the very same client version.

Usage: gclient.py ENDPOINT TRANSPORT COMMAND ARGS...
  ENDPOINT   host:port
  TRANSPORT  grpc | rest
  COMMAND    enqueue N THREADS DUE_IN_S | delivered N THREADS | spaced N AHEAD_S SPACING_S | pause | resume | fail
"""

from __future__ import annotations

import json
import sys
import threading
import time

import grpc
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud.tasks_v2 import CloudTasksClient, Task
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from google.protobuf import timestamp_pb2

QUEUE = "projects/local-project/locations/us-central1/queues/default"
BODY = b"b" * 200


def client(endpoint: str, transport: str) -> CloudTasksClient:
    """gRPC on an insecure channel (as the peer's README shows), or REST over plain HTTP."""
    if transport == "grpc":
        return CloudTasksClient(transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(endpoint)))
    return CloudTasksClient(
        transport="rest",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=f"http://{endpoint}"),
    )


def task(path: str = "/task", due_s: float | None = None) -> Task:
    """An App Engine task with a 200-byte body."""
    data: dict[str, object] = {"app_engine_http_request": {"relative_uri": path, "body": BODY}}
    if due_s is not None:
        ts = timestamp_pb2.Timestamp()
        ts.FromNanoseconds(int(due_s * 1e9))
        data["schedule_time"] = ts
    return Task(data)


def enqueue(c: CloudTasksClient, n: int, threads: int, due_in_s: float) -> dict[str, float]:
    """Create ``n`` tasks from ``threads`` threads, one call each; the rate and when it started."""
    per = n // threads
    barrier = threading.Barrier(threads + 1)
    c.create_task(parent=QUEUE, task=task())  # the channel is up before timing starts

    def work() -> None:
        barrier.wait()
        for _ in range(per):
            c.create_task(parent=QUEUE, task=task(due_s=time.time() + due_in_s if due_in_s else None))

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    t0_wall = time.time()
    barrier.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    return {"rate": per * threads / (time.perf_counter() - t0), "t0": t0_wall}


def main() -> None:
    """Run one command and print its result."""
    endpoint, transport, command, *args = sys.argv[1:]
    c = client(endpoint, transport)
    out: dict[str, object] = {}
    if command == "enqueue":
        out = enqueue(c, int(args[0]), int(args[1]), float(args[2]))
    elif command == "spaced":
        n, ahead, spacing = int(args[0]), float(args[1]), float(args[2])
        for _ in range(n):
            c.create_task(parent=QUEUE, task=task(due_s=time.time() + ahead))
            time.sleep(spacing)
    elif command in ("pause", "resume"):
        getattr(c, f"{command}_queue")(name=QUEUE)
        out = {"t0": time.time()}
    elif command == "fail":
        c.create_task(parent=QUEUE, task=task("/fail"))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
