"""The app factory: one aiohttp application serving every API, with the dispatcher in its lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from .api import admin, attempts, cloudtasks, console, gae, inspection, oidc, openapi, routing
from .api.common import Runtime, runtime_key
from .clock import Clock, VirtualClock
from .dberrors import StoreUnavailable
from .dispatcher import Dispatcher
from .guard import BodyLimits, guard_middleware, install
from .middleware import error_middleware
from .queuesync import QueueYamlWatcher
from .service import Emulator
from .settings import Settings
from .store import Store, StoreError

logger = logging.getLogger(__name__)

settings_key = web.AppKey("settings", Settings)
#: How often expired tombstones are deleted (the check itself compares expiry times, so this only reclaims space).
PRUNE_EVERY_S = 3600.0


async def runtime_context(app: web.Application) -> AsyncIterator[None]:
    """Open the store, start the dispatcher; on shutdown stop both, in reverse order."""
    settings = app[settings_key]
    runtime = app[runtime_key]
    store = await Store.open(settings.db_path)
    clock = VirtualClock() if settings.virtual_clock else Clock()
    emulator = Emulator(settings, store, clock)
    try:
        await emulator.start()
    except BaseException as exc:
        # Closed here, or aiosqlite's thread would keep the process alive after the failed start.
        await store.close()
        if isinstance(exc, StoreUnavailable):
            raise StoreError(exc.message) from exc
        raise
    # queue.yaml is applied before the dispatcher starts, so a queue it pauses never delivers.
    watcher = (
        QueueYamlWatcher(emulator, settings.queue_yaml, settings.queue_yaml_poll_s) if settings.queue_yaml else None
    )
    if watcher is not None:
        try:
            await watcher.load()
        except BaseException:
            await store.close()
            raise
        watcher.start()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=settings.max_in_flight, limit_per_host=0),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
        # An answer's head is capped, as on the plain-HTTP path (plainhttp.HEAD_BYTES): at most 64 header
        # lines of 8 KiB here, past which the attempt fails instead of reading on.
        max_line_size=8190,
        max_field_size=8190,
        max_headers=64,
    )
    dispatcher = Dispatcher(emulator, session)
    runtime.emulator, runtime.dispatcher = emulator, dispatcher
    loop_task = asyncio.create_task(dispatcher.run(), name="dispatcher") if settings.dispatch else None
    pruning = asyncio.create_task(prune_tombstones(emulator), name="prune tombstones")
    try:
        yield
    finally:
        # Run last to first, each even when one before it failed: the database and the connections
        # are closed on every way out, not left to the collector.
        async with contextlib.AsyncExitStack() as closing:
            closing.push_async_callback(store.close)
            closing.push_async_callback(session.close)
            closing.push_async_callback(dispatcher.close)
            if loop_task is not None:
                closing.push_async_callback(stop_task, loop_task)
            if watcher is not None:
                closing.push_async_callback(watcher.close)
            closing.push_async_callback(stop_task, pruning)


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it to end."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def prune_tombstones(emulator: Emulator, every_s: float = PRUNE_EVERY_S) -> None:
    """Forget expired task names now and then: every delivered task leaves one, kept for a week by default."""
    while True:
        try:
            count = await emulator.store.prune_tombstones(emulator.now_us())
            if count:
                logger.info("forgot %d expired task name(s)", count)
        except Exception:
            logger.exception("could not prune expired task names")
        await asyncio.sleep(every_s)


def note_bound(app: web.Application, port: int) -> None:
    """Tell a started app the port it listens on (the default OIDC issuer names it)."""
    app[runtime_key].emulator.issuer.bound(app[settings_key].host, port)


def create_app(settings: Settings | None = None) -> web.Application:
    """Build the emulator's aiohttp application.

    :param settings: how to run; defaults to ``Settings()``.
    """
    settings = settings or Settings()
    # client_max_size caps bodies sent without a Content-Length; the guard refuses the others unread.
    limits = BodyLimits.for_settings(settings)
    app = web.Application(middlewares=[error_middleware, guard_middleware], client_max_size=limits.raw_bytes)
    app[settings_key] = settings
    install(app, settings)
    app[runtime_key] = Runtime()
    app[cloudtasks.iam_policies_key] = {}
    app.cleanup_ctx.append(runtime_context)
    app.on_shutdown.append(attempts.release_followers)
    app.add_routes(
        cloudtasks.routes()
        + admin.routes()
        + inspection.routes()
        + attempts.routes()
        + gae.routes()
        + routing.routes()
        + openapi.routes()
        + console.routes()
        + oidc.routes()
    )
    return app
