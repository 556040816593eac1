"""gRPC calls that go wrong: bad messages, unknown methods and the emulator's own failures answer a status."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest
from conftest import API, MakeEmulator
from deferred_emulator.api.grpc import cloudtasks as grpc_cloudtasks
from google.cloud import tasks_v2

QUEUE = f"{API.removeprefix('/v2/')}/queues/default"


def raw_call(channel: grpc.aio.Channel, method: str) -> Any:
    return channel.unary_unary(
        f"/google.cloud.tasks.v2.CloudTasks/{method}",
        request_serializer=lambda data: data,
        response_deserializer=lambda data: data,
    )


async def test_garbage_bytes_and_unknown_methods_get_a_status_and_the_server_goes_on(
    make_front_emulator: MakeEmulator,
) -> None:
    emu = await make_front_emulator(dispatch=False)
    async with grpc.aio.insecure_channel(emu.host) as channel:
        # Bytes that are not a GetQueueRequest
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await raw_call(channel, "GetQueue")(b"\xff\xff\xff\xff", timeout=10)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert raised.value.details() == "The request is not a valid google.cloud.tasks.v2.GetQueueRequest message."
        # A method no service has
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await raw_call(channel, "NoSuchMethod")(b"", timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # And a good call still works
        request = tasks_v2.GetQueueRequest(name=QUEUE)
        answer = await raw_call(channel, "GetQueue")(tasks_v2.GetQueueRequest.serialize(request), timeout=10)
        assert tasks_v2.Queue.deserialize(answer).name == QUEUE


async def test_a_failure_of_the_emulator_is_internal_and_logged(
    make_front_emulator: MakeEmulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    emu = await make_front_emulator(dispatch=False)

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    # The handlers are looked up when the server starts: break the emulator under it instead.
    monkeypatch.setattr(emu.emulator, "get_queue", broken)
    request = tasks_v2.GetQueueRequest(name=QUEUE)
    with caplog.at_level(logging.ERROR, logger="deferred_emulator.api.grpc.status"):
        async with grpc.aio.insecure_channel(emu.host) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await raw_call(channel, "GetQueue")(tasks_v2.GetQueueRequest.serialize(request), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert raised.value.details() == "Internal error in the emulator; see its log."
    assert "disk on fire" in caplog.text
    assert grpc_cloudtasks.get_queue.__doc__ == "GetQueue."
