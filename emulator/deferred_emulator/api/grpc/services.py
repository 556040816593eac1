"""The gRPC services: each method's path, request and response message (as google-cloud-tasks ships them) and handler.

google-cloud-tasks ships its messages (proto-plus, whose ``.pb()`` is the protobuf class) but no
servicer classes, so the method table is spelled out here; names and types are those of its gRPC
transport (``tasks_v2.services.cloud_tasks.transports.grpc``).
"""

from __future__ import annotations

from dataclasses import replace
from types import ModuleType
from typing import Any

from aiohttp import web
from google.cloud import tasks_v2, tasks_v2beta3
from google.cloud.location import locations_pb2
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.longrunning import operations_pb2
from google.protobuf import empty_pb2
from google.protobuf.message import DecodeError

from ...errors import InvalidArgument
from . import cloudtasks as ct
from .backend import Backend, Method
from .convert import from_json
from .tojson import to_json

#: CloudTasks method -> (request type, response type, handler); type names are looked up per API version.
CLOUD_TASKS: dict[str, tuple[str, str, Method]] = {
    "ListQueues": ("ListQueuesRequest", "ListQueuesResponse", ct.list_queues),
    "GetQueue": ("GetQueueRequest", "Queue", ct.get_queue),
    "CreateQueue": ("CreateQueueRequest", "Queue", ct.create_queue),
    "UpdateQueue": ("UpdateQueueRequest", "Queue", ct.update_queue),
    "DeleteQueue": ("DeleteQueueRequest", "Empty", ct.delete_queue),
    "PurgeQueue": ("PurgeQueueRequest", "Queue", ct.purge_queue),
    "PauseQueue": ("PauseQueueRequest", "Queue", ct.pause_queue),
    "ResumeQueue": ("ResumeQueueRequest", "Queue", ct.resume_queue),
    "GetIamPolicy": ("GetIamPolicyRequest", "Policy", ct.iam("getIamPolicy")),
    "SetIamPolicy": ("SetIamPolicyRequest", "Policy", ct.iam("setIamPolicy")),
    "TestIamPermissions": ("TestIamPermissionsRequest", "TestIamPermissionsResponse", ct.iam("testIamPermissions")),
    "ListTasks": ("ListTasksRequest", "ListTasksResponse", ct.list_tasks),
    "GetTask": ("GetTaskRequest", "Task", ct.get_task),
    "CreateTask": ("CreateTaskRequest", "Task", ct.create_task),
    "DeleteTask": ("DeleteTaskRequest", "Empty", ct.delete_task),
    "RunTask": ("RunTaskRequest", "Task", ct.run_task),
    "BatchCreateTasks": ("BatchCreateTasksRequest", "Operation", ct.batch_create_tasks),
    "BatchDeleteTasks": ("BatchDeleteTasksRequest", "Operation", ct.batch_delete_tasks),
}
OPERATIONS: dict[str, tuple[Any, Any, Method]] = {
    "GetOperation": (operations_pb2.GetOperationRequest, operations_pb2.Operation, ct.get_operation),
}
LOCATIONS: dict[str, tuple[Any, Any, Method]] = {
    "ListLocations": (locations_pb2.ListLocationsRequest, locations_pb2.ListLocationsResponse, ct.list_locations),
    "GetLocation": (locations_pb2.GetLocationRequest, locations_pb2.Location, ct.get_location),
}
#: Messages that are not Cloud Tasks' own.
SHARED_TYPES: dict[str, Any] = {
    "Empty": empty_pb2.Empty,
    "Operation": operations_pb2.Operation,
    "Policy": policy_pb2.Policy,
    "GetIamPolicyRequest": iam_policy_pb2.GetIamPolicyRequest,
    "SetIamPolicyRequest": iam_policy_pb2.SetIamPolicyRequest,
    "TestIamPermissionsRequest": iam_policy_pb2.TestIamPermissionsRequest,
    "TestIamPermissionsResponse": iam_policy_pb2.TestIamPermissionsResponse,
}
VERSIONS: dict[str, ModuleType] = {"v2": tasks_v2, "v2beta3": tasks_v2beta3}


def message_class(module: ModuleType, name: str) -> Any:
    """The protobuf class of a message named in the tables."""
    if name in SHARED_TYPES:
        return SHARED_TYPES[name]
    return getattr(module, name).pb()


class Unary:
    """One unary method: its request message parsed and turned into REST JSON for ``handler``, whose JSON
    answer becomes the response message."""

    __slots__ = ("handler", "request_type", "response_type", "backend", "unreadable")

    def __init__(self, handler: Method, request_type: Any, response_type: Any, backend: Backend) -> None:
        self.handler = handler
        self.request_type = request_type
        self.response_type = response_type
        self.backend = backend
        self.unreadable = f"The request is not a valid {request_type.DESCRIPTOR.full_name} message."

    async def __call__(self, data: bytes) -> bytes:
        """The serialized response to the serialized request ``data``; an EmulatorError for a failed call."""
        try:
            request = self.request_type.FromString(data)
        except DecodeError:
            raise InvalidArgument(self.unreadable) from None
        answer = await self.handler(self.backend, to_json(request))
        # The REST JSON carries the emulator's own fields too (state, retryCount, ...): not in the proto.
        out: bytes = from_json(answer, self.response_type()).SerializeToString()
        return out


def method_table(app: web.Application) -> dict[bytes, Unary]:
    """Every method the emulator serves over gRPC, by its HTTP/2 ``:path`` (``/package.Service/Method``)."""
    backend = Backend(app)
    out: dict[bytes, Unary] = {}
    for version, module in VERSIONS.items():
        versioned = replace(backend, version=version)
        for name, (req, resp, handler) in CLOUD_TASKS.items():
            path = f"/google.cloud.tasks.{version}.CloudTasks/{name}".encode()
            out[path] = Unary(handler, message_class(module, req), message_class(module, resp), versioned)
    for service, table in (
        ("google.longrunning.Operations", OPERATIONS),
        ("google.cloud.location.Locations", LOCATIONS),
    ):
        for name, (req, resp, handler) in table.items():
            out[f"/{service}/{name}".encode()] = Unary(handler, req, resp, backend)
    return out
