"""Where tasks are delivered, changeable while the emulator runs: ``GET``/``PATCH /_emulator/v1/routing``.

Tests start their app server on a free port after the emulator is up (a live server, an aiohttp test
server, a WSGI app in a thread), so the app URL has to be settable at runtime.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from ..errors import InvalidArgument
from ..settings import Settings
from .common import emulator_of, json_response, read_json

PATH = "/_emulator/v1/routing"


def check_base_url(value: object, field: str) -> str:
    """An ``http(s)://host[:port][/path]`` base URL, or InvalidArgument."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{field} must be a URL such as http://127.0.0.1:8080.")
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or parts.query or parts.fragment:
        raise InvalidArgument(f"{field} must be a URL such as http://127.0.0.1:8080, not {value!r}.")
    return value.rstrip("/")


def routing_json(settings: Settings) -> dict[str, Any]:
    """The app URL and the per-service targets."""
    return {"appUrl": settings.app_url, "targets": dict(settings.targets)}


async def get_routing(request: web.Request) -> web.Response:
    """Where App Engine tasks go now."""
    return json_response(routing_json(emulator_of(request).settings))


async def patch_routing(request: web.Request) -> web.Response:
    """Change ``appUrl`` and/or ``targets`` (a map of service to base URL, replacing the old one)."""
    data = await read_json(request, required=True)
    unknown = set(data) - {"appUrl", "targets"}
    if unknown:
        raise InvalidArgument(f"Unknown field(s) {', '.join(sorted(unknown))}: only appUrl and targets can change.")
    app_url = check_base_url(data["appUrl"], "appUrl") if "appUrl" in data else None
    targets: dict[str, str] | None = None
    if "targets" in data:
        raw = data["targets"]
        if not isinstance(raw, dict) or not all(isinstance(k, str) and k for k in raw):
            raise InvalidArgument('targets must be an object such as {"worker": "http://127.0.0.1:8081"}.')
        targets = {service: check_base_url(url, f"targets.{service}") for service, url in raw.items()}
    settings = emulator_of(request).reroute(app_url, targets)
    return json_response(routing_json(settings))


def routes() -> list[web.RouteDef]:
    """The routing routes."""
    return [web.get(PATH, get_routing), web.patch(PATH, patch_routing)]
