"""Coroutines run at once, in the caller's turn of the loop, and given to a Task only if they have to wait.

Most of the API's calls never wait (the store's statements run in the loop's thread): starting a Task
for each, and waiting a turn of the loop for it, cost as much as parsing the request.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Generator
from typing import Any


def run_eagerly(coro: Coroutine[Any, Any, None]) -> asyncio.Future[None] | None:
    """Run ``coro`` until it first waits: None if it finished, else the Task that carries it on."""
    try:
        waiting_for = coro.send(None)
    except StopIteration:
        return None
    return asyncio.ensure_future(_carry_on(coro, waiting_for))


@types.coroutine
def _carry_on(coro: Coroutine[Any, Any, None], waiting_for: Any) -> Generator[Any, Any, None]:
    """Go on with a coroutine started by hand, which yielded ``waiting_for``, as a Task would have run it:
    what it yields goes to the Task, what the Task sends or throws goes back in."""
    while True:
        try:
            sent = yield waiting_for
        except BaseException as exc:  # cancelled, say: the coroutine decides
            try:
                waiting_for = coro.throw(exc)
            except StopIteration:
                return
            continue
        try:
            waiting_for = coro.send(sent)
        except StopIteration:
            return
