"""Fixtures for the production backend's tests: the emulator standing in for Cloud Tasks (every request it
gets recorded), a local Storage emulator (gcp-storage-emulator), and a credentials object with a fixed token.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import deferred_client
import pytest
from aiohttp import web
from deferred_emulator.app import create_app, note_bound
from deferred_emulator.settings import Settings
from google.auth import credentials as ga_credentials
from test_client_fixtures import AiohttpThread, LiveEmulator

TOKEN = "ya29.stand-in-token"
BUCKET = "deferred-payloads"
HARNESS = "X-Test-Harness"


class FixedToken(ga_credentials.Credentials):  # type: ignore[misc]
    """google-auth credentials whose refresh yields a fixed bearer token (and counts the refreshes)."""

    def __init__(self) -> None:
        super().__init__()
        self.refreshes = 0

    def refresh(self, request: Any) -> None:
        self.refreshes += 1
        self.token = TOKEN
        self.expiry = None


@dataclass
class Seen:
    """One request that reached the emulator's API."""

    method: str
    path: str
    authorization: str | None


class CloudTasksStandIn(LiveEmulator):
    """The emulator acting as Cloud Tasks: it records every API request except the test harness's own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.seen: list[Seen] = []
        self._seen_lock = threading.Lock()
        app = create_app(settings)

        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            if HARNESS not in request.headers:
                with self._seen_lock:
                    self.seen.append(Seen(request.method, request.path, request.headers.get("Authorization")))
            response: web.StreamResponse = await handler(request)
            return response

        app.middlewares.insert(0, record)
        AiohttpThread.__init__(self, app)
        note_bound(app, self.port)
        self.host = f"127.0.0.1:{self.port}"

    def call(self, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
        """The harness's own calls (marked, so they are not taken for the client's)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            body = None if payload is None else json.dumps(payload).encode()
            headers = {HARNESS: "1", **({"Content-Type": "application/json"} if body else {})}
            conn.request(method, path, body, headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if resp.getheader("Content-Type", "").startswith("application/json"):
            return resp.status, json.loads(data)
        return resp.status, data

    def client_requests(self) -> list[Seen]:
        """What the client sent."""
        with self._seen_lock:
            return list(self.seen)


class StorageEmulator:
    """gcp-storage-emulator on 127.0.0.1 and a free port, in memory, with one bucket."""

    def __init__(self) -> None:
        from gcp_storage_emulator.server import create_server

        self.server = create_server("127.0.0.1", 0, in_memory=True, default_bucket=BUCKET)
        self.server.start()
        self.port = self.server._api._httpd.server_port
        self.url = f"http://127.0.0.1:{self.port}"

    def objects(self) -> list[str]:
        """The names of the objects in the bucket."""
        with urllib.request.urlopen(f"{self.url}/storage/v1/b/{BUCKET}/o", timeout=10) as resp:
            return [item["name"] for item in json.load(resp).get("items", [])]

    def close(self) -> None:
        """Stop the server."""
        self.server.stop()


@pytest.fixture(scope="module")
def storage_server() -> Iterator[StorageEmulator]:
    """One Storage emulator per test module (stopping one takes half a second)."""
    emulator = StorageEmulator()
    try:
        yield emulator
    finally:
        emulator.close()


@pytest.fixture
def storage(storage_server: StorageEmulator, monkeypatch: pytest.MonkeyPatch) -> StorageEmulator:
    """A local Storage emulator with an empty bucket, found by the client through ``STORAGE_EMULATOR_HOST``."""
    storage_server.server.wipe(keep_buckets=True)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", storage_server.url)
    return storage_server


@pytest.fixture
def cloud_tasks(tmp_path: Path, configured: None) -> Iterator[Callable[..., CloudTasksStandIn]]:
    """Start the emulator standing in for Cloud Tasks (dispatch only on ``drain``)."""
    started: list[CloudTasksStandIn] = []

    def start(**overrides: Any) -> CloudTasksStandIn:
        overrides.setdefault("db_path", str(tmp_path / f"cloud{len(started)}.sqlite3"))
        overrides.setdefault("port", 0)
        overrides.setdefault("dispatch", False)
        overrides.setdefault("ignore_rate_limits", True)
        overrides.setdefault("log_level", "warning")
        overrides.setdefault("project", "prod-project")
        overrides.setdefault("location", "europe-west1")
        emulator = CloudTasksStandIn(Settings(**overrides))
        started.append(emulator)
        return emulator

    yield start
    for emulator in reversed(started):
        emulator.close()


def production(emulator: CloudTasksStandIn, credentials: FixedToken, **settings: Any) -> deferred_client.Config:
    """Configure the client for Cloud Tasks, with the emulator's URL as the API's."""
    settings.setdefault("payload_bucket", BUCKET)
    return deferred_client.configure(
        backend="cloudtasks",
        cloud_tasks_url=f"http://{emulator.host}",
        project=emulator.settings.project,
        location=emulator.settings.location,
        credentials=credentials,
        **settings,
    )
