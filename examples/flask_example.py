"""Flask: defer work from a view; the deferred handler runs it at /_ah/queue/deferred.

deferred-emulator serve --app-url http://127.0.0.1:8080 &
DEFERRED_EMULATOR_HOST=127.0.0.1:8123 python examples/flask_example.py
curl -X POST http://127.0.0.1:8080/signup/ann && sleep 1 && curl http://127.0.0.1:8080/sent
"""

from __future__ import annotations

import logging
import os

import deferred_client
from flask import Flask, Response, jsonify

logger = logging.getLogger(__name__)
#: Welcome emails "sent" by the deferred task (a real app would call its mail service).
SENT: list[str] = []


def send_welcome(name: str) -> None:
    """The deferred task: runs later, in the app, when the emulator delivers it."""
    logger.info("sending a welcome email to %s", name)
    SENT.append(name)


app = Flask(__name__)
# Route /_ah/queue/deferred to the handler, everything else to Flask (App Engine's `use_deferred=True`).
app.wsgi_app = deferred_client.wrap_wsgi_app(app.wsgi_app)


@app.post("/signup/<name>")
def signup(name: str) -> tuple[dict[str, str], int]:
    task = deferred_client.defer(send_welcome, name)
    return {"task": task.name}, 202


@app.get("/sent")
def sent() -> Response:
    return jsonify(SENT)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    app.run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8080")))
