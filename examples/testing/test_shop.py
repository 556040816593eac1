"""The shop's deferred work, tested with the `deferred_emulator` fixture (no sleeping, no environment)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import deferred_client
import pytest
import shop
from deferred_emulator.testing import DeferredEmulator
from flask.testing import FlaskClient


@pytest.fixture
def client(deferred_emulator: DeferredEmulator) -> Iterator[FlaskClient]:
    """The shop, served in a thread so the emulator can deliver its tasks to it."""
    deferred_emulator.serve_wsgi(shop.app)
    yield shop.app.test_client()
    for done in (shop.RECEIPTS, shop.REMINDERS, shop.CHARGES):
        done.clear()
    shop.PROVIDER["up"] = True


def test_an_order_is_charged_and_receipted(client: FlaskClient, deferred_emulator: DeferredEmulator) -> None:
    # Given an order placed
    assert client.post("/orders/o-1").status_code == 202
    # When the due tasks run
    result = deferred_emulator.drain()
    # Then the card was charged and the receipt sent; the reminder waits for its hour
    assert (result.succeeded, result.failures) == (2, [])
    assert shop.CHARGES == ["o-1"]
    assert shop.RECEIPTS == ["o-1"]
    assert [task.queue for task in deferred_emulator.tasks()] == ["default"]


def test_the_review_reminder_comes_an_hour_later(client: FlaskClient, deferred_emulator: DeferredEmulator) -> None:
    # Given an order whose reminder is deferred by an hour
    client.post("/orders/o-2")
    deferred_emulator.drain()
    assert shop.REMINDERS == []
    # When an hour passes on the emulator's clock
    deferred_emulator.advance(timedelta(hours=1))
    deferred_emulator.drain()
    # Then the reminder has run
    assert shop.REMINDERS == ["o-2"]
    assert deferred_emulator.tasks() == []


def test_a_failing_charge_backs_off_then_gives_up(client: FlaskClient, deferred_emulator: DeferredEmulator) -> None:
    # Given a payment provider that is down
    shop.PROVIDER["up"] = False
    client.post("/orders/o-3")
    # When the charge fails once
    first = deferred_emulator.drain()
    assert [(f.task, f.status, f.will_retry) for f in first.failures] == [("charge-o-3", 500, True)]
    # Then it is retried after the 60 s minimum backoff, on the emulator's clock
    charge = deferred_emulator.task("charge-o-3")
    assert charge.retry_count == 1
    assert charge.eta - deferred_emulator.now() == timedelta(seconds=60)
    assert deferred_emulator.drain().dispatched == 0  # not due yet
    # When it fails a second time, past its retry limit
    deferred_emulator.advance(60)
    second = deferred_emulator.drain()
    assert [(f.task, f.status, f.will_retry) for f in second.failures] == [("charge-o-3", 500, False)]
    # Then it is kept as FAILED, with the app's last answer
    [failed] = deferred_emulator.failed()
    assert (failed.name, failed.state, failed.last_status, failed.retry_count) == ("charge-o-3", "FAILED", 500, 2)
    assert shop.CHARGES == []


def test_a_task_runs_inline(client: FlaskClient, deferred_emulator: DeferredEmulator) -> None:
    # Given an order whose tasks are queued
    client.post("/orders/o-4")
    # When the test runs the receipt task itself, as testbed's deferred.run(task.payload) did
    [receipt] = [task for task in deferred_emulator.tasks() if b"send_receipt" in task.payload]
    deferred_client.run(receipt.payload)
    # Then its work is done without the emulator delivering it
    assert shop.RECEIPTS == ["o-4"]
