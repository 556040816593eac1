"""defer(), defer_async() and transaction() against a real emulator (its dispatcher off: tasks stay to be inspected)."""

from __future__ import annotations

import base64
import pickle
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import deferred_client
import pytest
from deferred_client import (
    BadTransactionStateError,
    InvalidTaskNameError,
    TaskAlreadyExistsError,
    TaskRetryOptions,
    TombstonedTaskError,
    UnknownQueueError,
    defer,
    defer_async,
    invoke_member,
    run_from_datastore,
    transaction,
)
from deferred_client import client as client_module
from test_client_fixtures import LiveEmulator

pytest_plugins = ["test_client_fixtures"]

Start = Callable[..., LiveEmulator]


def noop(*args: Any, **kwargs: Any) -> None:
    """A task that does nothing."""


class Greeter:
    def hello(self, name: str) -> str:
        return f"hello {name}"


@pytest.fixture
def emulator(live_emulator: Start) -> LiveEmulator:
    """An emulator that keeps tasks (no dispatch), so tests can look at them."""
    return live_emulator(dispatch=False)


def payload_of(emulator: LiveEmulator, name: str, queue: str = "default") -> tuple[Any, ...]:
    status, data = emulator.task(queue, name)
    assert status == 200, data
    return tuple(pickle.loads(base64.b64decode(data["appEngineHttpRequest"]["body"])))


def test_defer_creates_a_task_carrying_the_pickled_call(emulator: LiveEmulator) -> None:
    # When a function is deferred
    before = datetime.now(timezone.utc)
    task = defer(noop, 1, "two", three=3)
    # Then the created task is returned: short name, queue, aware ETA of about now
    assert task.queue == "default" and task.name.isdigit() and task.entity_key is None
    assert task.eta.tzinfo is not None
    assert before - timedelta(seconds=5) < task.eta < datetime.now(timezone.utc) + timedelta(seconds=5)
    # And the emulator holds the App Engine request deferred sends
    status, data = emulator.task("default", task.name)
    request = data["appEngineHttpRequest"]
    assert request["relativeUri"] == "/_ah/queue/deferred"
    assert request["httpMethod"] == "POST"
    assert request["headers"]["Content-Type"] == "application/octet-stream"
    assert payload_of(emulator, task.name) == (noop, (1, "two"), {"three": 3})


def test_bound_methods_are_sent_as_invoke_member(emulator: LiveEmulator) -> None:
    task = defer(Greeter().hello, "you")
    func, args, _ = payload_of(emulator, task.name)
    assert func is invoke_member and args[1:] == ("hello", "you")


def test_task_options_reach_the_emulator(emulator: LiveEmulator) -> None:
    # Given every option App Engine's defer takes
    options = TaskRetryOptions(min_backoff_seconds=1, max_backoff_seconds=10, max_doublings=2, task_retry_limit=3)
    task = defer(
        noop,
        _countdown=120,
        _name="job-42",
        _target="worker",
        _retry_options=options,
        _url="/tasks/run",
        _headers={"X-Custom": "yes"},
    )
    # Then the task has them
    assert task.name == "job-42"
    assert timedelta(seconds=110) < task.eta - datetime.now(timezone.utc) < timedelta(seconds=130)
    _, data = emulator.task("default", "job-42")
    request = data["appEngineHttpRequest"]
    assert request["relativeUri"] == "/tasks/run"
    assert request["headers"]["X-Custom"] == "yes"
    assert request["appEngineRouting"]["service"] == "worker"
    assert data["retryConfig"]["maxAttempts"] == 4
    assert data["retryConfig"]["minBackoff"] == "1s" and data["retryConfig"]["maxBackoff"] == "10s"
    assert data["retryConfig"]["maxDoublings"] == 2


def test_eta_naive_is_utc(emulator: LiveEmulator) -> None:
    eta = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)
    assert defer(noop, _eta=eta.replace(tzinfo=None)).eta == eta
    assert defer(noop, _eta=eta.astimezone(timezone(timedelta(hours=-5)))).eta == eta


def test_url_none_uses_the_queue_url(emulator: LiveEmulator) -> None:
    task = defer(noop, _url=None)
    assert emulator.task("default", task.name)[1]["appEngineHttpRequest"]["relativeUri"] == "/_ah/queue/default"


