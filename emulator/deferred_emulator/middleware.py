"""Turn every error into Google-style JSON; nothing a client sends crashes the server."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from .errors import INTERNAL_MESSAGE, EmulatorError

logger = logging.getLogger(__name__)

HTTP_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "ALREADY_EXISTS",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
}


def error_body(status: int, message: str, rpc_status: str | None = None) -> dict[str, Any]:
    """The ``{"error": {...}}`` body Google's APIs answer with."""
    return {
        "error": {"code": status, "message": message, "status": rpc_status or HTTP_STATUS_NAMES.get(status, "UNKNOWN")}
    }


def error_json(status: int, message: str, rpc_status: str | None = None) -> web.Response:
    """A ``{"error": {...}}`` response."""
    return web.json_response(error_body(status, message, rpc_status), status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as Google's APIs write them."""
    try:
        return await handler(request)
    except EmulatorError as exc:
        if exc.status >= 500:
            logger.error("%s %s: %s", request.method, request.path, exc.message)
        return web.json_response(exc.to_json(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        if exc.status == 404:
            message = f"The requested URL {request.path} was not found on this server."
        elif exc.status == 413:
            message = f"Request body too large: {exc.text}"
        return error_json(exc.status, message or exc.reason)
    except Exception:
        logger.exception("unexpected error serving %s %s", request.method, request.path)
        return error_json(500, INTERNAL_MESSAGE, "INTERNAL")
