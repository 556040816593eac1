"""What the ``deferred_emulator`` pytest fixture hands a test: a running emulator and blocking helpers.

This module imports only the standard library, so tests can annotate with ``DeferredEmulator`` for
free; the server itself (aiohttp, aiosqlite) is imported by ``start()``.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = [
    "DeferredEmulator",
    "DrainFailure",
    "DrainResult",
    "DrainTimeoutError",
    "EmulatorAPIError",
    "QueuedTask",
    "start",
]

#: Where App Engine tasks go until the test sets ``app_url`` (the discard port: nothing listens).
UNSET_APP_URL = "http://127.0.0.1:9"
#: Most pages read when listing a queue's tasks (1000 tasks a page).
MAX_PAGES = 100
_STATUS_RE = re.compile(r"HTTP status code (\d+)")


class EmulatorAPIError(Exception):
    """Raised when the emulator answers a helper's call with an error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class DrainTimeoutError(Exception):
    """Raised when tasks were still due or in flight when a drain's timeout ran out."""


def parse_time(text: str) -> datetime:
    """An aware UTC datetime from the emulator's RFC 3339 timestamps."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def _last_status(data: dict[str, Any]) -> int | None:
    if isinstance(data.get("lastResponse"), dict):
        status = data["lastResponse"].get("status")
        return int(status) if isinstance(status, int) else None
    message = data.get("lastAttempt", {}).get("responseStatus", {}).get("message", "")
    match = _STATUS_RE.search(message)
    if match:
        return int(match.group(1))
    return 0 if "lastAttempt" in data else None


@dataclass(frozen=True)
class QueuedTask:
    """A task the emulator holds; ``deferred_client.run(task.payload)`` runs a deferred one inline."""

    name: str
    queue: str
    #: when the task is (next) due, on the emulator's clock.
    eta: datetime
    #: the request body: for ``defer()`` tasks, the pickled call.
    payload: bytes
    #: relative URI (App Engine tasks) or full URL (HTTP-target tasks).
    url: str
    method: str
    headers: dict[str, str]
    #: WAITING, RUNNING or FAILED.
    state: str
    retry_count: int
    execution_count: int
    dispatch_count: int
    #: HTTP status of the last attempt (0: no response), or None before the first attempt.
    last_status: int | None
    #: the start of the response to the last attempt (kept for FAILED tasks).
    last_response: str
    last_dispatch: datetime | None
    #: the Cloud Tasks JSON the emulator answered.
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QueuedTask:
        """A QueuedTask from a FULL-view Cloud Tasks task."""
        request = data.get("appEngineHttpRequest") or data.get("httpRequest") or {}
        parts = str(data["name"]).split("/")
        last = data.get("lastAttempt", {}).get("dispatchTime")
        return cls(
            name=parts[-1],
            queue=parts[-3],
            eta=parse_time(data["scheduleTime"]),
            payload=base64.b64decode(request.get("body", "")),
            url=request.get("relativeUri") or request.get("url", ""),
            method=request.get("httpMethod", "POST"),
            headers=dict(request.get("headers", {})),
            state=str(data.get("state", "WAITING")),
            retry_count=int(data.get("retryCount", 0)),
            execution_count=int(data.get("executionCount", 0)),
            dispatch_count=int(data.get("dispatchCount", 0)),
            last_status=_last_status(data),
            last_response=str(data.get("lastResponse", {}).get("excerpt", "")),
            last_dispatch=parse_time(last) if last else None,
            raw=data,
        )

    def run(self) -> Any:
        """Run this deferred task here and now, as the app's handler would (``deferred_client.run``)."""
        import deferred_client

        return deferred_client.run(self.payload)


@dataclass(frozen=True)
class DrainFailure:
    """One attempt that failed during a drain."""

    queue: str
    task: str
    #: HTTP status the app answered (0: no answer: refused connection or deadline).
    status: int
    #: the start of the app's response, or why there was none.
    response: str
    #: False when the task gave up (it is now FAILED).
    will_retry: bool


