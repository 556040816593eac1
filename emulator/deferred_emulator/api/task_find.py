"""Finding a queue's tasks by name prefix and by the callable they run, and what a list row shows of that call.

The filter is our extension to the task list: ``filter=name:report- callable:send_welcome``. A name
prefix is a range on the (queue, name) index. A callable cannot be matched in SQL (the call is
inside a pickle that is read, never unpickled), so SQLite first keeps the bodies that contain each
dotted part of it, and those few are read here; a page reads at most ``SCAN_BUDGET`` of them, and
ends early with a page token when the budget runs out.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument
from ..models import Task, TaskState
from ..payload import call_summary
from ..service import Emulator

#: Most candidate bodies one page request reads when filtering by callable.
SCAN_BUDGET = 2000
#: Fetched from SQLite per round while filtering by callable.
SCAN_BATCH = 200
#: A deferred call whose payload was too large for the task names this; its body holds the real call.
STORED_APART = b"run_from_datastore"
FILTER_KEYS = ("name", "callable")
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class TaskFilter:
    """What a task list keeps: names starting with ``name``, calls whose callable contains ``callable``."""

    name: str = ""
    callable: str = ""

    def __bool__(self) -> bool:
        return bool(self.name or self.callable)

    def body_has(self) -> list[list[bytes]]:
        """Byte strings a matching body must hold (all of one group): the callable's dotted parts."""
        if not self.callable:
            return []
        parts = [part.encode() for part in self.callable.split(".") if part]
        return [parts, [STORED_APART]]

    def keeps(self, runs: dict[str, Any] | None) -> bool:
        """Whether a task whose call is ``runs`` (None: not a deferred call) passes the callable filter."""
        if not self.callable:
            return True
        return runs is not None and self.callable in runs["callable"]


def parse_filter(text: str) -> TaskFilter:
    """``name:PREFIX callable:TEXT`` (either, in any order; values may be quoted) into a TaskFilter."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise InvalidArgument(f"Invalid filter {text!r}: {exc}.") from exc
    found: dict[str, str] = {}
    for word in words:
        if word.upper() == "AND":
            continue
        key, sep, value = word.partition(":")
        if not sep or key not in FILTER_KEYS:
            example = "for example name:report- callable:send_welcome"
            raise InvalidArgument(f"Invalid filter term {word!r}: use name:PREFIX and callable:TEXT ({example}).")
        if key in found:
            raise InvalidArgument(f"Invalid filter: {key} is given twice.")
        found[key] = value
    name = found.get("name", "")
    if not _NAME_RE.match(name):
        raise InvalidArgument(f"Invalid filter: name:{name} cannot start a task name (letters, digits, - and _).")
    return TaskFilter(name=name, callable=found.get("callable", ""))


async def runs_of(emulator: Emulator, task: Task) -> dict[str, Any] | None:
    """What a deferred task calls (``callable``, ``argsSummary``), following a payload stored apart; else None."""
    runs: dict[str, Any] | None = call_summary(task.body)
    key = runs.get("entityKey") if runs else None
    if runs is not None and key:
        body = await emulator.store.get_entity(key)
        inner = call_summary(body) if body is not None else None
        if inner is not None:
            runs = {**inner, "entityKey": key}
    return runs


async def find_page(
    emulator: Emulator,
    queue: str,
    states: Sequence[TaskState] | None,
    size: int,
    after: tuple[int, int] | None,
    newest: bool,
    flt: TaskFilter,
) -> tuple[list[tuple[Task, dict[str, Any] | None]], tuple[int, int] | None]:
    """Up to ``size`` tasks with what they run, and where the next page starts (None: no more)."""
    store = emulator.store
    if not flt.callable:
        tasks = await store.list_tasks(queue, states, size + 1, after, newest, flt.name)
        rows = [(t, await runs_of(emulator, t)) for t in tasks[:size]]
        return rows, ((tasks[size - 1].eta_us, tasks[size - 1].id) if len(tasks) > size else None)
    kept: list[tuple[Task, dict[str, Any] | None]] = []
    scanned = 0
    cursor = after
    while scanned < SCAN_BUDGET:
        batch = await store.list_tasks(queue, states, SCAN_BATCH, cursor, newest, flt.name, flt.body_has())
        for task in batch:
            scanned += 1
            cursor = (task.eta_us, task.id)
            runs = await runs_of(emulator, task)
            if flt.keeps(runs):
                if len(kept) == size:
                    last = kept[-1][0]
                    return kept, (last.eta_us, last.id)
                kept.append((task, runs))
        if len(batch) < SCAN_BATCH:
            return kept, None
    # The budget ran out before the page filled: the next page goes on from the last body read.
    return kept, cursor
