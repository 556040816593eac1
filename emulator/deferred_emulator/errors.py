"""Errors with an HTTP status and a google.rpc status name, rendered as Google-style JSON."""

from __future__ import annotations

from typing import Any

#: What a client is told of an error the emulator did not expect (the log has the traceback).
INTERNAL_MESSAGE = "Internal error in the emulator; see its log."


class EmulatorError(Exception):
    """Raised when a request cannot be honoured; the base of every API error."""

    status = 500
    rpc_status = "INTERNAL"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: google.rpc error details (``Help`` links and the like), as production attaches them.
        self.details = details

    def to_json(self) -> dict[str, Any]:
        """The error body Google's APIs answer with."""
        error: dict[str, Any] = {"code": self.status, "message": self.message, "status": self.rpc_status}
        if self.details:
            error["details"] = self.details
        return {"error": error}


def help_link(description: str, url: str) -> dict[str, Any]:
    """A ``google.rpc.Help`` error detail with one link, in its REST JSON form."""
    return {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"description": description, "url": url}]}


class InvalidArgument(EmulatorError):
    """Raised when a request is malformed or breaks a rule."""

    status = 400
    rpc_status = "INVALID_ARGUMENT"


class FailedPrecondition(EmulatorError):
    """Raised when the request is valid but the state does not allow it."""

    status = 400
    rpc_status = "FAILED_PRECONDITION"


class NotFound(EmulatorError):
    """Raised when a queue, task or entity does not exist."""

    status = 404
    rpc_status = "NOT_FOUND"


class AlreadyExists(EmulatorError):
    """Raised when a queue or task name is taken (or, for tasks, tombstoned)."""

    status = 409
    rpc_status = "ALREADY_EXISTS"


class PermissionDenied(EmulatorError):
    """Raised when a request is refused for where it came from."""

    status = 403
    rpc_status = "PERMISSION_DENIED"


class PayloadTooLarge(EmulatorError):
    """Raised when a request body is over the size the endpoint reads."""

    status = 413
    rpc_status = "INVALID_ARGUMENT"


class Unsupported(EmulatorError):
    """Raised when a request uses a media type the endpoint does not take."""

    status = 415
    rpc_status = "INVALID_ARGUMENT"


#: Production's texts (shared/conformance errors.json).
QUEUE_NOT_FOUND = (
    "Queue does not exist. If you just created the queue, wait at least a minute for the queue to initialize."
)
ENTITY_NOT_FOUND = "Requested entity was not found."
TASK_EXISTS = "Requested entity already exists"


class QueueNotFound(NotFound):
    """Raised when a queue does not exist."""

    def __init__(self, queue: str = "") -> None:
        super().__init__(QUEUE_NOT_FOUND)
        self.queue = queue


class TaskNotFound(NotFound):
    """Raised when a task does not exist."""

    def __init__(self, message: str = ENTITY_NOT_FOUND) -> None:
        super().__init__(message)


class TaskExists(AlreadyExists):
    """Raised when a task name is in use by a task that has not finished (production's text, nothing added)."""

    def __init__(self, name: str) -> None:
        super().__init__(TASK_EXISTS)
        self.name = name


class TaskTombstoned(AlreadyExists):
    """Raised when a task name was used recently (the task ran, failed or was deleted)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"{TASK_EXISTS}: task name {name!r} is tombstoned: a task with this name existed recently"
            " (it ran, gave up or was deleted), so the name cannot be reused yet"
        )
        self.name = name
