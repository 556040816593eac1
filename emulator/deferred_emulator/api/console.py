"""The web console at ``/``: a few static files that fetch the JSON endpoints (no build step)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
FILES = {
    "/": ("index.html", "text/html"),
    "/console/lib.js": ("lib.js", "text/javascript"),
    "/console/chart.js": ("chart.js", "text/javascript"),
    "/console/app.js": ("app.js", "text/javascript"),
    "/console/style.css": ("style.css", "text/css"),
    "/console/icon.svg": ("icon.svg", "image/svg+xml"),
}
#: The page loads nothing from elsewhere and is never framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


async def serve_file(request: web.Request) -> web.Response:
    """One of the console's files."""
    name, content_type = FILES[request.path]
    body = (CONSOLE_DIR / name).read_bytes()
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=SECURITY_HEADERS)


def routes() -> list[web.RouteDef]:
    """The console's routes."""
    return [web.get(path, serve_file) for path in FILES]
