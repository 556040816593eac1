"""Following attempts: the feed behind ``GET /_emulator/v1/attempts``, its long poll, and ``deferred-emulator tail``."""

from __future__ import annotations

import asyncio
import base64
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any

import pytest
from aiohttp import web
from conftest import Handle, MakeEmulator, RecordingApp
from deferred_client.serialize import serialize
from deferred_emulator.attemptfeed import AttemptFeed
from test_client_fixtures import AiohttpThread, LiveEmulator

pytest_plugins = ["test_client_fixtures"]
V1 = "/_emulator/v1"


def charge(order: int, *, cents: int) -> None:
    """Deferred by these tests, never run (the app below only answers)."""


def deferred_body(order: int) -> dict[str, Any]:
    body = base64.b64encode(serialize(charge, order, cents=250)).decode()
    return {"relativeUri": "/_ah/queue/deferred", "body": body}


# -- the feed -------------------------------------------------------------------------------------


def record(feed: AttemptFeed, queue: str, task: str, verdict: str = "done") -> None:
    feed.record(queue, task, 1, (1_000_000, 1_002_000), 200, "", verdict, ("POST", "/x", b""))


def test_the_feed_hands_out_entries_after_a_cursor_and_counts_what_it_dropped() -> None:
    feed = AttemptFeed(size=3)
    for i in range(5):
        record(feed, "mail" if i % 2 else "default", f"t{i}")
    # Then the two oldest were dropped: a follower at 0 is told, and gets the three kept
    entries, cursor, missed = feed.since(0)
    assert [e.task for e in entries] == ["t2", "t3", "t4"] and cursor == 5 and missed == 2
    # And a follower at 4 gets only the newer ones; one scoped to a queue only its own, with the cursor past the rest
    assert [e.task for e in feed.since(4)[0]] == ["t4"]
    mail, cursor, _ = feed.since(2, "mail")
    assert [e.task for e in mail] == ["t3"] and cursor == 5
    # And a limit stops the page at the last entry handed out
    page, cursor, _ = feed.since(2, limit=1)
    assert [e.task for e in page] == ["t2"] and cursor == 3
    assert [e.task for e in feed.latest(2)] == ["t3", "t4"] and feed.latest(0) == []


async def test_a_waiting_follower_wakes_on_the_next_attempt_and_on_close() -> None:
    feed = AttemptFeed()
    waiter = asyncio.create_task(feed.wait(30))
    await asyncio.sleep(0)
    record(feed, "default", "t")
    assert await asyncio.wait_for(waiter, 5) is True
    waiter = asyncio.create_task(feed.wait(30))
    await asyncio.sleep(0)
    feed.close()
    assert await asyncio.wait_for(waiter, 5) is False
    assert await feed.wait(30) is False  # closed: no more waiting


# -- the endpoint ---------------------------------------------------------------------------------


@pytest.fixture
async def held(make_emulator: MakeEmulator, app_server: RecordingApp) -> Handle:
    return await make_emulator(app_url=app_server.url, dispatch=False, ignore_rate_limits=True, db_path=":memory:")


async def test_recent_attempts_say_what_ran_and_how_it_went(held: Handle, app_server: RecordingApp) -> None:
    # Given a deferred task that fails once, then succeeds
    app_server.statuses += [500]
    retry_at_once = {"minBackoff": "0s", "maxBackoff": "0s"}
    await held.add(name="c1", appEngineHttpRequest=deferred_body(7), retryConfig=retry_at_once)
    await held.drain()
    # When the latest attempts are read
    data = await held.call("GET", f"{V1}/attempts?last=10")
    # Then both are there, oldest first, with the call, status, latency and what followed
    first, second = data["attempts"]
    assert (first["task"], first["number"], first["status"], first["outcome"]) == ("c1", 1, 500, "retry")
    assert first["retryReason"] == "App Error" and first["latencyMs"] >= 0
    assert first["callable"] == f"{__name__}.charge" and first["argsSummary"] == "7, cents=250"
    assert (second["number"], second["status"], second["outcome"]) == (2, 200, "succeeded")
    assert data["next"] == second["seq"]


