"""The floor of a per-task round trip: sequential keep-alive POSTs with the standard library's ``http.client``."""

from __future__ import annotations

import http.client
import time

from ours import PAYLOAD_BYTES


def floor_rate(host: str, port: int, n: int) -> float:
    """POSTs/s of ~200-byte bodies, one at a time on one kept-alive connection, to a trivial aiohttp handler."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    body = b"b" * PAYLOAD_BYTES
    headers = {"Content-Type": "application/octet-stream"}
    try:
        for _ in range(50):  # warm up
            conn.request("POST", "/_bench/floor", body, headers)
            conn.getresponse().read()
        t0 = time.perf_counter()
        for _ in range(n):
            conn.request("POST", "/_bench/floor", body, headers)
            conn.getresponse().read()
        return n / (time.perf_counter() - t0)
    finally:
        conn.close()
