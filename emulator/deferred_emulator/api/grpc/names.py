"""Resource names in gRPC requests (over REST they are the URL path, matched by the router)."""

from __future__ import annotations

import re
from typing import Any

from ...errors import InvalidArgument, PermissionDenied, help_link
from ...service import QUEUE_NAME_DOC, TASK_NAME_DOC

LOCATION_RE = re.compile(r"(projects/[^/]+/locations/[^/]+)")
QUEUE_RE = re.compile(r"(projects/[^/]+/locations/[^/]+)/queues/([^/]+)")
TASK_RE = re.compile(r"(projects/[^/]+/locations/[^/]+/queues/([^/]+))/tasks/([^/]+)")
PROJECT_RE = re.compile(r"projects/([^/]+)")
OPERATION_RE = re.compile(r"(projects/[^/]+/locations/[^/]+)/operations/([^/]+)")
LOCATION_NAME_FORMAT = '"projects/<PROJECT_ID>/locations/<LOCATION_ID>"'
QUEUE_NAME_FORMAT = '"projects/<PROJECT_ID>/locations/<LOCATION_ID>/queues/<QUEUE_ID>"'
OPERATION_NAME_FORMAT = '"projects/<PROJECT_ID>/locations/<LOCATION_ID>/operations/<OPERATION_ID>"'
TASK_NAME_FORMAT = '"projects/<PROJECT_ID>/locations/<LOCATION_ID>/queues/<QUEUE_ID>/tasks/<TASK_ID>"'


def denied_project(project: str) -> PermissionDenied:
    """Production's answer to a parent that names no project it knows (conformance: invalid-parent)."""
    message = f"Permission denied on resource project {project}."
    info: dict[str, Any] = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "CONSUMER_INVALID",
        "domain": "googleapis.com",
        "metadata": {
            "consumer": f"projects/{project}",
            "containerInfo": project,
            "service": "cloudtasks.googleapis.com",
        },
    }
    localized = {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": message}
    console = help_link("Google developers console", "https://console.developers.google.com")
    return PermissionDenied(message, [info, localized, console])


def location_of(parent: str) -> str:
    """``projects/P/locations/L``, checked."""
    if LOCATION_RE.fullmatch(parent):
        return parent
    if not parent.startswith("projects/"):
        raise denied_project(parent)
    raise InvalidArgument(
        f'Location name must be formatted: "projects/<PROJECT_ID>/locations/<LOCATION_ID>", not "{parent}".'
    )


def project_of(name: str) -> str:
    """The project id of ``projects/P``."""
    found = PROJECT_RE.fullmatch(name)
    if not found:
        raise denied_project(name)
    return found[1]


def queue_of(name: str) -> tuple[str, str]:
    """The location and the queue id of a queue's full name."""
    found = QUEUE_RE.fullmatch(name)
    if not found:
        raise InvalidArgument(
            f"Queue name must be formatted: {QUEUE_NAME_FORMAT}.",
            [help_link("Definition of queue name", QUEUE_NAME_DOC)],
        )
    return found[1], found[2]


def task_of(name: str) -> tuple[str, str, str]:
    """The queue's full name, the queue id and the task id of a task's full name."""
    found = TASK_RE.fullmatch(name)
    if not found:
        link = help_link("Definition of task name", TASK_NAME_DOC)
        raise InvalidArgument(f"Task name must be formatted: {TASK_NAME_FORMAT}.", [link])
    return found[1], found[2], found[3]


def operation_of(name: str) -> tuple[str, str]:
    """The location and the id of an operation's full name."""
    found = OPERATION_RE.fullmatch(name)
    if not found:
        raise InvalidArgument(f"Operation name must be formatted: {OPERATION_NAME_FORMAT}, not {name!r}.")
    return found[1], found[2]