async def test_a_long_poll_answers_when_an_attempt_happens(held: Handle) -> None:
    # Given a follower at the current cursor, waiting up to 10 s
    start = await held.call("GET", f"{V1}/attempts")
    poll = asyncio.create_task(held.call("GET", f"{V1}/attempts?since={start['next']}&wait=10"))
    await asyncio.sleep(0.05)
    assert not poll.done()
    # When a task is delivered
    await held.add(name="p1")
    await held.drain()
    # Then the poll answers with it, long before its wait is up
    data = await asyncio.wait_for(poll, 5)
    assert [a["task"] for a in data["attempts"]] == ["p1"] and data["next"] == start["next"] + 1


async def test_a_poll_scoped_to_a_queue_ignores_the_others(held: Handle) -> None:
    await held.call("POST", "/v2/projects/p/locations/l/queues", {"name": "projects/p/locations/l/queues/mail"})
    await held.add(name="d1")
    await held.add("mail", name="m1")
    await held.drain()
    data = await held.call("GET", f"{V1}/attempts?since=0&queue=mail")
    assert [a["task"] for a in data["attempts"]] == ["m1"]
    # And with nothing new for it, a short wait ends empty with the cursor moved past the rest
    quiet = await held.call("GET", f"{V1}/attempts?since={data['next']}&queue=mail&wait=0.05")
    assert quiet["attempts"] == [] and quiet["next"] == data["next"]


@pytest.mark.parametrize(
    "query, status",
    [("since=-1", 400), ("since=x", 400), ("wait=60&since=0", 400), ("last=5000", 400), ("queue=nope", 404)],
)
async def test_bad_attempt_queries_are_clear_errors(held: Handle, query: str, status: int) -> None:
    data = await held.call("GET", f"{V1}/attempts?{query}", expect=status)
    assert data["error"]["code"] == status and data["error"]["message"]


# -- the command ----------------------------------------------------------------------------------


