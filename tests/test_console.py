"""The web console: its files are served, and headless Chromium drives it against a live emulator."""

from __future__ import annotations

import base64
import shutil
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import Handle
from deferred_client.serialize import serialize
from test_client_fixtures import AiohttpThread, LiveEmulator

pytest_plugins = ["test_client_fixtures"]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
#: No sandbox (CI runs as root); no GPU; and none of the background connections to Google's hosts,
#: which a machine without internet refuses many at a time while the page is being driven.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_binary() -> str | None:
    """Debian's chromium, if installed (browsers are never downloaded)."""
    for path in CHROMIUM_PATHS:
        if Path(path).is_file():
            return path
    return shutil.which("chromium")


async def test_console_files_are_served_with_a_strict_policy(emulator: Handle) -> None:
    # When the console's page, script and sheet are fetched
    files = ["/", "/console/lib.js", "/console/chart.js", "/console/app.js", "/console/style.css", "/console/icon.svg"]
    types = ["text/html", "text/javascript", "text/javascript", "text/javascript", "text/css", "image/svg+xml"]
    for path, ctype in zip(files, types):
        async with emulator.http.get(emulator.url + path) as resp:
            text = await resp.text()
            # Then each is there, typed, and the page may load only its own files
            assert resp.status == 200 and resp.content_type == ctype and text
            assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    async with emulator.http.get(emulator.url + "/console/nothing.js") as resp:
        assert resp.status == 404


