"""Non-blocking HTTP to the emulator for asyncio code: aiohttp when installed, else the blocking one in a thread."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from .config import Config
from .transport import JSON, Response, SyncTransport, unavailable

if TYPE_CHECKING:
    import aiohttp

__all__ = ["AsyncTransport", "aclose"]

#: One aiohttp session per event loop; each is closed when its loop shuts down (see ``_keep``).
_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[aiohttp.ClientSession, object]] = (
    weakref.WeakKeyDictionary()
)


async def _keep(session: aiohttp.ClientSession, loop: asyncio.AbstractEventLoop) -> AsyncIterator[None]:
    """An async generator the loop tracks: ``shutdown_asyncgens`` (``asyncio.run`` and friends) closes the session."""
    try:
        yield
    finally:
        _sessions.pop(loop, None)
        await session.close()


async def _session() -> aiohttp.ClientSession:
    import aiohttp

    loop = asyncio.get_running_loop()
    entry = _sessions.get(loop)
    if entry is not None and not entry[0].closed:
        return entry[0]
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent",),
    )
    keeper = _keep(session, loop)
    await keeper.__anext__()
    _sessions[loop] = (session, keeper)
    return session


async def aclose() -> None:
    """Close the running loop's connections to the emulator (they are also closed when the loop shuts down)."""
    entry = _sessions.get(asyncio.get_running_loop())
    if entry is not None:
        keeper = entry[1]
        assert hasattr(keeper, "aclose")
        await keeper.aclose()


#: See transport.EMULATOR_MARK.
MARK = {"X-Deferred-Client": "1"}


class AsyncTransport:
    """Requests to one emulator from asyncio code."""

    def __init__(self, config: Config) -> None:
        self.base_url = config.api_url
        scheme, host, port, prefix = config.endpoint()
        self.origin = f"{scheme}://{host}:{port}{prefix}" if ":" not in host else f"{scheme}://[{host}]:{port}{prefix}"
        self.timeout_s = config.timeout_s
        self._mark: dict[str, str] = {} if config.production else MARK
        self._sync: SyncTransport | None = None
        try:
            import aiohttp
        except ImportError:  # pragma: no cover - aiohttp is optional for apps
            self._sync = SyncTransport(config)
        else:
            self._timeout = aiohttp.ClientTimeout(total=config.timeout_s)

    def __repr__(self) -> str:
        return f"<AsyncTransport {self.base_url}>"

    async def request(self, method: str, path: str, body: bytes | None = None, content_type: str = JSON) -> Response:
        """Send one request (``path`` below the emulator's base URL) and read the whole answer."""
        if self._sync is not None:
            return await asyncio.to_thread(self._sync.request, method, path, body, content_type)
        import aiohttp

        session = await _session()
        headers = {"Content-Type": content_type, **self._mark} if body is not None else self._mark
        try:
            async with session.request(
                method, self.origin + path, data=body, headers=headers, timeout=self._timeout
            ) as resp:
                return Response(resp.status, await resp.read())
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise unavailable(self.base_url, exc) from exc