class Lines:
    """A subprocess's output lines, read in a thread so a test can wait for each with a timeout."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                self._lines.put(line.rstrip("\n"))
        except ValueError:
            pass  # closed at teardown while reading

    def next(self, timeout: float = 20) -> str:
        return self._lines.get(timeout=timeout)


@pytest.fixture
def shop(
    live_emulator: Callable[..., LiveEmulator], aiohttp_thread: Callable[[web.Application], AiohttpThread]
) -> LiveEmulator:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=503 if request.path.startswith("/fail") else 200, text="answer")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = aiohttp_thread(app)
    emulator = live_emulator(app_url=server.url, db_path=":memory:")
    emulator.create_queue("mail")
    return emulator


@pytest.fixture
def tail_process(shop: LiveEmulator) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "deferred_emulator", "tail", *args, "--emulator", shop.url]
        # A shell that runs the suite in the background ignores SIGINT, and children inherit that:
        # restore the default so that tail sees Ctrl-C as it would in a terminal.
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def add(emulator: LiveEmulator, queue: str, name: str, request: dict[str, Any]) -> None:
    parent = f"/v2/projects/{emulator.settings.project}/locations/{emulator.settings.location}/queues/{queue}"
    status, data = emulator.call("POST", f"{parent}/tasks", {"task": {"name": name, "appEngineHttpRequest": request}})
    assert status == 200, data


def test_tail_prints_attempts_as_they_happen_and_ends_cleanly_on_ctrl_c(
    shop: LiveEmulator, tail_process: Callable[..., subprocess.Popen[str]]
) -> None:
    # Given one attempt already made, and tail following the mail queue from the last one
    add(shop, "mail", "early", deferred_body(1))
    shop.drain()
    proc = tail_process("mail", "--last", "1")
    assert proc.stdout is not None and proc.stderr is not None
    lines = Lines(proc.stdout)
    assert " mail  early#1  " in lines.next(), "the last attempt is shown first"
    # When a deferred task fails, a plain one succeeds, and a task of another queue runs
    add(shop, "default", "elsewhere", {"relativeUri": "/ok"})
    add(shop, "mail", "c2", {**deferred_body(2), "relativeUri": "/fail/c2"})
    shop.drain()
    add(shop, "mail", "plain", {"relativeUri": "/ok/plain"})
    shop.drain()
    # Then each of the queue's attempts comes as one line: time and zone, queue, task, call, status, latency, reason
    failed, plain = lines.next(), lines.next()
    words = failed.split("  ")
    assert words[1:3] == ["mail", "c2#1"] and words[3] == f"{__name__}.charge(2, cents=250)"
    assert words[4] == "503" and words[5].endswith("ms") and words[6] == "App Error, will retry"
    assert len(words[0].split()) == 2, "time and zone"
    assert plain.split("  ")[2:5] == ["plain#1", "POST /ok/plain", "200"]
    # When Ctrl-C is pressed
    proc.send_signal(signal.SIGINT)
    # Then tail ends at once, with the status a shell expects and no traceback
    assert proc.wait(15) in (0, 130)
    assert "Traceback" not in proc.stderr.read()
    assert "elsewhere" not in "".join([failed, plain])


def test_tail_against_nothing_is_one_line_and_exit_2(tail_process: Callable[..., subprocess.Popen[str]]) -> None:
    proc = tail_process("nope")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and err.strip().splitlines() == ["Error: no queue named 'nope'"]


def test_tail_asks_at_most_four_times_a_second_however_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    from deferred_emulator import cli_tail

    # Given an emulator that always has a new attempt at once
    calls: list[str] = []
    pauses: list[float] = []

    class Busy:
        def call(self, method: str, path: str) -> dict[str, Any]:
            calls.append(path)
            if len(calls) > 5:
                raise KeyboardInterrupt
            entry = {"dispatchTime": "2026-01-01T00:00:00.000000Z", "queue": "q", "task": "t", "number": 1,
                     "status": 200, "latencyMs": 1.0, "retryReason": "", "outcome": "succeeded",
                     "method": "POST", "url": "/x"}  # fmt: skip
            return {"attempts": [entry], "next": len(calls)}

    monkeypatch.setattr(cli_tail.time, "sleep", pauses.append)
    # When tail follows it
    with pytest.raises(KeyboardInterrupt):
        cli_tail.follow(Busy(), None, 0)  # type: ignore[arg-type]
    # Then it waits on the emulator with each cursor in turn, and paces itself to 0.25 s between requests
    assert [c.split("since=")[1].split("&")[0] for c in calls[1:]] == ["1", "2", "3", "4", "5"]
    assert "wait=10" in calls[1]
    assert len(pauses) == 4 and all(0.2 < p <= 0.25 for p in pauses)


def test_tail_waits_for_an_emulator_that_went_away(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from deferred_emulator import cli_tail
    from deferred_emulator.cli_inspect import Unreachable

    # Given an emulator that answers, goes away for two polls, comes back restarted, then makes an attempt
    entry = {"dispatchTime": "2026-01-01T00:00:00.000000Z", "queue": "q", "task": "t", "number": 1, "status": 200,
             "latencyMs": 1.0, "retryReason": "", "outcome": "succeeded", "method": "POST", "url": "/x"}  # fmt: skip
    answers: list[Any] = [
        {"attempts": [], "next": 40},
        Unreachable("cannot reach the emulator at http://e (refused); is it running?"),
        Unreachable("cannot reach the emulator at http://e (refused); is it running?"),
        {"attempts": [], "next": 0},
        {"attempts": [entry], "next": 1},
        KeyboardInterrupt(),
    ]
    sleeps: list[float] = []

    class Flaky:
        def call(self, method: str, path: str) -> dict[str, Any]:
            answer = answers.pop(0)
            if isinstance(answer, BaseException):
                raise answer
            return dict(answer)

    monkeypatch.setattr(cli_tail.time, "sleep", sleeps.append)
    # When tail follows it
    with pytest.raises(KeyboardInterrupt):
        cli_tail.follow(Flaky(), None, 0)  # type: ignore[arg-type]
    # Then it says once that the emulator is away, retries each second, says when it is back, and goes on
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "(cannot reach the emulator at http://e (refused); is it running?; waiting for it)"
    assert out[1] == "(the emulator is back; attempts made while it was away may be missing)"
    assert out[2].split("  ")[2] == "t#1" and len(out) == 3
    assert sleeps.count(cli_tail.RETRY_S) == 2


def test_the_feed_keeps_only_small_bodies() -> None:
    from deferred_emulator.attemptfeed import BODY_KEPT

    feed = AttemptFeed()
    feed.record("q", "small", 1, (0, 1), 200, "", "done", ("POST", "/x", b"a" * BODY_KEPT))
    feed.record("q", "large", 1, (0, 1), 200, "", "done", ("POST", "/x", b"a" * (BODY_KEPT + 1)))
    small, large = feed.latest(2)
    assert small.body == b"a" * BODY_KEPT and large.body is None
