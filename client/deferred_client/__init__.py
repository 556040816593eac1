"""deferred_client: App Engine's ``deferred`` for the local emulator and for Cloud Tasks.

``defer(fn, *args, **kwargs)`` pickles the call and queues it (in the emulator with the standard library
only, or in Cloud Tasks with the ``[cloud]`` extra), which later POSTs it to the app's handler
(``application``, ``asgi_application`` or ``aiohttp_handler``), which runs it.
"""

from __future__ import annotations

from .aio import aclose
from .aiohttp_app import add_aiohttp_route, aiohttp_handler
from .asgi import ASGIHandler, asgi_application
from .config import Config, configure, current_config
from .datastore import run_from_datastore
from .defer import defer, defer_async
from .errors import (
    BadTaskStateError,
    BadTransactionState,
    BadTransactionStateError,
    ConfigurationError,
    DuplicateTaskNameError,
    EmulatorUnavailableError,
    Error,
    InternalError,
    InvalidEtaError,
    InvalidQueueError,
    InvalidQueueNameError,
    InvalidTaskError,
    InvalidTaskNameError,
    InvalidTaskRetryOptionsError,
    InvalidUrlError,
    PermanentTaskFailure,
    PermissionDeniedError,
    QueuePausedError,
    SingularTaskFailure,
    TaskAlreadyExistsError,
    TaskTooLargeError,
    TombstonedTaskError,
    TooManyTasksError,
    TransactionalRequestTooLargeError,
    TransientError,
    UnknownQueueError,
)
from .execution import set_log_level
from .handler import WSGIHandler, application, wrap_wsgi_app
from .serialize import invoke_member, run, serialize
from .storage import run_from_storage
from .task import Task, TaskRetryOptions
from .transaction import Transaction, transaction

__all__ = [
    "ASGIHandler",
    "BadTaskStateError",
    "BadTransactionState",
    "BadTransactionStateError",
    "Config",
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
    "Task",
    "TaskAlreadyExistsError",
    "TaskRetryOptions",
    "TaskTooLargeError",
    "TombstonedTaskError",
    "TooManyTasksError",
    "Transaction",
    "TransactionalRequestTooLargeError",
    "TransientError",
    "UnknownQueueError",
    "WSGIHandler",
    "aclose",
    "add_aiohttp_route",
    "aiohttp_handler",
    "application",
    "asgi_application",
    "configure",
    "current_config",
    "defer",
    "defer_async",
    "invoke_member",
    "run",
    "run_from_datastore",
    "run_from_storage",
    "serialize",
    "set_log_level",
    "transaction",
    "wrap_wsgi_app",
]
