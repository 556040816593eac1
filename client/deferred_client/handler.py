"""The WSGI handler for ``/_ah/queue/deferred``, and ``wrap_wsgi_app`` to mount it in front of an app."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING

from .execution import Reply, TaskRequest, execute, refusal
from .task import DEFAULT_URL

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["WSGIHandler", "application", "status_line", "wrap_wsgi_app"]

TEXT = [("Content-Type", "text/plain; charset=utf-8")]


def status_line(status: int) -> str:
    """``"200 OK"`` for 200."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


def _body(environ: WSGIEnvironment) -> bytes:
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > 0:
        return bytes(stream.read(length))
    return bytes(stream.read()) if environ.get("wsgi.input_terminated") else b""


def task_request(environ: WSGIEnvironment) -> TaskRequest:
    """The delivery a WSGI environ describes."""
    headers = {
        k[5:].replace("_", "-").lower(): v
        for k, v in environ.items()
        if k.startswith("HTTP_X_") or k == "HTTP_AUTHORIZATION"
    }
    return TaskRequest(environ.get("REQUEST_METHOD", "GET"), headers, _body(environ), environ.get("REMOTE_ADDR"))


class WSGIHandler:
    """A WSGI app that runs deferred tasks (any path); ``secret`` defaults to the configured one."""

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret

    def __repr__(self) -> str:
        return f"<WSGIHandler signed={bool(self.secret)}>"

    def respond(self, environ: WSGIEnvironment) -> Reply:
        """Check and run the delivery ``environ`` describes."""
        request = task_request(environ)
        return refusal(request, self.secret) or execute(request)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        reply = self.respond(environ)
        body = reply.body
        headers = [*TEXT, ("Content-Length", str(len(body)))]
        if reply.status == 405:
            headers.append(("Allow", "POST"))
        start_response(status_line(reply.status), headers)
        return [body]


#: The handler App Engine apps know as ``deferred.application``.
application = WSGIHandler()


def wrap_wsgi_app(
    app: WSGIApplication, url: str = DEFAULT_URL, handler: Callable[..., Iterable[bytes]] | None = None
) -> WSGIApplication:
    """Send requests for ``url`` to the deferred handler, the rest to ``app`` (App Engine's ``use_deferred``)."""
    deferred = handler or application

    def wrapped(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == url:
            return deferred(environ, start_response)
        return app(environ, start_response)

    return wrapped
