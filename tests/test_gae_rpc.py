"""POST /rpc_http, message by message: the answers appengine-python-standard turns into its own results and errors."""

from __future__ import annotations

import base64
import json
import pickle
import time
from typing import Any

import pytest
from conftest import Handle, MakeEmulator, RecordingApp

pytest.importorskip("google.appengine.api", reason="needs the gae extra (appengine-python-standard)")

from deferred_emulator.api import gae
from deferred_emulator.api.gae_protocol import protos
from deferred_emulator.throughput import Throughput

pb = protos()
TQ = pb.taskqueue
ERR = TQ.TaskQueueServiceError
DS = pb.datastore
KIND = "_DeferredTaskEntity"


async def post(handle: Handle, body: bytes) -> tuple[int, bytes]:
    """POST raw bytes to /rpc_http."""
    async with handle.http.post(handle.url + "/rpc_http", data=body) as resp:
        return resp.status, await resp.read()


async def rpc(handle: Handle, service: str, method: str, request: Any) -> Any:
    """Make one call as the SDK does and return the decoded remote_api Response."""
    raw = request if isinstance(request, bytes) else request.SerializeToString()
    outer = pb.remote_api.Request(service_name=service, method=method, request=raw, request_id="ticket")
    status, body = await post(handle, outer.SerializeToString())
    assert status == 200, body
    return pb.remote_api.Response.FromString(body)


def add_request(queue: str = "default", name: str = "", url: str = "/work", namespace: str = "", **fields: Any) -> Any:
    """A TaskQueueAddRequest as the SDK fills it in."""
    fields.setdefault("eta_usec", int(time.time() * 1e6))
    add = TQ.TaskQueueAddRequest(queue_name=queue.encode(), task_name=name.encode(), url=url.encode(), **fields)
    add.header.add(key=b"X-AppEngine-Current-Namespace", value=namespace.encode())
    return add


async def bulk_add(handle: Handle, *adds: Any) -> Any:
    """BulkAdd and return the remote_api Response."""
    request = TQ.TaskQueueBulkAddRequest()
    request.add_request.extend(adds)
    return await rpc(handle, "taskqueue", "BulkAdd", request)


def results(response: Any) -> list[tuple[int, bytes]]:
    """(result, chosen_task_name) per task of a BulkAdd answer."""
    assert not response.HasField("application_error") and not response.HasField("rpc_error"), response
    answer = TQ.TaskQueueBulkAddResponse.FromString(response.response)
    return [(r.result, r.chosen_task_name) for r in answer.taskresult]


@pytest.fixture
async def quiet(make_emulator: MakeEmulator) -> Handle:
    """An emulator that keeps tasks (no dispatch)."""
    return await make_emulator(dispatch=False)


# -- bad input ------------------------------------------------------------------------------------


async def test_a_garbage_body_is_a_clear_400_and_the_server_lives_on(quiet: Handle) -> None:
    for body in (b"", b"\xff\xfe garbage", b"GET / HTTP/1.1", b'{"json": true}'):
        # When something that is not a remote_api Request arrives
        status, answer = await post(quiet, body)
        # Then the caller gets a Google-style error saying what was expected
        assert status == 400, answer
        error = json.loads(answer)["error"]
        assert error["status"] == "INVALID_ARGUMENT"
        assert "remote_api Request" in error["message"]
    # And the server still answers
    assert (await quiet.call("GET", "/_emulator/v1/health"))["ok"] is True


