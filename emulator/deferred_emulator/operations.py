"""Batch task methods (BatchCreateTasks, BatchDeleteTasks) and the long-running operations they answer with.

Each batch runs to the end before the call returns, so its operation is done when the client first sees
it; a request that cannot be honoured is reported in the operation's ``failed_requests`` by its index
while the others go ahead, as Cloud Tasks does. Operations are kept in memory (the most recent
``MAX_OPERATIONS``), so ``GetOperation`` reads them back until the emulator stops.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import EmulatorError, InvalidArgument, NotFound
from .models import NewTask, Task

if TYPE_CHECKING:
    from .service import Emulator

#: Requests in one BatchCreateTasks, names in one BatchDeleteTasks (production's limits).
MAX_BATCH_CREATE = 100
MAX_BATCH_DELETE = 1000
#: Operations remembered for GetOperation.
MAX_OPERATIONS = 1000
CREATE, DELETE = "BatchCreateTasks", "BatchDeleteTasks"
#: google.rpc.Code numbers by name, for the statuses in ``failed_requests``.
RPC_CODE_NUMBERS = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
ABORTED = 10


def rpc_code(error: EmulatorError) -> int:
    """The google.rpc code number of an error."""
    return RPC_CODE_NUMBERS.get(error.rpc_status, 2)


@dataclass
class Operation:
    """A finished batch: what was created, what failed (by request index), and when."""

    id: str
    method: str
    queue: str
    start_us: int
    end_us: int
    total: int
    #: Tasks created, in request order (BatchCreateTasks), with the view each request asked for.
    tasks: list[Task] = field(default_factory=list)
    views: list[str] = field(default_factory=list)
    failures: dict[int, EmulatorError] = field(default_factory=dict)

    @property
    def state(self) -> str:
        """SUCCEEDED, or PARTIALLY_SUCCEEDED when a request failed (the enum names of both metadata types)."""
        return "PARTIALLY_SUCCEEDED" if self.failures else "SUCCEEDED"

    @property
    def error(self) -> tuple[int, str] | None:
        """The operation's error when every request failed (ABORTED, as production words it), else None."""
        if not self.failures or len(self.failures) < self.total:
            return None
        return ABORTED, (
            f"None of the requests succeeded, refer to {self.method}Metadata.failed_requests for individual"
            " error details"
        )


class Operations:
    """The batch methods over an Emulator, and the operations they left."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self._done: OrderedDict[str, Operation] = OrderedDict()

    def get(self, op_id: str) -> Operation:
        """A finished operation by id (404 once forgotten)."""
        op = self._done.get(op_id)
        if op is None:
            raise NotFound(f"Operation {op_id!r} was not found.")
        return op

    def clear(self) -> None:
        """Forget every operation."""
        self._done.clear()

    def _earlier(self, request_id: str, method: str) -> Operation | None:
        """The operation a retried request (same ``request_id``) already ran, if any."""
        op = self._done.get(request_id) if request_id else None
        if op is not None and op.method != method:
            raise InvalidArgument(f"requestId {request_id!r} names an operation of another method ({op.method}).")
        return op

    def _keep(self, op: Operation) -> Operation:
        self._done[op.id] = op
        while len(self._done) > MAX_OPERATIONS:
            self._done.popitem(last=False)
        return op

    async def batch_create(
        self,
        queue: str,
        items: Sequence[NewTask | EmulatorError],
        views: Sequence[str] = (),
        request_id: str = "",
    ) -> Operation:
        """Create tasks in one queue; a request that fails (given as its error, or refused) is reported by index."""
        earlier = self._earlier(request_id, CREATE)
        if earlier is not None:
            return earlier
        if not items:
            raise InvalidArgument("BatchCreateTasksRequest.requests is required.")
        if len(items) > MAX_BATCH_CREATE:
            raise InvalidArgument(f"The maximum number of requests is {MAX_BATCH_CREATE}; got {len(items)}.")
        emulator = self.emulator
        await emulator.get_queue(queue)
        start = emulator.now_us()
        op = Operation(request_id or uuid.uuid4().hex, CREATE, queue, start, start, len(items))
        checked: list[tuple[int, NewTask]] = []
        for index, item in enumerate(items):
            if isinstance(item, EmulatorError):
                op.failures[index] = item
                continue
            try:
                checked.append((index, await emulator.validate(item, start)))
            except EmulatorError as exc:
                op.failures[index] = exc
        created = await self._add(checked, op.failures)
        view_of = list(views) + ["BASIC"] * (len(items) - len(views))
        op.tasks = [task for _, task in created]
        op.views = [view_of[index] for index, _ in created]
        op.end_us = emulator.now_us()
        return self._keep(op)

    async def _add(
        self, checked: list[tuple[int, NewTask]], failures: dict[int, EmulatorError]
    ) -> list[tuple[int, Task]]:
        """Store the valid tasks: all in one go when none is refused, else one by one."""
        emulator = self.emulator
        if not checked:
            return []
        try:
            added = await emulator.store_tasks([new for _, new in checked])
            return [(index, task) for (index, _), task in zip(checked, added)]
        except EmulatorError:
            pass  # some name is taken (or the storage limit is reached): find out which, task by task
        created: list[tuple[int, Task]] = []
        for index, new in checked:
            try:
                created.append((index, (await emulator.store_tasks([new]))[0]))
            except EmulatorError as exc:
                failures[index] = exc
        return created

    async def batch_delete(self, queue: str, names: Sequence[str | EmulatorError], request_id: str = "") -> Operation:
        """Delete tasks of one queue by short name; a name that cannot be deleted is reported by index."""
        earlier = self._earlier(request_id, DELETE)
        if earlier is not None:
            return earlier
        if not names:
            raise InvalidArgument("BatchDeleteTasksRequest.names is required.")
        if len(names) > MAX_BATCH_DELETE:
            raise InvalidArgument(f"A maximum of {MAX_BATCH_DELETE} tasks can be deleted in a batch; got {len(names)}.")
        emulator = self.emulator
        await emulator.get_queue(queue, create=False)
        start = emulator.now_us()
        op = Operation(request_id or uuid.uuid4().hex, DELETE, queue, start, start, len(names))
        for index, name in enumerate(names):
            if isinstance(name, EmulatorError):
                op.failures[index] = name
                continue
            try:
                await emulator.delete_task(queue, name)
            except EmulatorError as exc:
                op.failures[index] = exc
        op.end_us = emulator.now_us()
        return self._keep(op)
