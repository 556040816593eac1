"""FastAPI: defer work from an endpoint; the deferred handler runs it at /_ah/queue/deferred.

deferred-emulator serve --app-url http://127.0.0.1:8080 &
DEFERRED_EMULATOR_HOST=127.0.0.1:8123 python examples/fastapi_example.py
curl -X POST http://127.0.0.1:8080/signup/ann && sleep 1 && curl http://127.0.0.1:8080/sent
"""

from __future__ import annotations

import logging
import os

import deferred_client
from fastapi import FastAPI
from starlette.routing import Route

logger = logging.getLogger(__name__)
#: Welcome emails "sent" by the deferred task (a real app would call its mail service).
SENT: list[str] = []


def send_welcome(name: str) -> None:
    """The deferred task: runs in a worker thread, so blocking calls do not stall the event loop."""
    logger.info("sending a welcome email to %s", name)
    SENT.append(name)


app = FastAPI()
# The handler is an ASGI app: add it as a plain route (a Mount would redirect /_ah/queue/deferred to .../).
app.router.routes.append(Route("/_ah/queue/deferred", deferred_client.asgi_application, methods=["POST"]))


@app.post("/signup/{name}", status_code=202)
async def signup(name: str) -> dict[str, str]:
    task = await deferred_client.defer_async(send_welcome, name)
    return {"task": task.name}


@app.get("/sent")
async def sent() -> list[str]:
    return SENT


if __name__ == "__main__":
    import uvicorn

    logging.basicConfig(level=logging.INFO)
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
