"""The physical reference: an aiohttp client POSTing to the trivial app as fast as it can."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from ours import PAYLOAD_BYTES


async def _run(url: str, n: int, concurrency: int) -> float:
    body = b"b" * PAYLOAD_BYTES
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        left = n

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.post(url, data=body) as resp:
                    await resp.read()

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - t0)


def raw_rate(handler_url: str, n: int, concurrency: int) -> float:
    """Requests per second over loopback to the trivial app, ``concurrency`` at a time."""
    return asyncio.run(_run(handler_url + "/raw", n, concurrency))