def test_duplicate_and_tombstoned_names(emulator: LiveEmulator) -> None:
    # Given a named task still waiting
    defer(noop, _name="once", _countdown=600)
    # Then the same name again is TaskAlreadyExistsError (production's text, which does not repeat the name)
    with pytest.raises(TaskAlreadyExistsError, match="^Requested entity already exists$"):
        defer(noop, _name="once")
    # And a name whose task is gone (ran, gave up or was deleted) is TombstonedTaskError
    status, _ = emulator.call("DELETE", "/v2/projects/local-project/locations/us-central1/queues/default/tasks/once")
    assert status == 200
    with pytest.raises(TombstonedTaskError):
        defer(noop, _name="once")


def test_unknown_queue(emulator: LiveEmulator) -> None:
    with pytest.raises(UnknownQueueError, match="Queue does not exist"):
        defer(noop, _queue="nope")
    emulator.create_queue("mail")
    assert defer(noop, _queue="mail").queue == "mail"


def test_name_errors_are_caught_before_sending(emulator: LiveEmulator) -> None:
    with pytest.raises(InvalidTaskNameError):
        defer(noop, _name="white space")


def test_large_payload_is_stored_as_an_entity(emulator: LiveEmulator) -> None:
    # When the payload is over the emulator's limit (1 MiB here)
    big = b"x" * (1 << 20)
    task = defer(noop, big)
    # Then the payload is an entity and the task runs run_from_datastore(key)
    assert task.entity_key is not None and task.entity_key.startswith("dee_")
    func, args, kwargs = payload_of(emulator, task.name)
    assert (func, args, kwargs) == (run_from_datastore, (task.entity_key,), {})
    status, stored = emulator.call("GET", f"/_emulator/v1/entities/{task.entity_key}")
    assert status == 200 and pickle.loads(stored) == (noop, (big,), {})


def test_the_limit_comes_from_the_emulator(live_emulator: Start) -> None:
    live_emulator(dispatch=False, max_task_size=3000)
    assert defer(noop, b"x" * 2000).entity_key is None
    assert defer(noop, b"x" * 3000).entity_key is not None


def test_a_stale_cached_limit_falls_back_to_an_entity(live_emulator: Start) -> None:
    # Given a client that believes the limit is higher than the emulator's
    emulator = live_emulator(dispatch=False, max_task_size=3000)
    client_module._limits["http://" + emulator.host] = 102400
    # When a task is too large for the emulator, then it is spilled anyway, and the limit is learnt
    assert defer(noop, b"x" * 5000).entity_key is not None
    assert client_module._limits["http://" + emulator.host] == 3000


