"""Adds yield to deliveries while due tasks wait for a slot; otherwise they are not metered at all."""

from __future__ import annotations

import asyncio
import time

from conftest import Handle, MakeEmulator, RecordingApp
from deferred_emulator.ingestgate import BURST_S, IngestGate


class Clocks:
    """The real clock, plus time the test adds by hand (what an add seems to take)."""

    def __init__(self) -> None:
        self.cpu = 0.0

    def __call__(self) -> float:
        return time.perf_counter() + self.cpu


def gate(clocks: Clocks, share: float = 0.5) -> IngestGate:
    return IngestGate(share, clock=clocks)


async def test_adds_are_not_metered_while_deliveries_keep_up() -> None:
    clocks = Clocks()
    g = gate(clocks)
    for _ in range(100):
        since = await g.admit()
        clocks.cpu += 0.01  # far over any credit, were it counted
        g.spent(since)
    assert g.delayed == 0


async def test_while_deliveries_are_behind_adds_wait_for_credit_and_go_in_order() -> None:
    # Given deliveries behind, and an add that spent more than the saved-up credit
    clocks = Clocks()
    g = gate(clocks, share=0.5)
    g.set_busy(True)
    since = await g.admit()
    clocks.cpu += BURST_S  # times OVERHEAD: well past the credit
    g.spent(since)
    # When three more adds come at once
    order: list[int] = []

    async def add(i: int) -> None:
        await g.admit()
        order.append(i)

    adds = [asyncio.create_task(add(i)) for i in range(3)]
    await asyncio.sleep(0)
    # Then they wait
    assert order == [] and g.delayed == 3
    # Then, as wall time passes and credit comes back, they go in the order they came
    async with asyncio.timeout(2):
        await asyncio.gather(*adds)
    assert order == [0, 1, 2]


async def test_when_deliveries_catch_up_every_waiting_add_goes_on_at_once() -> None:
    clocks = Clocks()
    g = gate(clocks)
    g.set_busy(True)
    since = await g.admit()
    clocks.cpu += 1.0
    g.spent(since)  # deep in debt: without a catch-up these would wait about 6 s
    adds = [asyncio.create_task(g.admit()) for _ in range(5)]
    await asyncio.sleep(0)
    assert not any(a.done() for a in adds)
    g.set_busy(False)
    async with asyncio.timeout(1):
        await asyncio.gather(*adds)


async def test_a_cancelled_waiting_add_leaves_the_line() -> None:
    clocks = Clocks()
    g = gate(clocks)
    g.set_busy(True)
    since = await g.admit()
    clocks.cpu += 1.0
    g.spent(since)
    first = asyncio.create_task(g.admit())
    second = asyncio.create_task(g.admit())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    g.set_busy(False)
    async with asyncio.timeout(1):
        await second
    assert first.cancelled()


async def test_the_dispatcher_says_it_is_behind_while_due_tasks_wait_for_a_slot(
    make_emulator: MakeEmulator, app_server: RecordingApp
) -> None:
    # Given an emulator with two delivery slots (one for a queue alone) and an app that holds every request
    emulator: Handle = await make_emulator(app_url=app_server.url, ignore_rate_limits=True, max_in_flight=2)
    app_server.hold = asyncio.Event()
    gate_ = emulator.emulator.gate
    # When five tasks due now are added
    for _ in range(5):
        await emulator.add()
    await app_server.wait_for(1, timeout=5)
    # Then the dispatcher is behind: adds are metered
    async with asyncio.timeout(2):
        while not gate_.busy:
            await asyncio.sleep(0.01)
    # When the app answers
    app_server.hold.set()
    await app_server.wait_for(5, timeout=5)
    # Then, every task delivered, it has caught up and adds go unmetered again
    async with asyncio.timeout(2):
        while gate_.busy:
            await asyncio.sleep(0.01)