async def test_without_the_gae_extra_the_endpoint_says_what_to_install(
    quiet: Handle, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an emulator installed without appengine-python-standard
    def missing() -> Any:
        raise ImportError("No module named 'google.appengine'")

    monkeypatch.setattr(gae, "protos", missing)
    # When an app calls /rpc_http
    status, answer = await post(quiet, b"anything")
    # Then the answer names the extra to install
    assert status == 501
    assert "deferred-emulator[gae]" in json.loads(answer)["error"]["message"]


async def test_an_unparsable_inner_request_is_a_parse_error(quiet: Handle) -> None:
    # When the outer Request is fine but its BulkAdd request is not a protobuf
    response = await rpc(quiet, "taskqueue", "BulkAdd", b"\xff\xff\xff")
    # Then the answer is rpc_error PARSE_ERROR (the SDK raises ArgumentError) naming the call
    assert response.rpc_error.code == 2
    assert "taskqueue.BulkAdd" in response.rpc_error.detail
    # And an add request missing its required fields is refused the same way
    incomplete = TQ.TaskQueueBulkAddRequest()
    incomplete.add_request.add(queue_name=b"default")
    response = await rpc(quiet, "taskqueue", "BulkAdd", incomplete.SerializePartialToString())
    assert response.rpc_error.code == 2
    assert "required" in response.rpc_error.detail


async def test_unsupported_calls_are_call_not_found_naming_them(quiet: Handle) -> None:
    # When the app calls a service or method the emulator does not offer
    for service, method in (("memcache", "Get"), ("taskqueue", "QueryAndOwnTasks"), ("datastore_v3", "RunQuery")):
        response = await rpc(quiet, service, method, b"")
        # Then the SDK gets CallNotFoundError with a detail naming the call
        assert response.rpc_error.code == 1
        assert f"{service}.{method}()" in response.rpc_error.detail


async def test_datastore_calls_on_other_kinds_are_refused(quiet: Handle) -> None:
    # Given a Put of an ordinary entity
    request = DS.PutRequest()
    entity = request.entity.add()
    entity.key.app = "dev~app"
    entity.key.path.element.add(type="Greeting", name="hello")
    entity.entity_group.SetInParent()
    response = await rpc(quiet, "datastore_v3", "Put", request)
    # Then the answer is CallNotFound naming the kind
    assert response.rpc_error.code == 1
    assert "Greeting" in response.rpc_error.detail and KIND in response.rpc_error.detail


# -- taskqueue ------------------------------------------------------------------------------------


async def test_bulk_add_names_unnamed_tasks_and_keeps_order(quiet: Handle) -> None:
    # Given an unnamed task and a named one in one call
    answer = results(await bulk_add(quiet, add_request(body=b"a"), add_request(name="second", body=b"b")))
    # Then each gets OK, in order, and only the unnamed one a chosen name
    (first_code, chosen), (second_code, no_name) = answer
    assert (first_code, second_code) == (ERR.OK, ERR.OK)
    assert chosen and no_name == b""
    tasks = {t.name: t for t in await quiet.emulator.list_tasks("default")}
    assert set(tasks) == {chosen.decode(), "second"}
    assert tasks["second"].body == b"b"
    assert tasks["second"].headers == {"X-AppEngine-Current-Namespace": ""}


async def test_bulk_add_maps_per_task_problems_to_their_codes(quiet: Handle) -> None:
    now_us = int(time.time() * 1e6)
    cases = [
        (add_request(name="bad name!"), ERR.INVALID_TASK_NAME),
        (add_request(eta_usec=now_us + 31 * 86400 * 10**6), ERR.INVALID_ETA),
        (add_request(body=b"x" * 102400), ERR.TASK_TOO_LARGE),
        (add_request(url="relative"), ERR.INVALID_URL),
    ]
    for add, code in cases:
        # When one bad task travels with a good one
        answer = results(await bulk_add(quiet, add_request(name="fine"), add))
        # Then the bad one carries its code, the good one is SKIPPED, and nothing is added
        assert [r for r, _ in answer] == [ERR.SKIPPED, code]
    assert await quiet.emulator.list_tasks("default") == []


async def test_bulk_add_refuses_used_names_task_by_task(quiet: Handle) -> None:
    # Given a task named "once"
    assert results(await bulk_add(quiet, add_request(name="once")))[0][0] == ERR.OK
    # When it is added again alongside a new one
    answer = results(await bulk_add(quiet, add_request(name="once"), add_request(name="new")))
    # Then the used name fails alone (TaskAlreadyExistsError) and the new task is added
    assert [r for r, _ in answer] == [ERR.TASK_ALREADY_EXISTS, ERR.OK]
    # And once deleted, the name is tombstoned
    await quiet.emulator.delete_task("default", "once")
    assert results(await bulk_add(quiet, add_request(name="once")))[0][0] == ERR.TOMBSTONED_TASK


async def test_bulk_add_to_an_unknown_queue_is_an_application_error(quiet: Handle) -> None:
    response = await bulk_add(quiet, add_request(queue="nowhere"))
    assert response.application_error.code == ERR.UNKNOWN_QUEUE
    assert "nowhere" in response.application_error.detail


async def test_delete_purge_stats_and_query(quiet: Handle) -> None:
    # Given three tasks
    await bulk_add(quiet, *(add_request(name=f"t{i}", body=b"x" * i) for i in range(3)))
    # When one is deleted, twice, and a name that never existed too
    request = TQ.TaskQueueDeleteRequest(queue_name=b"default", task_name=[b"t0", b"t0", b"never"])
    response = await rpc(quiet, "taskqueue", "Delete", request)
    # Then: OK, then tombstoned, then unknown
    assert list(TQ.TaskQueueDeleteResponse.FromString(response.response).result) == [
        ERR.OK,
        ERR.TOMBSTONED_TASK,
        ERR.UNKNOWN_TASK,
    ]
    # And the statistics and the query see the two left
    response = await rpc(
        quiet, "taskqueue", "FetchQueueStats", TQ.TaskQueueFetchQueueStatsRequest(queue_name=[b"default"])
    )
    [stats] = TQ.TaskQueueFetchQueueStatsResponse.FromString(response.response).queuestats
    assert stats.num_tasks == 2 and stats.oldest_eta_usec > 0
    response = await rpc(
        quiet, "taskqueue", "QueryTasks", TQ.TaskQueueQueryTasksRequest(queue_name=b"default", max_rows=10)
    )
    found = TQ.TaskQueueQueryTasksResponse.FromString(response.response).task
    assert sorted((t.task_name, t.body_size) for t in found) == [(b"t1", 1), (b"t2", 2)]
    # When the queue is purged
    await rpc(quiet, "taskqueue", "PurgeQueue", TQ.TaskQueuePurgeQueueRequest(queue_name=b"default"))
    # Then it is empty, and an unknown queue is reported as such
    assert await quiet.emulator.list_tasks("default") == []
    response = await rpc(quiet, "taskqueue", "PurgeQueue", TQ.TaskQueuePurgeQueueRequest(queue_name=b"gone"))
    assert response.application_error.code == ERR.UNKNOWN_QUEUE


async def test_tasks_added_here_are_delivered_as_app_engine_sends_them(
    emulator: Handle, app_server: RecordingApp
) -> None:
    # Given a task with the SDK's namespace header
    add = add_request(name="delivered", body=b"payload", namespace="tenant-a")
    add.header.add(key=b"Host", value=b"app.example")
    results(await bulk_add(emulator, add))
    # When it is delivered
    [req] = await app_server.wait_for(1)
    # Then it carries the task's own headers, the task metadata, and the Task Queue address
    assert req.path == "/work" and req.body == b"payload"
    assert req.headers["X-AppEngine-Current-Namespace"] == "tenant-a"
    assert req.headers["X-AppEngine-TaskName"] == "delivered"
    assert req.headers["X-AppEngine-User-IP"] == "0.1.0.2"
    assert req.headers["Host"] != "app.example"


# -- datastore_v3 ---------------------------------------------------------------------------------


def deferred_entity(data: bytes, app: str = "dev~app") -> Any:
    """A PutRequest for a _DeferredTaskEntity, as google.appengine.ext.db sends it."""
    request = DS.PutRequest()
    entity = request.entity.add()
    entity.key.app = app
    entity.key.path.element.add(type=KIND)
    entity.entity_group.SetInParent()
    prop = entity.raw_property.add(meaning=14, name="data", multiple=False)
    prop.value.stringValue = data
    return request


async def test_put_get_delete_of_deferred_entities(quiet: Handle) -> None:
    # When a _DeferredTaskEntity is put
    response = await rpc(quiet, "datastore_v3", "Put", deferred_entity(b"pickled" * 1000))
    [key] = DS.PutResponse.FromString(response.response).key
    # Then its key is complete and it lives in the emulator's entities table
    assert key.app == "dev~app" and key.path.element[0].id > 0
    [(name, size, _, _)] = await quiet.emulator.store.list_entities()
    assert size == 7000 and await quiet.emulator.get_entity(name) == b"pickled" * 1000
    # When it is read back
    response = await rpc(quiet, "datastore_v3", "Get", DS.GetRequest(key=[key]))
    [found] = DS.GetResponse.FromString(response.response).entity
    # Then the blob property comes back under the same key
    assert found.entity.key == key
    assert [(p.name, p.value.stringValue) for p in found.entity.raw_property] == [("data", b"pickled" * 1000)]
    # When it is deleted, then read again
    await rpc(quiet, "datastore_v3", "Delete", DS.DeleteRequest(key=[key]))
    response = await rpc(quiet, "datastore_v3", "Get", DS.GetRequest(key=[key]))
    # Then the answer is "not found": the key without an entity
    [missing] = DS.GetResponse.FromString(response.response).entity
    assert not missing.HasField("entity") and missing.key == key
    assert await quiet.emulator.store.list_entities() == []


async def test_a_deferred_task_naming_an_entity_takes_it_along_when_deleted(quiet: Handle) -> None:
    # Given an entity and the small task deferred queues to run it (pickle of run_from_datastore)
    response = await rpc(quiet, "datastore_v3", "Put", deferred_entity(b"big"))
    [key] = DS.PutResponse.FromString(response.response).key
    text = base64.urlsafe_b64encode(key.SerializeToString()).rstrip(b"=").decode()
    body = pickle.dumps(("google.appengine.ext.deferred.deferred.run_from_datastore", (text,), {}))
    results(await bulk_add(quiet, add_request(name="runner", body=body)))
    # When the task is deleted
    await quiet.emulator.delete_task("default", "runner")
    # Then its entity went with it
    assert await quiet.emulator.store.list_entities() == []


# -- transactions ---------------------------------------------------------------------------------


async def begin(handle: Handle) -> Any:
    response = await rpc(handle, "datastore_v3", "BeginTransaction", DS.BeginTransactionRequest(app="dev~app"))
    return DS.Transaction.FromString(response.response)


async def test_transactional_tasks_wait_for_commit(quiet: Handle) -> None:
    # Given a transaction with a task added in it
    txn = await begin(quiet)
    answer = results(await bulk_add(quiet, add_request(transaction=txn)))
    assert answer[0][0] == ERR.OK and answer[0][1]
    # Then nothing is queued before the commit
    assert await quiet.emulator.list_tasks("default") == []
    # When it commits
    await rpc(quiet, "datastore_v3", "Commit", txn)
    # Then the task is queued under the name the SDK was given
    assert [t.name for t in await quiet.emulator.list_tasks("default")] == [answer[0][1].decode()]
    # And a second commit of the same handle is refused
    assert (await rpc(quiet, "datastore_v3", "Commit", txn)).application_error.code == 1


async def test_rollback_drops_tasks_and_six_tasks_are_too_many(quiet: Handle) -> None:
    # Given a transaction that rolls back
    txn = await begin(quiet)
    results(await bulk_add(quiet, add_request(transaction=txn)))
    await rpc(quiet, "datastore_v3", "Rollback", txn)
    # Then its task never appears
    assert await quiet.emulator.list_tasks("default") == []
    # When a transaction carries more than five tasks
    txn = await begin(quiet)
    response = await bulk_add(quiet, *(add_request(transaction=txn) for _ in range(6)))
    # Then the SDK gets a datastore error (DATASTORE_ERROR + BAD_REQUEST)
    assert response.application_error.code == ERR.DATASTORE_BAD_REQUEST
    assert "maximum allowed 5" in response.application_error.detail


async def test_stats_count_the_last_minute_and_hour_of_deliveries(
    make_emulator: MakeEmulator, app_server: RecordingApp
) -> None:
    # Given a task delivered twenty minutes ago (as the dispatcher's clock tells) and one delivered now
    emulator = await make_emulator(app_url=app_server.url, dispatch=False)
    offset = [1200.0]
    emulator.dispatcher.throughput = Throughput(lambda: time.monotonic() - offset[0])
    await bulk_add(emulator, add_request(name="a"))
    assert (await emulator.drain())["succeeded"] == 1
    offset[0] = 0.0
    await bulk_add(emulator, add_request(name="b"))
    assert (await emulator.drain())["succeeded"] == 1
    # When the statistics are fetched
    response = await rpc(
        emulator, "taskqueue", "FetchQueueStats", TQ.TaskQueueFetchQueueStatsRequest(queue_name=[b"default"])
    )
    [stats] = TQ.TaskQueueFetchQueueStatsResponse.FromString(response.response).queuestats
    # Then the minute counts one and the hour both
    assert stats.scanner_info.executed_last_minute == 1
    assert stats.scanner_info.executed_last_hour == 2
