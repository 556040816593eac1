"""The trivial app every emulator delivers to: answers 200 at once and records when each request came.

Run as its own process (``python bench/handler.py PORT``) so its CPU is not charged to the emulator
or to the benchmark driver. Paths under ``/fail`` answer 500, for the retry measurement.
``POST /_bench/floor`` answers without recording (the round-trip floor).
``GET /_bench/arrivals?since=N`` returns the records from index N on; ``POST /_bench/reset`` clears them.
"""

from __future__ import annotations

import json
import sys
import time

from aiohttp import web

#: (arrival time, ETA header as a float or 0, path) of every delivery, in order.
arrivals: list[tuple[float, float, str]] = []


async def deliver(request: web.Request) -> web.Response:
    """Record the arrival and answer at once."""
    now = time.time()
    await request.read()
    eta = request.headers.get("X-AppEngine-TaskETA") or request.headers.get("X-CloudTasks-TaskETA") or "0"
    arrivals.append((now, float(eta), request.path))
    if request.path.startswith("/fail"):
        return web.Response(status=500, text="failing on purpose")
    return web.Response(text="ok")


async def floor(request: web.Request) -> web.Response:
    """Read the body and answer at once, recording nothing: the other end of the round-trip floor."""
    await request.read()
    return web.Response(text="ok")


async def get_arrivals(request: web.Request) -> web.Response:
    """The records from ``since`` on."""
    since = int(request.query.get("since", "0"))
    return web.Response(text=json.dumps({"count": len(arrivals), "arrivals": arrivals[since:]}))


async def count(request: web.Request) -> web.Response:
    """How many deliveries came, and when the last one did."""
    last = arrivals[-1][0] if arrivals else 0.0
    return web.Response(text=json.dumps({"count": len(arrivals), "last": last}))


async def reset(request: web.Request) -> web.Response:
    """Forget every record."""
    arrivals.clear()
    return web.Response(text="{}")


def main() -> None:
    """Serve on 127.0.0.1:PORT until killed."""
    app = web.Application()
    app.router.add_get("/_bench/arrivals", get_arrivals)
    app.router.add_get("/_bench/count", count)
    app.router.add_post("/_bench/reset", reset)
    app.router.add_post("/_bench/floor", floor)
    app.router.add_route("*", "/{tail:.*}", deliver)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
