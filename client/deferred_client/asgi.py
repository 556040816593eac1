"""The ASGI handler for ``/_ah/queue/deferred`` (Starlette, FastAPI, or any ASGI server on its own)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .execution import Reply, TaskRequest, execute_async, refusal_async

__all__ = ["ASGIHandler", "asgi_application"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def _body(receive: Receive) -> bytes | None:
    """The whole request body, or ``None`` if the client went away."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def task_request(scope: Scope, body: bytes) -> TaskRequest:
    """The delivery an ASGI HTTP scope describes."""
    headers = {
        k.decode("latin-1").lower(): v.decode("latin-1")
        for k, v in scope.get("headers", ())
        if k[:2] in (b"x-", b"X-") or k.lower() == b"authorization"
    }
    client = scope.get("client")
    return TaskRequest(scope.get("method", "GET"), headers, body, client[0] if client else None)


class ASGIHandler:
    """An ASGI app that runs deferred tasks (any path); ``secret`` defaults to the configured one."""

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret

    def __repr__(self) -> str:
        return f"<ASGIHandler signed={bool(self.secret)}>"

    async def respond(self, scope: Scope, body: bytes) -> Reply:
        """Check and run one delivery (the call runs in a worker thread; coroutines run on the loop)."""
        request = task_request(scope, body)
        return await refusal_async(request, self.secret) or await execute_async(request)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        if scope["type"] != "http":
            raise RuntimeError(f"The deferred handler serves HTTP, not {scope['type']!r}.")
        body = await _body(receive)
        if body is None:
            return None
        reply = await self.respond(scope, body)
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(reply.body)).encode())]
        if reply.status == 405:
            headers.append((b"allow", b"POST"))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
        return None


#: The ASGI counterpart of ``application``.
asgi_application = ASGIHandler()