@pytest.fixture
def stored_keys(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Keys of the entities the client stores."""
    keys: list[str] = []
    put = client_module.EmulatorClient.put_entity

    def recording_put(self: client_module.EmulatorClient, data: bytes) -> str:
        keys.append(put(self, data))
        return keys[-1]

    monkeypatch.setattr(client_module.EmulatorClient, "put_entity", recording_put)
    return keys


def test_entity_is_removed_when_the_small_task_is_refused(emulator: LiveEmulator, stored_keys: list[str]) -> None:
    # Given a name in use
    defer(noop, _name="taken", _countdown=600)
    # When a large payload is deferred under that name
    with pytest.raises(TaskAlreadyExistsError):
        defer(noop, b"x" * 200_000, _name="taken")
    # Then the entity stored for it is deleted again
    [key] = stored_keys
    assert emulator.call("GET", f"/_emulator/v1/entities/{key}")[0] == 404
    assert len(emulator.tasks()) == 1


def test_transaction_adds_all_tasks_when_it_exits_cleanly(emulator: LiveEmulator) -> None:
    with transaction() as txn:
        first = defer(noop, 1, _transactional=True)
        defer(noop, b"y" * 200_000, _transactional=True)  # large: stored at commit
        defer(noop, 3)  # not transactional: added at once
        assert len(emulator.tasks()) == 1
    assert len(emulator.tasks()) == 3
    assert [t.name for t in txn.tasks][0] == first.name
    assert txn.tasks[1].entity_key is not None


def test_transaction_that_raises_adds_nothing(emulator: LiveEmulator, stored_keys: list[str]) -> None:
    with pytest.raises(RuntimeError), transaction():
        defer(noop, _transactional=True)
        defer(noop, b"z" * 200_000, _transactional=True)
        raise RuntimeError("rollback")
    assert emulator.tasks() == []
    assert stored_keys == []  # large payloads are stored only when the transaction commits


def test_transaction_is_all_or_nothing(emulator: LiveEmulator, stored_keys: list[str]) -> None:
    # Given a transaction whose last task goes to a queue that does not exist
    with pytest.raises(UnknownQueueError), transaction():
        defer(noop, _transactional=True)
        defer(noop, b"x" * 200_000, _transactional=True)
        defer(noop, _transactional=True, _queue="missing")
    # Then none was added, and the large payload stored for the batch is deleted
    assert emulator.tasks() == []
    [key] = stored_keys
    assert emulator.call("GET", f"/_emulator/v1/entities/{key}")[0] == 404


def test_transactional_rules(emulator: LiveEmulator) -> None:
    with pytest.raises(BadTransactionStateError, match="outside a transaction"):
        defer(noop, _transactional=True)
    with transaction():
        with pytest.raises(InvalidTaskNameError, match="cannot be named"):
            defer(noop, _name="n", _transactional=True)
        with pytest.raises(BadTransactionStateError, match="Nested"):
            transaction().__enter__()
    assert deferred_client.BadTransactionState is BadTransactionStateError


def test_transactions_are_per_thread(emulator: LiveEmulator) -> None:
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            defer(noop, _transactional=True)
        except BaseException as exc:
            errors.append(exc)

    with transaction():
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert isinstance(errors[0], BadTransactionStateError)


async def test_defer_async(emulator: LiveEmulator) -> None:
    task = await defer_async(noop, "async", _countdown=30, _name="from-async")
    assert task.name == "from-async"
    big = await defer_async(noop, b"x" * 200_000)
    assert big.entity_key is not None
    with pytest.raises(TaskAlreadyExistsError):
        await defer_async(noop, _name="from-async")
    with pytest.raises(UnknownQueueError):
        await defer_async(noop, _queue="nope")
    async with transaction():
        await defer_async(noop, _transactional=True)
        await defer_async(noop, b"x" * 200_000, _transactional=True)
    assert len(emulator.tasks()) == 4


def test_many_threads_defer_at_once(emulator: LiveEmulator) -> None:
    def work(i: int) -> None:
        for j in range(20):
            defer(noop, i, j)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(emulator.tasks()) == 160


def test_a_transaction_holds_at_most_100_tasks(emulator: LiveEmulator) -> None:
    with pytest.raises(deferred_client.TooManyTasksError), transaction():
        for _ in range(101):
            defer(noop, _transactional=True)
    assert emulator.tasks() == []
    with transaction() as txn:
        pass
    assert txn.tasks == []


async def test_async_transactions_are_all_or_nothing(emulator: LiveEmulator) -> None:
    async_keys: list[str] = []
    put = client_module.AsyncEmulatorClient.put_entity

    async def recording_put(self: client_module.AsyncEmulatorClient, data: bytes) -> str:
        async_keys.append(await put(self, data))
        return async_keys[-1]

    client_module.AsyncEmulatorClient.put_entity = recording_put  # type: ignore[method-assign]
    try:
        with pytest.raises(UnknownQueueError):
            async with transaction():
                await defer_async(noop, b"x" * 200_000, _transactional=True)
                await defer_async(noop, _transactional=True, _queue="missing")
        with pytest.raises(ZeroDivisionError):
            async with transaction():
                await defer_async(noop, _transactional=True)
                _ = 1 / 0
    finally:
        client_module.AsyncEmulatorClient.put_entity = put  # type: ignore[method-assign]
    assert emulator.tasks() == []
    [key] = async_keys
    assert emulator.call("GET", f"/_emulator/v1/entities/{key}")[0] == 404


async def test_aclose_closes_the_loops_connections(emulator: LiveEmulator) -> None:
    await defer_async(noop)
    await deferred_client.aclose()
    await deferred_client.aclose()  # twice is fine
    await defer_async(noop)  # and a new session is opened on demand
    assert len(emulator.tasks()) == 2


def test_an_answer_that_is_not_json_is_an_error() -> None:
    with pytest.raises(deferred_client.Error, match="not JSON"):
        client_module.Response(200, b"<html>").json()