def in_an_hour() -> str:
    return (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_report(report_id: int, *, fmt: str) -> None:
    """Deferred by the browser test (the emulator only describes it)."""


class Recorder:
    """An app in a thread that records the paths it is sent; paths under /fail/ answer 500."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.changed = threading.Condition()

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        with self.changed:
            self.paths.append(request.path)
            self.changed.notify_all()
        if request.path.startswith("/fail/"):
            return web.Response(status=500, text="Traceback: KeyError: 'user'")
        return web.Response(text="ok")

    def wait_for(self, path: str, timeout: float) -> bool:
        """Whether ``path`` arrives within ``timeout`` seconds."""
        with self.changed:
            return self.changed.wait_for(lambda: path in self.paths, timeout)


@pytest.fixture
def browser_page() -> Iterator[Any]:
    """A page in headless Debian Chromium, driven by Playwright."""
    binary = chromium_binary()
    if binary is None:
        reason = "no chromium binary (looked for /usr/bin/chromium and chromium on PATH); apt-get install chromium"
        print(f"SKIPPED browser test: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=binary, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1360, "height": 760})
        # Generous waits: a busy CI machine can take seconds to paint; a working page answers in milliseconds.
        page.set_default_timeout(60_000)
        yield page
        browser.close()


@pytest.mark.browser
@pytest.mark.timeout(600)
def test_console_shows_counts_runs_a_task_and_pauses_a_queue(
    browser_page: Any,
    live_emulator: Callable[..., LiveEmulator],
    aiohttp_thread: Callable[[web.Application], AiohttpThread],
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)
    page = browser_page
    # Given an emulator (no automatic dispatch) delivering to an app, with tasks in two queues
    app = Recorder()
    web_app = web.Application()
    web_app.router.add_route("*", "/{tail:.*}", app.handle)
    server = aiohttp_thread(web_app)
    emulator = live_emulator(app_url=server.url, db_path=":memory:")
    emulator.create_queue("mail", rateLimits={"maxDispatchesPerSecond": 20})
    parent = f"/v2/projects/{emulator.settings.project}/locations/{emulator.settings.location}/queues"
    for i in range(3):
        body = base64.b64encode(serialize(build_report, 100 + i, fmt="pdf")).decode()
        request = {"relativeUri": f"/r/{i}", "body": body}
        task = {"name": f"report-{i}", "scheduleTime": in_an_hour(), "appEngineHttpRequest": request}
        assert emulator.call("POST", f"{parent}/default/tasks", {"task": task})[0] == 200
    broken = {"name": "broken", "appEngineHttpRequest": {"relativeUri": "/fail/0"}, "retryConfig": {"maxAttempts": 1}}
    assert emulator.call("POST", f"{parent}/default/tasks", {"task": broken})[0] == 200
    emulator.drain(queues=["default"])
    for i in range(2):
        task = {"name": f"mail-{i}", "appEngineHttpRequest": {"relativeUri": f"/m/{i}"}}
        assert emulator.call("POST", f"{parent}/mail/tasks", {"task": task})[0] == 200

    # When the console opens
    page.goto(emulator.url + "/")
    # Then each queue shows its counts
    default, mail = page.locator("tr[data-queue=default]"), page.locator("tr[data-queue=mail]")
    expect(default.locator("td[data-col=waiting]")).to_have_text("3")
    expect(default.locator("td[data-col=due]")).to_have_text("0")
    expect(default.locator("td[data-col=failed]")).to_have_text("1")
    expect(mail.locator("td[data-col=waiting]")).to_have_text("2")
    expect(mail.locator("td[data-col=due]")).to_have_text("2")
    expect(mail.locator("td[data-col=rate]")).to_have_text("20/s")
    expect(mail.locator("td[data-col=state]")).to_have_text("RUNNING")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)

    # When a queue's task is opened and run now
    default.locator("a.name").click()
    row = page.locator("tr[data-task=report-1]")
    expect(row).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "console-queue.png"), full_page=True)
    row.locator("button[data-action=run]").click()
    # Then the app receives it, and the queue has one task fewer
    assert app.wait_for("/r/1", 60), "the task was not delivered"
    assert app.paths == ["/fail/0", "/r/1"]
    expect(page.locator("tr[data-task=report-1]")).to_have_count(0)

    # When a task page is opened, Then it shows the request, headers and the deferred call
    page.locator("tr[data-task=report-2] a.name").click()
    expect(page.locator("h1")).to_have_text("report-2")
    expect(page.locator(".panel").first).to_contain_text("POST /r/2")
    expect(page.locator("#payload-call")).to_have_text(f"{__name__}.build_report(102, fmt='pdf')")
    page.screenshot(path=str(ARTIFACTS / "console-task.png"), full_page=True)

    # When the failed tasks are shown, Then the failure and its response are there, and Retry puts it back
    page.locator(".crumbs a", has_text="default").click()
    page.locator(".tab", has_text="Failed").click()
    failed_row = page.locator("tr[data-task=broken]")
    expect(failed_row).to_contain_text("Traceback: KeyError")
    page.screenshot(path=str(ARTIFACTS / "console-failed.png"), full_page=True)
    failed_row.locator("button[data-action=retry]").click()
    expect(page.locator("tr[data-task=broken]")).to_have_count(0)

    # When the mail queue is paused from the queues page
    page.locator(".brand").click()
    page.locator("tr[data-queue=mail] button[data-action=pause]").click()
    # Then its state changes, and the button offers Resume
    expect(page.locator("tr[data-queue=mail] td[data-col=state]")).to_have_text("PAUSED")
    expect(page.locator("tr[data-queue=mail] button[data-action=resume]")).to_be_visible()
    status, data = emulator.call("GET", f"{parent}/mail")
    assert status == 200 and data["state"] == "PAUSED"

    # When the queue is purged, Then the console asks first, and the queue empties only once confirmed
    page.locator("tr[data-queue=mail] button[data-action=purge]").click()
    expect(page.locator("dialog#confirm")).to_be_visible()
    page.locator("dialog#confirm button[value=ok]").click()
    expect(page.locator("tr[data-queue=mail] td[data-col=waiting]")).to_have_text("0")
    page.screenshot(path=str(ARTIFACTS / "console-paused.png"), full_page=True)


def send_welcome(user_id: int, *, template: str) -> None:
    """Deferred by the browser test (the emulator only describes it)."""


TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/mail.py", line 12, in send_welcome\n'
    "    user = users[user_id]\n"
    "           ~~~~~^^^^^^^^^\n"
    "KeyError: 42\n"
)


class TracebackApp:
    """An app in a thread: paths under /fail/ answer 500 with a Python traceback, others 200."""

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        if request.path.startswith("/fail/"):
            return web.Response(status=500, text=TRACEBACK)
        return web.Response(text="ok")


@pytest.mark.browser
@pytest.mark.timeout(600)
def test_console_at_800px_shows_calls_finds_tasks_charts_flow_and_tracebacks(
    browser_page: Any,
    live_emulator: Callable[..., LiveEmulator],
    aiohttp_thread: Callable[[web.Application], AiohttpThread],
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)
    page = browser_page
    page.set_viewport_size({"width": 800, "height": 700})
    # Given a 2-a-minute mail queue holding welcome and report calls and a plain task, and a task that failed
    web_app = web.Application()
    web_app.router.add_route("*", "/{tail:.*}", TracebackApp().handle)
    server = aiohttp_thread(web_app)
    emulator = live_emulator(app_url=server.url, db_path=":memory:")
    emulator.create_queue("mail", rateLimits={"maxDispatchesPerSecond": 2 / 60})
    parent = f"/v2/projects/{emulator.settings.project}/locations/{emulator.settings.location}/queues"

    def add(queue: str, name: str, request: dict[str, Any], **task: Any) -> None:
        body = {"task": {"name": name, "appEngineHttpRequest": request, **task}}
        assert emulator.call("POST", f"{parent}/{queue}/tasks", body)[0] == 200

    def deferred(payload: bytes, uri: str = "/_ah/queue/deferred") -> dict[str, Any]:
        return {"relativeUri": uri, "body": base64.b64encode(payload).decode()}

    for i in range(3):
        add("mail", f"welcome-{i}", deferred(serialize(send_welcome, 40 + i, template="hi")), scheduleTime=in_an_hour())
        add("mail", f"report-{i}", deferred(serialize(build_report, i, fmt="pdf")), scheduleTime=in_an_hour())
    add("mail", "sync", {"relativeUri": "/hooks/sync"}, scheduleTime=in_an_hour())
    retry = {"maxAttempts": 2, "minBackoff": "0s", "maxBackoff": "0s"}
    add("default", "broken", deferred(serialize(send_welcome, 42, template="x"), "/fail/1"), retryConfig=retry)
    add("default", "fine", {"relativeUri": "/ok"})
    emulator.drain(queues=["default"])
    ARTIFACTS.mkdir(exist_ok=True)

    def no_page_scroll() -> None:
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 800, f"the page scrolls sideways ({width}px wide at 800px)"

    # When the queue list opens at 800 px
    page.goto(emulator.url + "/")
    mail_row = page.locator("tr[data-queue=mail]")
    # Then rates read as given, each queue has a flow chart of 60 points per series, and the page does not scroll
    expect(mail_row.locator("td[data-col=rate]")).to_have_text("2/m")
    expect(page.locator("tr[data-queue=default] td[data-col=rate]")).to_have_text("5/s")
    lines = page.locator("tr[data-queue=default] svg.flow polyline")
    expect(lines).to_have_count(4)
    assert {lines.nth(i).get_attribute("points").count(",") for i in range(4)} == {60}
    assert page.locator("tr[data-queue=default] polyline[data-series=dispatched]").get_attribute("data-points") == "60"
    no_page_scroll()
    page.screenshot(path=str(ARTIFACTS / "console-800-queues.png"), full_page=True)

    # When the mail queue opens
    mail_row.locator("a.name").click()
    # Then each row says what it runs: the deferred call in short, or the method and URL
    expect(page.locator("tr[data-task=welcome-1] td[data-col=runs]")).to_have_text(
        f"{__name__}.send_welcome(41, template='hi')"
    )
    expect(page.locator("tr[data-task=sync] td[data-col=runs]")).to_have_text("POST /hooks/sync")
    expect(page.locator("tr[data-task]")).to_have_count(7)
    # And the queue's own flow chart is there with its 60 points a series
    expect(page.locator("#flow svg.flow polyline[data-points='60']")).to_have_count(4)
    no_page_scroll()

    # When tasks are found by callable, Then only the welcome calls are left, the URL says so, and a reload keeps it
    page.locator("#filter-callable").fill("send_welcome")
    page.locator("#filters button[type=submit]").click()
    expect(page.locator("tr[data-task]")).to_have_count(3)
    assert "callable=send_welcome" in page.url
    page.reload()
    expect(page.locator("tr[data-task]")).to_have_count(3)
    expect(page.locator("#filter-callable")).to_have_value("send_welcome")
    # And a name prefix narrows it further
    page.locator("#filter-name").fill("welcome-2")
    page.locator("#filters button[type=submit]").click()
    expect(page.locator("tr[data-task]")).to_have_count(1)
    expect(page.locator("tr[data-task=welcome-2]")).to_be_visible()
    no_page_scroll()
    page.screenshot(path=str(ARTIFACTS / "console-800-filtered.png"), full_page=True)
    page.locator("#filter-clear").click()
    expect(page.locator("tr[data-task]")).to_have_count(7)

    # When the failed task is opened
    page.goto(emulator.url + "/#/queues/default/tasks/broken")
    # Then each attempt's answer is folded to its exception line, the last one open, the traceback shown whole
    answers = page.locator("#attempts details.response")
    expect(answers).to_have_count(2)
    expect(answers.first.locator("summary")).to_contain_text("KeyError: 42")
    expect(answers.first.locator("pre.traceback")).not_to_be_visible()
    expect(answers.last.locator("pre.traceback")).to_have_text(TRACEBACK)
    answers.first.locator("summary").click()
    expect(answers.first.locator("pre.traceback")).to_have_text(TRACEBACK)
    # And times carry their zone
    zone = page.evaluate("new Intl.DateTimeFormat('en-US', {timeZoneName: 'short'}).formatToParts(new Date())"
                         ".find(p => p.type === 'timeZoneName').value")  # fmt: skip
    expect(page.locator("#attempts tr.attempt").first.locator("td").nth(1)).to_contain_text(f" {zone}")
    no_page_scroll()
    page.screenshot(path=str(ARTIFACTS / "console-800-task.png"), full_page=True)
