"""Start gcloud-tasks-emulator bound to 127.0.0.1 (it binds every interface itself). Runs in bench/.peer-venv.

Usage: peer_server.py PORT TARGET_PORT MAX_RETRIES
"""

from __future__ import annotations

import logging
import sys
import time
from concurrent import futures

import grpc
from gcloud_tasks_emulator import server
from gcloud_tasks_emulator.cloudtasks_pb2_grpc import add_CloudTasksServicer_to_server

QUEUE = "projects/local-project/locations/us-central1/queues/default"


def _run_api(self: server.APIThread) -> None:
    """APIThread.run, as published, with the loopback address instead of [::]."""
    self._httpd = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    add_CloudTasksServicer_to_server(server.Greeter(self._state), self._httpd)
    self._httpd.add_insecure_port(f"127.0.0.1:{self._port}")
    self._httpd.start()
    while self._is_running.is_set():
        time.sleep(server._LOOP_SLEEP_TIME)


def main() -> None:
    """Run until killed, quiet (as ``gcloud-tasks-emulator start -q``)."""
    port, target_port, max_retries = (int(a) for a in sys.argv[1:4])
    logging.getLogger().setLevel(logging.ERROR)
    server.APIThread.run = _run_api  # type: ignore[method-assign]
    emulator = server.create_server("127.0.0.1", port, "127.0.0.1", target_port, [QUEUE], max_retries)
    emulator.run()


if __name__ == "__main__":
    main()
