"""A Cloud Run service that defers work with deferred_client: Cloud Tasks in production, the emulator locally.

Production (README, "Running in production"): the service runs with DEFERRED_BACKEND=cloudtasks and the
variables listed there; Cloud Tasks POSTs each task to /_ah/queue/deferred with an OIDC token, which the
handler verifies before it unpickles anything.

Locally, the same code against the emulator:
    deferred-emulator serve --app-url http://127.0.0.1:8080 &
    DEFERRED_EMULATOR_HOST=127.0.0.1:8123 python examples/cloudrun/signup_service.py
    curl -X POST http://127.0.0.1:8080/signup/ann
"""

from __future__ import annotations

import hashlib
import logging
import os

import deferred_client
from flask import Flask, Response, jsonify, request

logger = logging.getLogger(__name__)
#: What the deferred tasks did (a real service would send mail or write to its database).
DONE: list[str] = []


def send_welcome(name: str) -> None:
    """A deferred task: runs later, in this service, when Cloud Tasks delivers it."""
    logger.info("sending a welcome email to %s", name)
    DONE.append(f"welcome {name}")


def import_rows(upload: bytes) -> None:
    """A deferred task with a large argument: over 100 KiB, it travels through the payload bucket."""
    DONE.append(f"imported {len(upload)} bytes {hashlib.sha256(upload).hexdigest()[:12]}")


app = Flask(__name__)
# /_ah/queue/deferred goes to the deferred handler (which checks each delivery), the rest to Flask.
app.wsgi_app = deferred_client.wrap_wsgi_app(app.wsgi_app)


@app.post("/signup/<name>")
def signup(name: str) -> tuple[dict[str, str], int]:
    task = deferred_client.defer(send_welcome, name)
    return {"task": task.name}, 202


@app.post("/import")
def upload() -> tuple[dict[str, str | None], int]:
    task = deferred_client.defer(import_rows, request.get_data())
    return {"task": task.name, "payload": task.entity_key}, 202


@app.get("/done")
def done() -> Response:
    return jsonify(DONE)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    app.run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8080")))
