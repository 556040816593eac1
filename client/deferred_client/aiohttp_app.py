"""The aiohttp handler for ``/_ah/queue/deferred`` (aiohttp is imported only when a request comes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .execution import AUTHORIZATION, TaskRequest, execute_async, refusal_async

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["aiohttp_handler", "add_aiohttp_route"]


def _peer(request: web.Request) -> str | None:
    """The address of the socket's other end (never a forwarded-for header)."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peer, (tuple, list)) and peer:
        return str(peer[0])
    return None


async def aiohttp_handler(request: web.Request) -> web.Response:
    """Run a deferred task delivered to an aiohttp app (the call runs in a worker thread)."""
    from aiohttp import web

    body = await request.read()
    headers = {k.lower(): v for k, v in request.headers.items() if k[:2] in ("x-", "X-") or k.lower() == AUTHORIZATION}
    task = TaskRequest(request.method, headers, body, _peer(request))
    reply = await refusal_async(task) or await execute_async(task)
    extra = {"Allow": "POST"} if reply.status == 405 else None
    return web.Response(status=reply.status, text=reply.text, content_type="text/plain", headers=extra)


def add_aiohttp_route(app: web.Application, url: str = "/_ah/queue/deferred") -> None:
    """Mount ``aiohttp_handler`` on ``app`` at ``url``."""
    app.router.add_route("*", url, aiohttp_handler)
