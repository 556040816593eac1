"""Delivery while the API is busy: a load generator adding tasks from many connections, and the measurement.

As a program (``python bench/ingest.py URL CLIENTS SECONDS``) it adds tasks due in an hour, one
``create`` call per task, from CLIENTS concurrent kept-alive connections for SECONDS, and prints
``{"added": N, "per_s": R}``. It runs as its own process, so its CPU is not the driver's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

API = "/v2/projects/local-project/locations/us-central1/queues/default"


async def _load(url: str, clients: int, seconds: float) -> dict[str, float]:
    import aiohttp

    eta = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    task = {"appEngineHttpRequest": {"relativeUri": "/ingest", "body": base64.b64encode(b"b" * 200).decode()}}
    body = json.dumps({"task": {**task, "scheduleTime": eta}}).encode()
    headers = {"Content-Type": "application/json"}
    added = 0
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        t0 = time.perf_counter()
        end = t0 + seconds

        async def client() -> None:
            nonlocal added
            while time.perf_counter() < end:
                async with session.post(url + API + "/tasks", data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status == 200:
                        added += 1

        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return {"added": added, "per_s": added / elapsed}


def start(url: str, clients: int, seconds: float, log: Path) -> subprocess.Popen[bytes]:
    """The load generator as a process (its JSON answer on stdout)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), url, str(clients), str(seconds)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(log, "ab"))


def finish(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """Wait for the load generator; its JSON answer."""
    out, _ = proc.communicate(timeout=180)
    if proc.returncode != 0:
        raise RuntimeError(f"the load generator failed ({proc.returncode})")
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_load(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))))
