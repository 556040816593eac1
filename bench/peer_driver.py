"""Drive gcloud-tasks-emulator with google-cloud-tasks over gRPC; prints one JSON line. Runs in bench/.peer-venv.

Usage: peer_driver.py PORT enqueue N THREADS DUE_IN_S | spaced N AHEAD_S SPACING_S | pause | resume | fail
"""

from __future__ import annotations

import json
import sys
import threading
import time

import grpc
from google.cloud.tasks_v2 import CloudTasksClient, Task
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from google.protobuf import timestamp_pb2

QUEUE = "projects/local-project/locations/us-central1/queues/default"
BODY = b"b" * 200


def client(port: int) -> CloudTasksClient:
    """A client on an insecure channel, as the peer's README shows."""
    return CloudTasksClient(transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(f"127.0.0.1:{port}")))


def task(path: str = "/task", due_s: float | None = None) -> Task:
    """An App Engine task with a 200-byte body."""
    data: dict[str, object] = {"app_engine_http_request": {"relative_uri": path, "body": BODY}}
    if due_s is not None:
        ts = timestamp_pb2.Timestamp()
        ts.FromNanoseconds(int(due_s * 1e9))
        data["schedule_time"] = ts
    return Task(data)


def enqueue(c: CloudTasksClient, n: int, threads: int, due_in_s: float) -> dict[str, float]:
    """Create ``n`` tasks from ``threads`` threads; the rate and when it started."""
    per = n // threads
    barrier = threading.Barrier(threads + 1)

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
    port, command, *args = sys.argv[1:]
    c = client(int(port))
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
