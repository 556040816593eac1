"""aiohttp: defer work from a handler; the deferred handler runs it at /_ah/queue/deferred.

deferred-emulator serve --app-url http://127.0.0.1:8080 &
DEFERRED_EMULATOR_HOST=127.0.0.1:8123 python examples/aiohttp_example.py
curl -X POST http://127.0.0.1:8080/signup/ann && sleep 1 && curl http://127.0.0.1:8080/sent
"""

from __future__ import annotations

import logging
import os

import deferred_client
from aiohttp import web

logger = logging.getLogger(__name__)
#: Welcome emails "sent" by the deferred task (a real app would call its mail service).
SENT: list[str] = []


def send_welcome(name: str) -> None:
    """The deferred task: runs in a worker thread, so blocking calls do not stall the event loop."""
    logger.info("sending a welcome email to %s", name)
    SENT.append(name)


async def signup(request: web.Request) -> web.Response:
    task = await deferred_client.defer_async(send_welcome, request.match_info["name"])
    return web.json_response({"task": task.name}, status=202)


async def sent(request: web.Request) -> web.Response:
    return web.json_response(SENT)


def create_app() -> web.Application:
    """The example app."""
    app = web.Application()
    app.router.add_post("/_ah/queue/deferred", deferred_client.aiohttp_handler)
    app.router.add_post("/signup/{name}", signup)
    app.router.add_get("/sent", sent)
    return app


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    web.run_app(create_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
