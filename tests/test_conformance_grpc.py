"""Conformance over gRPC: the production recordings (tests/conformance/) replayed with gRPC requests.

Production's recordings were made with Google's Go gRPC client, so this is their native form: codes
are gRPC codes, and the ``google.rpc`` details arrive in ``grpc-status-details-bin``.
"""

from __future__ import annotations

import base64
from typing import Any

import grpc
import pytest
from conftest import API, Handle, MakeEmulator
from google.cloud import tasks_v2
from google.protobuf import any_pb2, empty_pb2, json_format, text_format
from google.rpc import error_details_pb2, status_pb2
from test_conformance import (
    CASES,
    CLOUD_TASKS_MAX_TASK_SIZE,
    ERRORS,
    PARENT,
    QUEUE_PATH,
    Step,
    fill,
    load,
)

#: (HTTP verb, what the path names, action) -> the CloudTasks method the REST call stands for.
METHODS = {
    ("POST", "queues", ""): "CreateQueue",
    ("GET", "queue", ""): "GetQueue",
    ("DELETE", "queue", ""): "DeleteQueue",
    ("POST", "queue", "pause"): "PauseQueue",
    ("POST", "queue", "resume"): "ResumeQueue",
    ("POST", "queue", "purge"): "PurgeQueue",
    ("POST", "tasks", ""): "CreateTask",
    ("GET", "task", ""): "GetTask",
    ("DELETE", "task", ""): "DeleteTask",
    ("POST", "task", "run"): "RunTask",
}
RESPONSES = {"DeleteQueue": "Empty", "DeleteTask": "Empty", "CreateTask": "Task", "GetTask": "Task", "RunTask": "Task"}
#: Go's names of the recorded details.
DETAIL_TYPES = {
    "*errdetails.Help": error_details_pb2.Help,
    "*errdetails.ErrorInfo": error_details_pb2.ErrorInfo,
    "*errdetails.LocalizedMessage": error_details_pb2.LocalizedMessage,
}
#: The one case REST cannot send (its parent is the URL path): over gRPC the parent is a field.
GRPC_ONLY: dict[str, list[Step]] = {
    "queue/create/invalid-parent": [("POST", "/v2/not-a-valid-parent/queues", {"name": QUEUE_PATH})],
}


def as_grpc(step: Step) -> tuple[str, dict[str, Any]]:
    """The CloudTasks method and request (REST JSON form) of a REST step."""
    verb, path, body = step
    resource, _, action = path.removeprefix("/v2/").partition(":")
    parts = resource.split("/")
    kind = {"queues": "queues", "tasks": "tasks"}.get(parts[-1]) or ("task" if "/tasks/" in resource else "queue")
    method = METHODS[(verb, kind, action)]
    if method == "CreateQueue":
        return method, {"parent": resource.removesuffix("/queues"), "queue": body}
    if method == "CreateTask":
        return method, {"parent": resource.removesuffix("/tasks"), **(body or {})}
    return method, {"name": resource}


async def call(channel: grpc.aio.Channel, method: str, request: dict[str, Any]) -> Any:
    """One unary call with Google's messages; raises grpc.aio.AioRpcError on an error status."""
    request_type = getattr(tasks_v2, f"{method}Request").pb()
    response_name = RESPONSES.get(method, "Queue")
    response_type = empty_pb2.Empty if response_name == "Empty" else getattr(tasks_v2, response_name).pb()
    rpc = channel.unary_unary(
        f"/google.cloud.tasks.v2.CloudTasks/{method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_type.FromString,
    )
    return await rpc(json_format.ParseDict(request, request_type()), timeout=30)


def details_of(error: grpc.aio.AioRpcError) -> list[Any]:
    """The google.rpc details of a gRPC error, unpacked."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    if raw is None:
        return []
    status = status_pb2.Status.FromString(raw if isinstance(raw, bytes) else raw.encode())
    assert (status.code, status.message) == (error.code().value[0], error.details())
    return [unpack(detail) for detail in status.details]


def unpack(detail: any_pb2.Any) -> Any:
    for kind in DETAIL_TYPES.values():
        if detail.Is(kind.DESCRIPTOR):
            message = kind()
            detail.Unpack(message)
            return message
    raise AssertionError(f"unexpected detail {detail.type_url}")


def recorded_detail(detail: dict[str, str]) -> Any:
    """A recorded detail (Go prototext) as the message it is."""
    return text_format.Parse(detail["template"], DETAIL_TYPES[detail["type"]]())


def test_every_golden_error_case_is_exercised_over_grpc() -> None:
    assert {case["name"] for case in ERRORS} == set(CASES) | set(GRPC_ONLY)


@pytest.mark.parametrize("case", ERRORS, ids=lambda c: str(c["name"]))
async def test_error_case_answers_as_production_over_grpc(
    make_front_emulator: MakeEmulator, case: dict[str, Any]
) -> None:
    too_large = case["category"] == "task-too-large"
    emu = await make_front_emulator(dispatch=False)
    *setup, last = (CASES | GRPC_ONLY)[case["name"]]
    async with grpc.aio.insecure_channel(emu.host) as channel:
        for step in setup:
            await call(channel, *as_grpc(step))
        if case["code"] == "OK":
            await call(channel, *as_grpc(last))
            return
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(channel, *as_grpc(last))
    error = raised.value
    assert error.code() == grpc.StatusCode[code_name(case["code"])], error
    assert error.details() == fill(case["template"])
    details = details_of(error)
    if too_large:
        # What the emulator adds (the measured size and the limit) is a detail of its own, after production's.
        *details, info = details
        assert isinstance(info, error_details_pb2.ErrorInfo) and info.domain == "deferred-emulator", info
        assert int(info.metadata["taskSize"]) > int(info.metadata["maxTaskSize"]) == CLOUD_TASKS_MAX_TASK_SIZE
    assert details == [recorded_detail(d) for d in case.get("details", [])]


def code_name(name: str) -> str:
    """``InvalidArgument`` (Go's spelling) -> ``INVALID_ARGUMENT``."""
    return "".join(f"_{c}" if c.isupper() and i else c for i, c in enumerate(name)).upper()


@pytest.mark.parametrize("case", load("happypath.json"), ids=lambda c: str(c["name"]))
async def test_created_task_echoes_headers_and_body_as_production_over_grpc(
    make_front_emulator: MakeEmulator, case: dict[str, Any]
) -> None:
    emu: Handle = await make_front_emulator(dispatch=False)
    body = case["createFull"]["body"]
    if case["requestType"] == "appengine":
        field, request = "appEngineHttpRequest", {"relativeUri": "/work", "headers": case["sent"], "body": body}
    else:
        field, request = "httpRequest", {"url": "https://example.com/", "headers": case["sent"], "body": body}
    queue = f"{PARENT}/queues/default"
    async with grpc.aio.insecure_channel(emu.host) as channel:
        created = await call(channel, "CreateTask", {"parent": queue, "task": {field: request}, "responseView": "FULL"})
        stages = {
            "createFull": created,
            "getBasic": await call(channel, "GetTask", {"name": created.name, "responseView": "BASIC"}),
            "getFull": await call(channel, "GetTask", {"name": created.name, "responseView": "FULL"}),
        }
    assert API.endswith(PARENT)
    for stage, answer in stages.items():
        recorded, ours = case[stage], json_format.MessageToDict(answer)[field]
        assert ours["headers"] == recorded["headers"], stage
        if "body" in recorded:
            assert base64.b64decode(ours.get("body", "")) == base64.b64decode(recorded["body"]), stage
        else:
            assert "body" not in ours, stage
