"""The OpenAPI document, and a schemathesis run against a live emulator: no 5xx, and still healthy after."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from deferred_emulator.api.openapi import OPERATIONS, build_document
from deferred_emulator.app import create_app
from deferred_emulator.settings import Settings
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

# Imported here, at collection, because it is slow to import: the time-bounded test below should not pay for it.
from schemathesis.specs.openapi.schemas import OpenApiSchema

API = "/v2/projects/p/locations/l"
#: The schemathesis run stops sending after this long (on a loaded machine fewer examples run).
BUDGET_S = 45.0


class ServerThread:
    """An emulator on 127.0.0.1 in a thread of its own, for synchronous HTTP clients."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="emulator", daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(20), "the emulator did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner = web.AppRunner(create_app(self.settings), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[ServerThread]:
    """An emulator whose app is down (deliveries fail fast), with a virtual clock and auto-created queues."""
    with ServerThread(
        Settings(
            db_path=str(tmp_path / "tasks.sqlite3"),
            port=0,
            app_url="http://127.0.0.1:9",
            virtual_clock=True,
            auto_create_queues=True,
            dispatch_deadline_s=2.0,
            project="p",
            location="l",
        )
    ) as server:
        yield server


def test_the_document_lists_every_route() -> None:
    # Given the app's route table
    app = create_app()
    document = build_document(app)
    listed = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    # Then every documented operation is one the app serves, and none is a placeholder
    assert ("POST", "/v2/projects/{project}/locations/{location}/queues/{queue}/tasks") in listed
    assert ("POST", "/_emulator/v1/tasks:batchAdd") in listed
    assert all(op["summary"] != "Undocumented endpoint." for ops in document["paths"].values() for op in ops.values())
    raw = document["paths"]["/_emulator/v1/entities"]["post"]["requestBody"]["content"]
    assert list(raw) == ["application/octet-stream"]


def test_the_app_engine_api_server_is_documented_as_binary() -> None:
    [rpc] = [op for op in OPERATIONS if op.path == "/rpc_http"]
    assert rpc.raw_body and rpc.answer is None


def test_routes_nobody_described_still_appear(tmp_path: Path) -> None:
    # Given an app with one more route than the hand-written operations know
    app = create_app(Settings(db_path=str(tmp_path / "db")))

    async def extra(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_post("/_emulator/v1/queues/{queue}/failed:retry", extra)
    document = build_document(app)
    op = document["paths"]["/_emulator/v1/queues/{queue}/failed:retry"]["post"]
    assert [p["name"] for p in op["parameters"]] == ["queue"]


def test_the_document_is_served(live: ServerThread) -> None:
    resp = requests.get(live.url + "/_emulator/v1/openapi.json", timeout=5)
    assert resp.status_code == 200
    assert resp.json()["openapi"].startswith("3.")


def known_resources(operation: Any) -> dict[str, str]:
    """Path parameters naming things that exist, so generated requests also reach the handlers' inner paths."""
    known = {"project": "p", "location": "l", "queue": "default", "task": "t1"}
    names = {p.name for p in operation.path_parameters}
    return {k: v for k, v in known.items() if k in names}


# The round that reaches every operation is not time-bounded; on a slow machine it alone took 140 s.
@pytest.mark.timeout(600)
def test_schemathesis_finds_no_server_error(live: ServerThread) -> None:
    # Given the schema as the running emulator serves it, and a few tasks and queues to find
    schema: OpenApiSchema = schemathesis.openapi.from_url(live.url + "/_emulator/v1/openapi.json")
    session = requests.Session()
    for name in ("t1", "t2"):
        task = {"name": name, "appEngineHttpRequest": {"relativeUri": "/w", "body": "eA=="}}
        session.post(f"{live.url}{API}/queues/default/tasks", json={"task": task}, timeout=5).raise_for_status()
    statuses: Counter[int] = Counter()
    errors: list[str] = []
    started = time.monotonic()

    def exercise(strategy: Any, examples: int, bounded: bool = True) -> None:
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: Any) -> None:
            if bounded and time.monotonic() - started > BUDGET_S:
                return  # bounded in time on a slow machine; the counts below show how much ran
            response = case.call(base_url=live.url, session=session, timeout=15)
            statuses[response.status_code] += 1
            covered.add(f"{case.method} {case.path}")
            if response.status_code >= 500:
                errors.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}")

        run()

    # When schemathesis sends a valid request to every operation, then invalid bodies, then more of both
    # while time allows
    operations = [result.ok() for result in schema.get_all_operations()]
    covered: set[str] = set()
    for operation in operations:
        exercise(operation.as_strategy(path_parameters=known_resources(operation)), 1, bounded=False)
    for operation in operations:
        if operation.body:
            try:
                exercise(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE), 2)
            except Unsatisfiable:
                pass  # nothing about this body can be sent invalid (a free-form object)
    for operation in operations:
        exercise(operation.as_strategy(path_parameters=known_resources(operation)), 3)
        exercise(operation.as_strategy(), 3)
    elapsed = time.monotonic() - started
    print(f"schemathesis: {sum(statuses.values())} requests, {len(operations)} operations, {elapsed:.1f}s: {statuses}")
    # Then none got a server error, many were answered, and the emulator is healthy afterwards
    assert errors == [], errors[:5]
    assert covered == {f"{op.method.upper()} {op.path}" for op in operations}, "operations never called"
    assert sum(statuses.values()) >= len(operations), statuses
    assert any(200 <= s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses), statuses
    health = session.get(live.url + "/_emulator/v1/health", timeout=5)
    assert health.status_code == 200 and health.json()["ok"] is True
    created = session.post(
        f"{live.url}{API}/queues/default/tasks",
        json={"task": {"appEngineHttpRequest": {"relativeUri": "/after"}}},
        timeout=5,
    )
    assert created.status_code == 200, created.text
