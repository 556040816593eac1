"""What every app-side handler does with a delivery: check it may run, run it, and answer as ``deferred`` does."""

from __future__ import annotations

import asyncio
import inspect
import logging
import traceback
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

from .config import BACKEND_ENV, HOST_ENV, SECRET_ENV, current_config
from .errors import PermanentTaskFailure, SingularTaskFailure
from .serialize import run
from .signing import SecretUnavailable, emulator_secret, forget_secrets, verify

__all__ = ["Reply", "TaskRequest", "execute", "execute_async", "refusal", "refusal_async", "set_log_level"]

logger = logging.getLogger(__name__)

#: The level the handlers log each task's headers at (App Engine's default: INFO).
_log_level = logging.INFO
TASK_NAME = "x-appengine-taskname"
HTTP_TASK_NAME = "x-cloudtasks-taskname"
#: Besides the ``X-*`` headers, the handlers pass on this one (HTTP-target tasks' OIDC token).
AUTHORIZATION = "authorization"
SIGNATURE = "x-deferred-signature"
#: The documented spelling of the headers that are logged.
SPELLING = {
    name.lower(): name
    for name in (
        "X-AppEngine-QueueName",
        "X-AppEngine-TaskName",
        "X-AppEngine-TaskRetryCount",
        "X-AppEngine-TaskExecutionCount",
        "X-AppEngine-TaskETA",
        "X-AppEngine-TaskPreviousResponse",
        "X-AppEngine-TaskRetryReason",
        "X-AppEngine-FailFast",
    )
}
XSRF = "Detected an attempted XSRF attack. "
EXCERPT = 1000
#: How much of a traceback goes back to the emulator: what it keeps of an answer (64 KiB), less room for UTF-8.
TRACEBACK_CHARS = 60_000


def set_log_level(log_level: int) -> None:
    """Set the level the handlers log task headers at (``logging.INFO`` by default)."""
    global _log_level
    _log_level = log_level


@dataclass(frozen=True)
class TaskRequest:
    """A delivery as any framework hands it over: ``headers`` holds the ``X-*`` ones, names in lower case."""

    method: str
    headers: Mapping[str, str]
    body: bytes
    #: the peer's IP address (``None`` when unknown, e.g. over a Unix socket).
    peer: str | None

    @property
    def task_name(self) -> str:
        """The ``X-AppEngine-TaskName`` header, or an HTTP target's ``X-CloudTasks-TaskName`` (empty when absent)."""
        return self.headers.get(TASK_NAME) or self.headers.get(HTTP_TASK_NAME, "")


@dataclass(frozen=True)
class Reply:
    """The answer to a delivery."""

    status: int
    text: str

    @property
    def body(self) -> bytes:
        """The answer's body."""
        return self.text.encode()


SUCCESS = Reply(200, "Success")


def _signed(request: TaskRequest, secret: str) -> bool:
    headers = request.headers
    signature = headers.get(SIGNATURE)
    if not signature:
        return False
    prefix = "x-appengine-" if TASK_NAME in headers else "x-cloudtasks-"
    queue = headers.get(prefix + "queuename", "")
    retry_count = headers.get(prefix + "taskretrycount", "")
    return verify(secret, queue, request.task_name, retry_count, request.body, signature)


def _forbidden(message: str) -> Reply:
    logger.error(message)
    return Reply(403, message)


def refusal(request: TaskRequest, secret: str | None = None) -> Reply | None:
    """Why a delivery may not run (a 403 or 405 ``Reply``), or ``None``; ``secret`` defaults to the configured one."""
    if request.method != "POST":
        return Reply(405, f"Deferred tasks are POSTed; {request.method} is not allowed.")
    config = current_config()
    if config.production:
        from .production_trust import production_refusal

        refused = production_refusal(request, config)
        if refused is None:
            _log_headers(request)
        return refused
    if TASK_NAME not in request.headers:
        return _forbidden(XSRF + "The header 'X-AppEngine-Taskname' was not set.")
    secret = secret or config.secret
    if not secret and not config.host:
        # Nothing to check a signature against: a production app that forgot DEFERRED_BACKEND lands here.
        return _forbidden(
            XSRF + f"Neither {SECRET_ENV} nor {HOST_ENV} is set, so no delivery can be verified here; in production"
            f" set {BACKEND_ENV}=cloudtasks."
        )
    if not secret:
        try:
            secret = emulator_secret(config.base_url)
        except SecretUnavailable as exc:
            # 503, not 403: the emulator retries, and the next attempt may find it reachable.
            logger.error("%s", exc)
            return Reply(503, f"Cannot check the delivery's signature: {exc}.")
    if not _signed(request, secret):
        forget_secrets()  # a new emulator database has a new secret: look again on the next delivery
        return _forbidden(
            XSRF + "The X-Deferred-Signature header is missing or wrong: the request was not signed by the task"
            f" queue emulator for this queue, task and attempt (set {SECRET_ENV} as the emulator's --secret,"
            " or leave both unset)."
        )
    _log_headers(request)
    return None


async def refusal_async(request: TaskRequest, secret: str | None = None) -> Reply | None:
    """``refusal`` for asyncio handlers: in production its check may fetch signing keys, so it runs in a thread."""
    if current_config().production:
        return await asyncio.to_thread(refusal, request, secret)
    return refusal(request, secret)


def _log_headers(request: TaskRequest) -> None:
    """Log the task's queue headers, as App Engine's handler does."""
    if logger.isEnabledFor(_log_level):
        shown = [
            f"{SPELLING.get(k, k)}:{v}"
            for k, v in request.headers.items()
            if k.startswith(("x-appengine-", "x-cloudtasks-"))
        ]
        logger.log(_log_level, ", ".join(shown))


def _failed(request: TaskRequest, exc: Exception) -> Reply:
    """The answer for a deferred call that raised ``exc``, logged as App Engine logs it."""
    name = request.task_name
    if isinstance(exc, SingularTaskFailure):
        logger.debug("Task %s failed once (SingularTaskFailure); a retry is forced", name)
        return Reply(408, "SingularTaskFailure")
    if isinstance(exc, PermanentTaskFailure):
        logger.exception("Task %s failed permanently; it will not be retried", name, exc_info=exc)
        return Reply(200, "PermanentTaskFailure")
    logger.exception("Task %s failed; it will be retried", name, exc_info=exc)
    if current_config().production:
        # Cloud Tasks keeps no answers: the error's text is enough, and a traceback stays in the app's logs.
        return Reply(500, f"{type(exc).__name__}: {exc}"[:EXCERPT])
    # The emulator shows each attempt's answer: the whole traceback, its end (the error) kept if it is cut.
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return Reply(500, text if len(text) <= TRACEBACK_CHARS else "...\n" + text[-TRACEBACK_CHARS:])


async def _wait(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def execute(request: TaskRequest) -> Reply:
    """Run the deferred call in this thread (awaiting it with ``asyncio.run`` if it is a coroutine)."""
    try:
        result = run(request.body)
        if inspect.isawaitable(result):
            asyncio.run(_wait(result))
    except Exception as exc:
        return _failed(request, exc)
    return SUCCESS


async def execute_async(request: TaskRequest) -> Reply:
    """Run the deferred call in a worker thread, so it cannot block the loop; coroutines are awaited on the loop."""
    try:
        result = await asyncio.to_thread(run, request.body)
        if inspect.isawaitable(result):
            await result
    except Exception as exc:
        return _failed(request, exc)
    return SUCCESS
