"""Queue settings through the Cloud Tasks JSON: shown, changed with PATCH, validated with production's texts."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import API, Handle, MakeEmulator
from deferred_emulator.models import QueueState, RetryConfig

PARENT = API.removeprefix("/v2/")

#: Production's answers, recorded against Cloud Tasks (conformance errors.json, queue-config cases).
REFUSED = [
    ({"rateLimits": {"maxDispatchesPerSecond": -1}}, "RateLimits.maxDispatchesPerSecond cannot be negative."),
    (
        {"rateLimits": {"maxDispatchesPerSecond": 501}},
        "RateLimits.maxDispatchesPerSecond must be less than or equal to 500.",
    ),
    ({"rateLimits": {"maxConcurrentDispatches": -1}}, "RateLimits.maxConcurrentDispatches cannot be negative."),
    (
        {"rateLimits": {"maxConcurrentDispatches": 5001}},
        "RateLimits.maxConcurrentDispatches must be less than or equal to 5000.",
    ),
    ({"retryConfig": {"maxAttempts": -2}}, "RetryConfig.maxAttempts must be greater or equal to -1."),
    ({"retryConfig": {"maxDoublings": -1}}, "RetryConfig.maxDoublings cannot be negative."),
    ({"retryConfig": {"minBackoff": "-1s"}}, "RetryConfig.minBackoff cannot be negative."),
    (
        {"retryConfig": {"minBackoff": "10s", "maxBackoff": "5s"}},
        "RetryConfig.minBackoff must be less than or equal to RetryConfig.maxBackoff.",
    ),
]
#: The same settings just inside the rules.
ACCEPTED = [
    {"rateLimits": {"maxDispatchesPerSecond": 0}},
    {"rateLimits": {"maxDispatchesPerSecond": 500}},
    {"rateLimits": {"maxConcurrentDispatches": 0}},
    {"rateLimits": {"maxConcurrentDispatches": 5000}},
    {"retryConfig": {"maxAttempts": -1}},
    {"retryConfig": {"maxDoublings": 0}},
    {"retryConfig": {"minBackoff": "0s"}},
    {"retryConfig": {"minBackoff": "5s", "maxBackoff": "5s"}},
    # Output only: production ignores it, negative or not
    {"rateLimits": {"maxBurstSize": -1}},
]


@pytest.fixture
async def emu(make_emulator: MakeEmulator) -> Handle:
    return await make_emulator(dispatch=False)


def mask_of(body: dict[str, Any]) -> str:
    return ",".join(f"{outer}.{inner}" for outer, fields in body.items() for inner in fields)


@pytest.mark.parametrize(("body", "message"), REFUSED)
async def test_create_refuses_with_productions_text(emu: Handle, body: dict[str, Any], message: str) -> None:
    answer = await emu.call("POST", f"{API}/queues", {"name": f"{PARENT}/queues/q", **body}, expect=400)
    assert answer["error"] == {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}
    # and the queue was not created
    await emu.call("GET", f"{API}/queues/q", expect=404)


@pytest.mark.parametrize(("body", "message"), REFUSED)
async def test_patch_refuses_with_productions_text(emu: Handle, body: dict[str, Any], message: str) -> None:
    before = emu.emulator.queues["default"]
    url = f"{API}/queues/default?updateMask={mask_of(body)}"
    answer = await emu.call("PATCH", url, body, expect=400)
    assert answer["error"]["message"] == message
    assert emu.emulator.queues["default"] == before


@pytest.mark.parametrize("body", ACCEPTED)
async def test_values_just_inside_are_accepted(emu: Handle, body: dict[str, Any]) -> None:
    await emu.call("POST", f"{API}/queues", {"name": f"{PARENT}/queues/q", **body})
    await emu.call("PATCH", f"{API}/queues/default?updateMask={mask_of(body)}", body)


async def test_max_burst_size_is_output_only(emu: Handle) -> None:
    # Given the default queue (bucket 5)
    # When a PATCH tries to set the burst size
    shown = await emu.call(
        "PATCH", f"{API}/queues/default?updateMask=rateLimits.maxBurstSize", {"rateLimits": {"maxBurstSize": 50}}
    )
    # Then nothing changes: the bucket comes from queue.yaml
    assert shown["rateLimits"]["maxBurstSize"] == 5
    assert emu.emulator.queues["default"].bucket_size == 5


async def test_patch_changes_rate_and_retry(emu: Handle) -> None:
    # When rate, concurrency and retry settings are patched
    body = {
        "rateLimits": {"maxDispatchesPerSecond": 20, "maxConcurrentDispatches": 4},
        "retryConfig": {"maxAttempts": 5, "maxRetryDuration": "600s", "minBackoff": "1s", "maxBackoff": "30s"},
    }
    shown = await emu.call("PATCH", f"{API}/queues/default?updateMask=rateLimits,retryConfig", body)
    # Then the JSON and the engine both carry the new settings
    assert shown["rateLimits"] == {"maxDispatchesPerSecond": 20.0, "maxBurstSize": 5, "maxConcurrentDispatches": 4}
    assert shown["retryConfig"] == {
        "maxAttempts": 5,
        "maxRetryDuration": "600s",
        "minBackoff": "1s",
        "maxBackoff": "30s",
        "maxDoublings": 16,
    }
    queue = emu.emulator.queues["default"]
    assert (queue.rate_per_s, queue.max_concurrent) == (20, 4)
    assert queue.retry == RetryConfig(retry_limit=4, age_limit_s=600, min_backoff_s=1, max_backoff_s=30)
    # And a masked PATCH of one retry field keeps the others
    shown = await emu.call(
        "PATCH", f"{API}/queues/default?updateMask=retryConfig.maxDoublings", {"retryConfig": {"maxDoublings": 2}}
    )
    assert shown["retryConfig"]["maxDoublings"] == 2
    assert shown["retryConfig"]["maxAttempts"] == 5
    assert shown["rateLimits"]["maxDispatchesPerSecond"] == 20


async def test_state_through_pause_and_resume(emu: Handle) -> None:
    assert (await emu.call("GET", f"{API}/queues/default"))["state"] == "RUNNING"
    assert (await emu.call("POST", f"{API}/queues/default:pause", {}))["state"] == "PAUSED"
    assert emu.emulator.queues["default"].state is QueueState.PAUSED
    assert (await emu.call("GET", f"{API}/queues/default"))["state"] == "PAUSED"
    assert (await emu.call("POST", f"{API}/queues/default:resume", {}))["state"] == "RUNNING"