@dataclass(frozen=True)
class DrainResult:
    """What a drain did: attempt counts and the failed attempts."""

    dispatched: int
    succeeded: int
    retried: int
    failed: int
    failures: list[DrainFailure]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DrainResult:
        """From the ``drain`` endpoint's answer."""
        failures = [
            DrainFailure(f["queue"], f["task"], int(f["status"]), str(f["response"]), bool(f["willRetry"]))
            for f in data.get("failures", [])
        ]
        return cls(int(data["dispatched"]), int(data["succeeded"]), int(data["retried"]), int(data["failed"]), failures)


class DeferredEmulator:
    """A running emulator, pointed at by ``deferred_client``, with helpers to drive it from tests."""

    def __init__(self, url: str, *, project: str = "local-project", location: str = "us-central1") -> None:
        self.url = url.rstrip("/")
        host_port = self.url.split("://", 1)[1]
        #: ``host:port``, the form of ``DEFERRED_EMULATOR_HOST``.
        self.host = host_port
        #: where gRPC clients connect (``grpc.insecure_channel(emulator.grpc_target)``): the same port.
        self.grpc_target = host_port
        self.parent = f"/v2/projects/{project}/locations/{location}"
        self._app_url_set = False
        self._cleanups = ExitStack()

    def __repr__(self) -> str:
        return f"<DeferredEmulator {self.url}>"

    # -- raw API --------------------------------------------------------------------------------

    def call(self, method: str, path: str, payload: Any = None, timeout: float = 30.0) -> Any:
        """Call the emulator's HTTP API (JSON in and out); ``EmulatorAPIError`` on an error status."""
        hostname, _, port = self.host.rpartition(":")
        conn = http.client.HTTPConnection(hostname.strip("[]"), int(port), timeout=timeout)
        try:
            body = None
            headers = {"Accept": "application/json"}
            if payload is not None or method in ("POST", "PATCH", "PUT"):
                body = json.dumps({} if payload is None else payload).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body, headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {"error": {"message": raw[:500].decode("utf-8", "replace")}}
        if resp.status >= 400:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            raise EmulatorAPIError(resp.status, str(error.get("message", data)))
        return data

    def cloud_tasks_client(self, transport: str = "grpc") -> Any:
        """Google's ``tasks_v2.CloudTasksClient`` pointed at this emulator, over gRPC (or ``"rest"``).

        Close it with ``client.transport.close()`` (or use it as a context manager).
        """
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import tasks_v2

        if transport == "rest":
            from google.api_core.client_options import ClientOptions

            options = ClientOptions(api_endpoint=self.url)
            credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
            return tasks_v2.CloudTasksClient(transport="rest", client_options=options, credentials=credentials)
        if transport != "grpc":
            raise ValueError(f"transport must be 'grpc' or 'rest', not {transport!r}")
        import grpc
        from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

        channel = grpc.insecure_channel(self.grpc_target)
        return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))

    # -- where tasks go -------------------------------------------------------------------------

    @property
    def app_url(self) -> str:
        """Base URL App Engine tasks are delivered to; set it to your app server's URL."""
        return str(self.call("GET", "/_emulator/v1/routing")["appUrl"])

    @app_url.setter
    def app_url(self, url: str) -> None:
        self.call("PATCH", "/_emulator/v1/routing", {"appUrl": str(url)})
        self._app_url_set = True

    def serve_wsgi(self, app: Callable[..., Any]) -> str:
        """Serve a WSGI app on 127.0.0.1 in a thread until the test ends, deliver tasks to it, and return its URL."""
        from .threads import WSGIThread

        server = WSGIThread(app)
        self._cleanups.callback(server.close)
        self.app_url = server.url
        return server.url

    # -- running tasks --------------------------------------------------------------------------

    def drain(self, queues: str | Sequence[str] | None = None, timeout: float = 10.0) -> DrainResult:
        """Deliver every due task now (rate limits ignored) and wait until none is due or in flight.

        Tasks the deliveries defer are delivered too, if they are due. Raises ``DrainTimeoutError``
        when ``timeout`` seconds were not enough. In an ``async def`` test whose app runs on the
        test's own event loop, use ``await drain_async()`` so the loop can serve the deliveries.
        """
        body: dict[str, Any] = {"timeout": timeout}
        if queues is not None:
            body["queues"] = [queues] if isinstance(queues, str) else list(queues)
        data = self.call("POST", "/_emulator/v1/drain", body, timeout=timeout + 30)
        result = DrainResult.from_json(data)
        if data.get("timedOut"):
            hint = ""
            if _in_event_loop():
                hint = " (in an async test, `await deferred_emulator.drain_async()` lets the test's loop serve the app)"
            raise DrainTimeoutError(f"tasks were still due or in flight after {timeout:g}s{hint}: {result}")
        if not self._app_url_set and any(f.status == 0 for f in result.failures):
            raise RuntimeError(
                "Tasks could not be delivered: no app URL is set. Set `deferred_emulator.app_url` to your app"
                f" server's URL, or call `deferred_emulator.serve_wsgi(app)`. Failures: {result.failures}"
            )
        return result

    async def drain_async(self, queues: str | Sequence[str] | None = None, timeout: float = 10.0) -> DrainResult:
        """``drain`` for async tests: waits without blocking the running event loop."""
        return await asyncio.to_thread(self.drain, queues, timeout)

    def run_task(self, name: str, queue: str = "default") -> None:
        """Deliver one task now, whatever its ETA (``:run``); ``drain`` waits for it to finish."""
        self.call("POST", f"{self.parent}/queues/{queue}/tasks/{quote(name)}:run")

    # -- time -----------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The emulator's now (virtual clock included)."""
        return parse_time(self.call("GET", "/_emulator/v1/clock")["now"])

    def advance(self, seconds: float | timedelta) -> datetime:
        """Move the virtual clock forward; tasks that become due run at the next ``drain``. The new now."""
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        data = self.call("POST", "/_emulator/v1/clock:advance", {"seconds": seconds})
        return parse_time(data["now"])

    # -- looking at tasks -----------------------------------------------------------------------

    def _list(self, queue: str) -> Iterator[QueuedTask]:
        token = ""
        for _ in range(MAX_PAGES):
            path = f"{self.parent}/queues/{queue}/tasks?responseView=FULL&pageSize=1000"
            data = self.call("GET", path + (f"&pageToken={quote(token)}" if token else ""))
            for item in data.get("tasks", []):
                yield QueuedTask.from_json(item)
            token = data.get("nextPageToken", "")
            if not token:
                return

    def tasks(self, queue: str = "default") -> list[QueuedTask]:
        """The queue's tasks that have not run to completion (waiting or in flight), by ETA."""
        return [task for task in self._list(queue) if task.state != "FAILED"]

    def failed(self, queue: str = "default") -> list[QueuedTask]:
        """The queue's tasks that ran out of retries (FAILED), with their last status and response."""
        return [task for task in self._list(queue) if task.state == "FAILED"]

    def task(self, name: str, queue: str = "default") -> QueuedTask:
        """One task by name (``EmulatorAPIError`` 404 when it is gone)."""
        return QueuedTask.from_json(
            self.call("GET", f"{self.parent}/queues/{queue}/tasks/{quote(name)}?responseView=FULL")
        )

    def reset(self) -> None:
        """Delete every task, tombstone, stored payload and failed task; queues are kept."""
        self.call("POST", "/_emulator/v1/reset")

    def close(self) -> None:
        """Stop what the helpers started (WSGI servers)."""
        self._cleanups.close()


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@contextmanager
def start(db_dir: Path, overrides: dict[str, Any] | None = None) -> Iterator[DeferredEmulator]:
    """Run an emulator in a thread (virtual clock, manual dispatch) with ``deferred_client`` pointed at it.

    ``overrides`` are ``Settings`` fields; ``deferred_client``'s configuration is restored afterwards.
    """
    from deferred_client.config import configured

    from .settings import Settings
    from .threads import EmulatorThread

    fields: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "db_path": str(db_dir / "tasks.sqlite3"),
        "app_url": UNSET_APP_URL,
        "virtual_clock": True,
        "dispatch": False,
        "log_level": "warning",
        **(overrides or {}),
    }
    settings = Settings(**fields)
    server = EmulatorThread(settings)
    try:
        emulator = DeferredEmulator(server.url, project=settings.project, location=settings.location)
        emulator._app_url_set = settings.app_url != UNSET_APP_URL
        # Pinned, so production settings in the shell (DEFERRED_BACKEND=cloudtasks...) never reach Cloud Tasks.
        with configured(
            host=emulator.host, secret=settings.secret or "", backend="emulator", handler_url="", payload_bucket=""
        ):
            try:
                yield emulator
            finally:
                emulator.close()
    finally:
        server.close()
