"""An unmodified appengine-python-standard app: Flask, deferred.defer and taskqueue.add, run locally.

deferred-emulator serve --app-url http://127.0.0.1:8080 &
eval "$(deferred-emulator gae-env)"
python examples/gae_app.py
curl -X POST 'http://127.0.0.1:8080/defer?text=hello' && sleep 1 && curl http://127.0.0.1:8080/done
"""

from __future__ import annotations

import logging
import os
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIServer, make_server

from flask import Flask, Response, jsonify, request
from google.appengine.api import taskqueue, wrap_wsgi_app
from google.appengine.ext import db, deferred

#: What the deferred functions and the task handler did, in order (a real app would write to its database).
DONE: list[Any] = []


def remember(text: str) -> None:
    """A small deferred function."""
    DONE.append(["remember", text])


def measure(label: str, blob: bytes) -> None:
    """A deferred function with a large argument (over 100 KiB: it travels through the datastore)."""
    DONE.append(["measure", label, len(blob)])


def give_up(label: str) -> None:
    """A deferred function that fails for good: the task must not be retried."""
    DONE.append(["give_up", label])
    raise deferred.PermanentTaskFailure(f"{label}: nothing to retry")


def create_app() -> Flask:
    """The Flask app, wrapped the way App Engine's Python 3 runtime expects."""
    app = Flask(__name__)

    @app.post("/defer")
    def defer_small() -> Response:
        task = deferred.defer(remember, request.args["text"], _queue=request.args.get("queue", "default"))
        return jsonify(task=task.name, queue=task.queue_name)

    @app.post("/defer-large")
    def defer_large() -> Response:
        size = int(request.args.get("kib", "300")) * 1024
        task = deferred.defer(measure, request.args.get("label", "large"), os.urandom(size))
        return jsonify(task=task.name)

    @app.post("/defer-failing")
    def defer_failing() -> Response:
        task = deferred.defer(give_up, request.args.get("label", "doomed"))
        return jsonify(task=task.name)

    @app.post("/defer-in-transaction")
    def defer_in_transaction() -> tuple[Response, int]:
        def work() -> str:
            task = deferred.defer(remember, request.args["text"], _transactional=True)
            if request.args.get("fail"):
                raise ValueError("changed my mind")  # the transaction rolls back: no task
            return str(task.name)

        try:
            return jsonify(task=db.run_in_transaction(work)), 200
        except ValueError as exc:
            return jsonify(error=str(exc)), 409

    @app.post("/add")
    def add() -> tuple[Response, int]:
        try:
            task = taskqueue.add(
                url="/work",
                params={"what": request.args.get("what", "work")},
                name=request.args.get("name") or None,
                queue_name=request.args.get("queue", "default"),
            )
        except taskqueue.Error as exc:
            return jsonify(error=type(exc).__name__, message=str(exc)), 409
        return jsonify(task=task.name, queue=task.queue_name), 200

    @app.post("/work")
    def work() -> str:
        headers = {k: v for k, v in request.headers.items() if k.lower().startswith("x-appengine")}
        DONE.append(["work", request.form["what"], headers])
        return "done"

    @app.get("/done")
    def done() -> Response:
        return jsonify(DONE)

    app.wsgi_app = wrap_wsgi_app(app.wsgi_app, use_deferred=True)
    return app


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per request (tasks arrive while other requests run)."""

    daemon_threads = True


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    port = int(os.environ.get("PORT", "8080"))
    make_server("127.0.0.1", port, create_app(), server_class=ThreadingWSGIServer).serve_forever()
