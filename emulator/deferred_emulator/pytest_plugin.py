"""pytest fixtures for apps that defer work (registered through the pytest11 entry point).

pytest imports this module in every run where the package is installed, so it imports nothing but
pytest at module level: the server (aiohttp, aiosqlite) loads only when a test asks for a fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .testing import DeferredEmulator


@pytest.fixture
def deferred_emulator_settings() -> dict[str, Any]:
    """``Settings`` fields for ``deferred_emulator``; override this fixture to change them.

    For example ``{"queue_yaml": "queue.yaml", "secret": "s3"}``, or ``{"dispatch": True}`` to have
    tasks delivered as they fall due instead of only by ``drain()``.
    """
    return {}


@pytest.fixture
def deferred_emulator(
    deferred_emulator_settings: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DeferredEmulator]:
    """An emulator on a free port of 127.0.0.1 with a temporary database, for this test only.

    It runs in a thread with its own event loop, with a virtual clock and manual dispatch: tasks run
    when the test calls ``drain()``. ``deferred_client`` talks to it without any environment set up;
    set ``app_url`` to your app server (or call ``serve_wsgi(app)``) so tasks reach your handlers.
    Google's Cloud Tasks client reaches it too: ``deferred_emulator.cloud_tasks_client()`` (gRPC), or a
    channel of your own to ``deferred_emulator.grpc_target``.
    """
    from .testing import start

    with start(tmp_path_factory.mktemp("deferred-emulator"), deferred_emulator_settings) as emulator:
        yield emulator
