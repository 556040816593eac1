"""The client's exceptions, named and nested as App Engine's ``deferred`` and ``taskqueue`` name them."""

from __future__ import annotations

import json

__all__ = [
    "BadTaskStateError",
    "BadTransactionState",
    "BadTransactionStateError",
    "ConfigurationError",
    "DuplicateTaskNameError",
    "EmulatorUnavailableError",
    "Error",
    "InternalError",
    "InvalidEtaError",
    "InvalidQueueError",
    "InvalidQueueNameError",
    "InvalidTaskError",
    "InvalidTaskNameError",
    "InvalidTaskRetryOptionsError",
    "InvalidUrlError",
    "PermanentTaskFailure",
    "PermissionDeniedError",
    "QueuePausedError",
    "SingularTaskFailure",
    "TaskAlreadyExistsError",
    "TaskTooLargeError",
    "TombstonedTaskError",
    "TooManyTasksError",
    "TransactionalRequestTooLargeError",
    "TransientError",
    "UnknownQueueError",
    "error_from_response",
]


class Error(Exception):
    """Base class of every exception this package raises."""


class ConfigurationError(Error):
    """Raised when the configuration (``configure()`` or the environment) is missing or wrong for what was asked."""


class PermanentTaskFailure(Error):
    """Raised by a deferred callable when the task failed and will never succeed (it is not retried)."""


class SingularTaskFailure(Error):
    """Raised by a deferred callable when the task failed this once (it is retried, quietly)."""


class InvalidTaskError(Error):
    """Raised when a task's options are invalid."""


class TaskAlreadyExistsError(InvalidTaskError):
    """Raised when a task with the same name is already in the queue and has not yet run."""


class TombstonedTaskError(InvalidTaskError):
    """Raised when a task with the same name ran, gave up or was deleted recently."""


class InvalidTaskNameError(InvalidTaskError):
    """Raised when a task name is not ``[a-zA-Z0-9_-]{1,500}``, or a transactional task is named."""


class TaskTooLargeError(InvalidTaskError):
    """Raised when a task is over the emulator's size limit even after spilling its payload."""


class TransactionalRequestTooLargeError(TaskTooLargeError):
    """Raised when the tasks of one transaction are too large together."""


class InvalidUrlError(InvalidTaskError):
    """Raised when ``_url`` is not a relative path starting with ``/``."""


class InvalidEtaError(InvalidTaskError):
    """Raised when an ETA or countdown is invalid or more than 30 days ahead."""


class InvalidQueueError(Error):
    """Raised when a queue is invalid."""


class InvalidQueueNameError(InvalidQueueError):
    """Raised when a queue name is not ``[a-zA-Z0-9-]{1,100}``."""


class UnknownQueueError(Error):
    """Raised when the queue does not exist in the emulator."""


class TransientError(Error):
    """Raised when the emulator failed in a way that may succeed if tried again."""


class EmulatorUnavailableError(TransientError):
    """Raised when no emulator is configured, or the configured one does not answer."""


class InternalError(Error):
    """Raised when the emulator reports an internal error."""


class BadTaskStateError(Error):
    """Raised when a task is used in a state that does not allow it."""


class PermissionDeniedError(Error):
    """Raised when the emulator refuses the request."""


class DuplicateTaskNameError(Error):
    """Raised when the same task name appears twice in one transaction."""


class TooManyTasksError(Error):
    """Raised when one transaction holds more tasks than one batch may carry."""


class BadTransactionStateError(Error):
    """Raised when ``_transactional=True`` is used outside ``transaction()``, or transactions are nested."""


class InvalidTaskRetryOptionsError(Error):
    """Raised when ``TaskRetryOptions`` has a negative value or a maximum backoff below the minimum."""


class QueuePausedError(Error):
    """Raised when a queue is paused and the operation needs it running."""


#: App Engine's alias.
BadTransactionState = BadTransactionStateError


def _message(body: bytes) -> str:
    try:
        data = json.loads(body)
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    except ValueError:
        pass
    return body.decode("utf-8", "replace").strip()[:500]


def _bad_request(message: str) -> Error:
    lower = message.lower()
    if "task size too large" in lower or "tasktoolarge" in lower:
        return TaskTooLargeError(message)
    if "scheduletime" in lower or "eta" in lower.split():
        return InvalidEtaError(message)
    if "task id" in lower or "name" in lower:
        return InvalidTaskNameError(message)
    if "relativeuri" in lower:
        return InvalidUrlError(message)
    if "too many tasks" in lower:
        return TooManyTasksError(message)
    return InvalidTaskError(message)


def error_from_response(status: int, body: bytes, what: str = "the request", *, adding: bool = False) -> Error:
    """The exception an error answer from the emulator stands for (``adding``: to a task creation)."""
    message = _message(body) or f"HTTP {status}"
    if status == 409:
        return TombstonedTaskError(message) if "tombstone" in message.lower() else TaskAlreadyExistsError(message)
    if status == 404:
        if adding or "queue" in message.lower():
            return UnknownQueueError(message)
        return Error(f"{what}: {message}")
    if status in (400, 413):
        return _bad_request(message)
    if status == 403:
        return PermissionDeniedError(message)
    if status in (429, 502, 503, 504):
        return TransientError(message)
    if status >= 500:
        return InternalError(message)
    return Error(f"{what}: HTTP {status}: {message}")
