"""Leases end while the emulator runs; another program's lock or a full disk answers 503 naming the cause."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import API, Handle, MakeEmulator, RecordingApp
from deferred_emulator import leases


@pytest.fixture
async def emu(make_emulator: MakeEmulator, app_server: RecordingApp) -> Handle:
    handle = await make_emulator(app_url=app_server.url, ignore_rate_limits=True)
    handle.emulator.store.busy_budget_s = 0.3
    return handle


def lock_database(path: str) -> sqlite3.Connection:
    """Another program's connection holding the write lock (a DB browser left open does this)."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


class LoopWatch:
    """Measures the longest stall of the event loop while it runs."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(0.001)
            now = loop.time()
            self.longest = max(self.longest, now - last)
            last = now

    def __enter__(self) -> LoopWatch:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_another_programs_lock_never_blocks_the_loop(emu: Handle, app_server: RecordingApp) -> None:
    await emu.add(name="before")
    await app_server.wait_for(1)
    other = lock_database(emu.emulator.store.path)
    try:
        with LoopWatch() as watch:
            # When a client adds a task while another program holds the write lock
            add = asyncio.create_task(emu.call("POST", f"{API}/queues/default/tasks", {"task": {}}, expect=None))
            # Then health, reads and the console keep answering meanwhile
            started = time.monotonic()
            await emu.call("GET", "/_emulator/v1/health")
            await emu.call("GET", f"{API}/queues/default/tasks")
            await emu.call("GET", f"{API}/queues")
            await emu.call("GET", "/_emulator/v1/stats")
            async with emu.http.get(emu.url + "/") as resp:
                assert resp.status == 200
            assert time.monotonic() - started < 0.3
            # And the add answers 503 UNAVAILABLE naming the cause
            data = await add
        assert data["error"]["code"] == 503
        assert data["error"]["status"] == "UNAVAILABLE"
        assert "locked by another program" in data["error"]["message"]
        # And the event loop never stalled for more than a few milliseconds
        assert watch.longest < 0.1, watch.longest
    finally:
        other.rollback()
        other.close()
    # Once the lock is let go, adding works again
    await emu.add(name="after")
    await app_server.wait_for(2)


async def test_an_unrecorded_outcome_is_retried_within_seconds(emu: Handle, app_server: RecordingApp) -> None:
    # Given a delivery under way
    app_server.hold = asyncio.Event()
    await emu.add(name="t")
    await app_server.wait_for(1)
    # When its outcome cannot be written (another program holds the write lock as the app answers)
    other = lock_database(emu.emulator.store.path)
    app_server.hold.set()
    try:
        async with asyncio.timeout(5):
            while not emu.dispatcher.leases.count():
                await asyncio.sleep(0.01)
        # Then the task still counts as in flight
        stats = await emu.call("GET", "/_emulator/v1/stats")
        (default,) = [q for q in stats["queues"] if q["id"] == "default"]
        assert default["stats"]["inFlight"] == 1, default
    finally:
        other.rollback()
        other.close()
    # And, the lock gone, it is delivered again within seconds, without a restart
    app_server.hold = None
    await app_server.wait_for(2, timeout=5)
    async with asyncio.timeout(5):
        while (await emu.call("GET", f"{API}/queues/default/tasks")).get("tasks"):
            await asyncio.sleep(0.05)
    assert emu.dispatcher.in_flight() == 0


async def test_a_lease_left_behind_is_released_while_running(
    make_emulator: MakeEmulator, app_server: RecordingApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(leases, "EXPIRED_EVERY_S", 0.2)
    emu = await make_emulator(app_url=app_server.url, ignore_rate_limits=True)
    await emu.call("POST", f"{API}/queues/default:pause")
    await emu.add(name="t")
    # Given a task leased by no delivery of this process, its lease run out
    now = emu.emulator.now_us()
    await emu.emulator.store._exec("UPDATE task SET state='running', lease_until_us=?", (now - 1,))
    await emu.call("POST", f"{API}/queues/default:resume")
    # Then it is delivered within seconds
    await app_server.wait_for(1, timeout=5)


# -- a full disk, on a small tmpfs (needs root to mount) ----------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    where = tmp_path / "small"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(path: Path) -> None:
    """Take every free byte of the disk holding ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 4096, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)


async def test_a_full_disk_answers_503_and_nothing_stays_stuck(
    make_emulator: MakeEmulator, app_server: RecordingApp, small_disk: Path
) -> None:
    emu = await make_emulator(app_url=app_server.url, ignore_rate_limits=True, db_path=str(small_disk / "t.db"))
    # Given deliveries under way
    app_server.hold = asyncio.Event()
    for i in range(5):
        await emu.add(name=f"t{i}", appEngineHttpRequest={"relativeUri": "/w", "body": "eHh4" * 2000})
    await app_server.wait_for(5)
    # When the disk fills up as they finish
    fill(small_disk / "filler")
    app_server.hold.set()
    statuses = []
    for i in range(20):
        data = await emu.call(
            "POST",
            f"{API}/queues/default/tasks",
            {"task": {"appEngineHttpRequest": {"relativeUri": "/w", "body": "eHh4" * 20000}}},
            expect=None,
        )
        statuses.append(data.get("error", {}).get("code", 200))
        if 503 in statuses:
            break
    # Then adding answers 503 naming the full disk, and reads keep answering
    assert 503 in statuses, statuses
    assert "full" in data["error"]["message"]
    await emu.call("GET", "/_emulator/v1/health")
    await emu.call("GET", f"{API}/queues/default/tasks")
    # And once space is freed, every task is delivered again or recorded: none stays running
    os.remove(small_disk / "filler")
    app_server.hold = None
    async with asyncio.timeout(8):
        while True:
            tasks = (await emu.call("GET", f"{API}/queues/default/tasks")).get("tasks", [])
            if not tasks and emu.dispatcher.in_flight() == 0:
                break
            await asyncio.sleep(0.05)


async def test_rpc_http_add_while_locked_is_a_transient_error_naming_the_cause(emu: Handle) -> None:
    pytest.importorskip("google.appengine.api", reason="needs the gae extra (appengine-python-standard)")
    from test_gae_rpc import TQ, add_request, bulk_add

    other = lock_database(emu.emulator.store.path)
    try:
        response = await bulk_add(emu, add_request(name="t1"))
    finally:
        other.rollback()
        other.close()
    assert response.application_error.code == TQ.TaskQueueServiceError.TRANSIENT_ERROR
    assert "locked by another program" in response.application_error.detail
