"""A small aiohttp app that defers its work; ``test_newsletter.py`` tests it with async tests.

deferred-emulator serve --app-url http://127.0.0.1:8080 &
DEFERRED_EMULATOR_HOST=127.0.0.1:8123 python newsletter.py
"""

from __future__ import annotations

import deferred_client
from aiohttp import web

#: Addresses the deferred task welcomed (a real app would call its mail service).
WELCOMED: list[str] = []


def send_welcome(address: str) -> None:
    """The deferred task: it runs in a worker thread of the app when the emulator delivers it."""
    WELCOMED.append(address)


async def subscribe(request: web.Request) -> web.Response:
    """Subscribe an address and welcome it later."""
    address = request.match_info["address"]
    await deferred_client.defer_async(send_welcome, address, _countdown=60)
    return web.json_response({"subscribed": address}, status=202)


def create_app() -> web.Application:
    """The app, with the deferred handler at /_ah/queue/deferred."""
    app = web.Application()
    app.router.add_post("/_ah/queue/deferred", deferred_client.aiohttp_handler)
    app.router.add_post("/subscribe/{address}", subscribe)
    return app


if __name__ == "__main__":
    web.run_app(create_app(), host="127.0.0.1", port=8080)
