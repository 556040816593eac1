"""Transactional tasks on Cloud Tasks: BatchCreateTasks answers with a long-running operation that the client
polls, and a batch that partly fails raises the failure while the created tasks stay.

A small aiohttp server plays Cloud Tasks here, because the emulator finishes every batch before it answers
and its requests rarely fail one by one; it answers exactly as the REST reference describes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import deferred_client
import pytest
from aiohttp import web
from deferred_client import TaskAlreadyExistsError, defer, transaction
from test_client_fixtures import AiohttpThread
from test_client_production_fixtures import TOKEN, FixedToken

pytest_plugins = ["test_client_fixtures"]

PARENT = "projects/p/locations/l"


class SlowBatches:
    """Answers batchCreate with an operation that is done on the second GetOperation; request 1 fails."""

    def __init__(self) -> None:
        self.polls = 0
        self.seen: list[tuple[str, str, str | None]] = []
        self.requests: list[dict[str, Any]] = []

    async def batch_create(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.path, request.headers.get("Authorization")))
        self.requests = (await request.json())["requests"]
        return web.json_response({"name": f"{PARENT}/operations/op1", "done": False})

    async def get_operation(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.path, request.headers.get("Authorization")))
        self.polls += 1
        if self.polls < 2:
            return web.json_response({"name": f"{PARENT}/operations/op1", "done": False})
        created = [{**r["task"], "scheduleTime": "2030-01-01T00:00:00Z"} for i, r in enumerate(self.requests) if i != 1]
        failed = {"1": {"code": 6, "message": "Requested entity already exists"}}
        return web.json_response(
            {
                "name": f"{PARENT}/operations/op1",
                "done": True,
                "metadata": {"state": "PARTIALLY_SUCCEEDED", "failedRequests": failed},
                "response": {"tasks": created},
            }
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(f"/v2/{PARENT}/queues/{{queue}}/tasks:batchCreate", self.batch_create)
        app.router.add_get(f"/v2/{PARENT}/operations/{{op}}", self.get_operation)
        return app


@pytest.fixture
def cloud(aiohttp_thread: Callable[[web.Application], AiohttpThread], configured: None) -> Iterator[SlowBatches]:
    fake = SlowBatches()
    server = aiohttp_thread(fake.app())
    deferred_client.configure(
        backend="cloudtasks", cloud_tasks_url=server.url, project="p", location="l", credentials=FixedToken()
    )
    yield fake


def test_the_operation_is_polled_and_a_partial_failure_is_raised_with_what_was_created(cloud: SlowBatches) -> None:
    with pytest.raises(TaskAlreadyExistsError, match=r"1 of 3 tasks failed, 2 were created") as caught:
        with transaction():
            first = defer(len, "a", _transactional=True)
            defer(len, "b", _transactional=True)
            third = defer(len, "c", _transactional=True)
    created = caught.value.created  # type: ignore[attr-defined]
    assert [t and t.name for t in created] == [first.name, None, third.name]
    # One batchCreate for the queue, then GetOperation until it was done, each with the bearer token
    assert [path.rsplit("/", 1)[1] for _, path, _ in cloud.seen] == ["tasks:batchCreate", "op1", "op1"]
    assert {auth for _, _, auth in cloud.seen} == {f"Bearer {TOKEN}"}
