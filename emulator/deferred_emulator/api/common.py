"""Helpers every API module shares: the app keys and reading JSON bodies."""

from __future__ import annotations

import json
from typing import Any

import orjson
from aiohttp import web

from ..dispatcher import Dispatcher
from ..errors import InvalidArgument, Unsupported
from ..guard import media_type, read_body
from ..service import Emulator

#: orjson's own depth limit, which the standard parser (the fallback below) does not have.
MAX_JSON_DEPTH = 1024
TOO_DEEP = f"Invalid JSON payload received. Nested deeper than {MAX_JSON_DEPTH} levels."


class Runtime:
    """What the app's cleanup context opens: filled in at startup, emptied at shutdown."""

    emulator: Emulator
    dispatcher: Dispatcher


runtime_key = web.AppKey("runtime", Runtime)


def emulator_of(request: web.Request) -> Emulator:
    """The engine behind this app."""
    return request.app[runtime_key].emulator


def dispatcher_of(request: web.Request) -> Dispatcher:
    """The dispatcher of this app."""
    return request.app[runtime_key].dispatcher


async def read_json(request: web.Request, *, required: bool = False) -> dict[str, Any]:
    """The request body as a JSON object ({} when empty and not required)."""
    raw = await read_body(request) if request.can_read_body else b""
    return json_object(raw, media_type(request), required=required)


def json_object(raw: bytes, kind: str, *, required: bool = False) -> dict[str, Any]:
    """A body of media type ``kind`` as a JSON object ({} when empty and not required)."""
    if not raw.strip():
        if required:
            raise InvalidArgument("A JSON body is required.")
        return {}
    if kind != "application/json" and not kind.endswith("+json"):
        # A cross-site page can send text/plain without asking first; it must not reach a JSON endpoint.
        raise Unsupported(f"Expected a JSON body (Content-Type: application/json), got {kind or 'none'!r}.")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit"):
            # The standard parser would recurse until Python's own limit and fail with a 500.
            raise InvalidArgument(TOO_DEEP) from exc
        # orjson refuses some valid JSON (integers past 64 bits): the standard parser decides, and words the error.
        try:
            data = json.loads(raw, parse_constant=_no_constants)
        except RecursionError as exc:
            raise InvalidArgument(TOO_DEEP) from exc
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"Invalid JSON payload received. {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidArgument("Invalid JSON payload received. Expected an object.")
    return data


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def json_bytes(data: Any) -> bytes:
    """``data`` as compact JSON."""
    try:
        return orjson.dumps(data)
    except TypeError:  # integers past 64 bits
        return json.dumps(data).encode()


def json_response(data: Any, status: int = 200) -> web.Response:
    """A compact JSON response."""
    return web.Response(body=json_bytes(data), status=status, content_type="application/json", charset="utf-8")


def page_size(request: web.Request, default: int = 1000, maximum: int = 1000) -> int:
    """The ``pageSize`` query parameter, within bounds."""
    return page_size_of(request.query.get("pageSize") or "", default, maximum)


def page_size_of(raw: str | int, default: int = 1000, maximum: int = 1000) -> int:
    """A page size as asked for (text or number; empty or 0: the default), within bounds."""
    if not raw:
        return default
    try:
        size = int(raw)
    except ValueError as exc:
        raise InvalidArgument(f"Invalid value for pageSize: {raw!r}.") from exc
    if size < 0:
        raise InvalidArgument("pageSize cannot be negative.")
    return min(size or default, maximum)
