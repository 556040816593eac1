"""Each attempt keeps the app's whole answer up to 64 KiB, over both delivery paths, and shows it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiohttp import web
from click.testing import CliRunner
from conftest import Handle, MakeEmulator
from deferred_emulator.cli import cli
from deferred_emulator.plainhttp import RESPONSE_BYTES

V1 = "/_emulator/v1"
TRACEBACK = (
    "Traceback (most recent call last):\n" + '  File "app.py", line 3, in f\n    g()\n' * 800 + "ValueError: no\n"
)


async def answering(aiohttp_server: Callable[..., object], make_emulator: MakeEmulator, text: str) -> Handle:
    """An emulator delivering to an app that answers 500 with ``text``."""

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=500, text=text)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = await aiohttp_server(app, host="127.0.0.1")  # type: ignore[operator]
    url = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    return await make_emulator(app_url=url, dispatch=False, db_path=":memory:")


# "/plain" goes through the emulator's own HTTP/1.1 client; "%" in a path sends it through aiohttp's.
@pytest.mark.parametrize("uri", ["/plain", "/through%20aiohttp"])
async def test_a_long_traceback_is_kept_whole(
    aiohttp_server: Callable[..., object], make_emulator: MakeEmulator, uri: str
) -> None:
    # Given an app whose failure answer is a 40 KB traceback
    assert 30_000 < len(TRACEBACK) < RESPONSE_BYTES
    emulator = await answering(aiohttp_server, make_emulator, TRACEBACK)
    await emulator.add(name="t", appEngineHttpRequest={"relativeUri": uri}, retryConfig={"maxAttempts": 1})
    await emulator.drain()
    # When its attempts are read
    [attempt] = (await emulator.call("GET", f"{V1}/tasks/t/attempts"))["attempts"]
    # Then the whole answer is there, not cut, with its first KiB as the excerpt
    assert attempt["response"] == TRACEBACK and attempt["responseTruncated"] is False
    assert attempt["responseExcerpt"] == TRACEBACK[:1024]
    # And the task's own row keeps only the start of it
    row = await emulator.call("GET", f"{V1}/tasks/t")
    assert row["lastAttempt"]["responseExcerpt"] == TRACEBACK[:1024]


@pytest.mark.parametrize("uri", ["/plain", "/through%20aiohttp"])
async def test_a_longer_answer_is_cut_at_64_kib_and_says_so(
    aiohttp_server: Callable[..., object], make_emulator: MakeEmulator, uri: str
) -> None:
    emulator = await answering(aiohttp_server, make_emulator, "x" * 300_000)
    await emulator.add(name="t", appEngineHttpRequest={"relativeUri": uri}, retryConfig={"maxAttempts": 1})
    await emulator.drain()
    [attempt] = (await emulator.call("GET", f"{V1}/tasks/t/attempts"))["attempts"]
    assert attempt["response"] == "x" * RESPONSE_BYTES and attempt["responseTruncated"] is True


async def test_the_cli_prints_the_last_answer_whole(
    aiohttp_server: Callable[..., object], make_emulator: MakeEmulator
) -> None:
    # Given a failed task whose answer was a traceback
    emulator = await answering(aiohttp_server, make_emulator, TRACEBACK)
    await emulator.add(name="t", retryConfig={"maxAttempts": 1})
    await emulator.drain()
    # When it is shown on the command line (in a thread: the emulator runs on this test's loop)
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["task", "t", "--emulator", emulator.url])
    # Then the attempt row shows the first line, and the whole traceback follows
    assert result.exit_code == 0, result.output
    assert "Traceback (most recent call last):" in result.output.split("last answer")[0]
    printed = result.output.split("last answer\n", 1)[1]
    assert printed.splitlines() == ["  " + line for line in TRACEBACK.rstrip("\n").splitlines()]


async def test_the_failed_list_carries_only_each_answers_first_kib(
    aiohttp_server: Callable[..., object], make_emulator: MakeEmulator
) -> None:
    # Given a failed task whose answer was a 40 KB traceback
    emulator = await answering(aiohttp_server, make_emulator, TRACEBACK)
    await emulator.add(name="t", retryConfig={"maxAttempts": 1})
    await emulator.drain()
    # When the failed tasks are listed (a page of many, refreshed by the console every few seconds)
    [task] = (await emulator.call("GET", f"{V1}/queues/default/failed"))["tasks"]
    [attempt] = task["attempts"]
    # Then each attempt has its answer's first KiB and says there is more
    assert "response" not in attempt and attempt["responseExcerpt"] == TRACEBACK[:1024]
    assert attempt["responseTruncated"] is True
