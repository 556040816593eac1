"""Starlette: defer work from an endpoint; the deferred handler runs it at /_ah/queue/deferred.

deferred-emulator serve --app-url http://127.0.0.1:8080 &
DEFERRED_EMULATOR_HOST=127.0.0.1:8123 python examples/starlette_example.py
curl -X POST http://127.0.0.1:8080/signup/ann && sleep 1 && curl http://127.0.0.1:8080/sent
"""

from __future__ import annotations

import logging
import os

import deferred_client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

logger = logging.getLogger(__name__)
#: Welcome emails "sent" by the deferred task (a real app would call its mail service).
SENT: list[str] = []


async def send_welcome(name: str) -> None:
    """The deferred task; a coroutine function is awaited on the app's event loop."""
    logger.info("sending a welcome email to %s", name)
    SENT.append(name)


async def signup(request: Request) -> JSONResponse:
    task = await deferred_client.defer_async(send_welcome, request.path_params["name"])
    return JSONResponse({"task": task.name}, status_code=202)


async def sent(request: Request) -> JSONResponse:
    return JSONResponse(SENT)


app = Starlette(
    routes=[
        Route("/_ah/queue/deferred", deferred_client.asgi_application, methods=["POST"]),
        Route("/signup/{name}", signup, methods=["POST"]),
        Route("/sent", sent),
    ]
)


if __name__ == "__main__":
    import uvicorn

    logging.basicConfig(level=logging.INFO)
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
