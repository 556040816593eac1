"""``datastore_v3`` over /rpc_http: the ``_DeferredTaskEntity`` kind and transactions that carry tasks.

``deferred.defer`` stores payloads over 100 KiB as a ``_DeferredTaskEntity`` (one unindexed blob
property, ``data``) and queues a small task that reads it back, runs it and deletes it. These
entities live in the emulator's entities table, next to the large payloads ``deferred_client``
stores, so the console, purges and give-ups treat both alike. Transactions exist here only to
carry transactional tasks: they are enqueued on Commit and dropped on Rollback.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import pickletools
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from ..models import NewTask, Task
from ..service import Emulator
from .gae_protocol import CALL_NOT_FOUND, ApplicationError, Handler, RpcError, parse_message, protos, unsupported

KIND = "_DeferredTaskEntity"
#: datastore_v3 Error codes.
BAD_REQUEST = 1
INTERNAL_ERROR = 3
#: Transactional tasks per transaction (App Engine's limit).
MAX_TASKS_PER_TRANSACTION = 5
#: A transaction nobody commits or rolls back is forgotten after this long (production: 60 s).
TRANSACTION_TTL_S = 120.0
MAX_OPEN_TRANSACTIONS = 1000
#: Entity.Property.Meaning BLOB, what db.BlobProperty stores.
BLOB = 14
#: Datastore ids are positive int64; keep them within 53 bits so JavaScript consoles show them exactly.
MAX_ID = 2**53
#: A db.Key's str(): urlsafe base64 of the Reference, without padding.
URLSAFE_KEY_RE = re.compile(r"[A-Za-z0-9_-]{16,700}\Z")


def entity_key_of(ref: Any, method: str) -> str:
    """The entities-table key of a complete ``_DeferredTaskEntity`` Reference."""
    kinds = [element.type for element in ref.path.element]
    if kinds != [KIND]:
        shown = "/".join(kinds) or "(empty path)"
        raise RpcError(
            CALL_NOT_FOUND,
            f"datastore_v3.{method}() on kind {shown}: deferred-emulator stores only root {KIND} entities"
            " (the large payloads of deferred.defer); use a Datastore emulator for other kinds. "
            + unsupported("datastore_v3", method),
        )
    element = ref.path.element[0]
    if element.HasField("id") and element.id > 0:
        return f"dee_{element.id:032x}"
    if element.HasField("name") and element.name:
        return "dee_" + hashlib.md5(element.name.encode(), usedforsecurity=False).hexdigest()
    raise ApplicationError(BAD_REQUEST, f"datastore_v3.{method}(): the {KIND} key has neither an id nor a name.")


def entity_key_in(body: bytes) -> str | None:
    """The entities-table key named by a deferred ``run_from_datastore`` task body, if any.

    The pickle's opcodes are read with pickletools, never executed.
    """
    if len(body) > 4096 or b"run_from_datastore" not in body:
        return None
    reference = protos().entity.Reference
    try:
        strings = [arg for _, arg, _ in pickletools.genops(body) if isinstance(arg, str) and URLSAFE_KEY_RE.match(arg)]
    except Exception:  # not a pickle after all
        return None
    for text in strings:
        try:
            ref = reference.FromString(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            return entity_key_of(ref, "Get")
        except Exception:  # a string that is not a key
            continue
    return None


async def link_payload(emulator: Emulator, task: Task) -> None:
    """Tie a deferred large-payload entity to its task, so deleting the task deletes the entity."""
    key = entity_key_in(task.body)
    if key is not None:
        await emulator.store.link_entity(key, task.id)


def blob_of(entity: Any) -> bytes:
    """The ``data`` blob of a ``_DeferredTaskEntity``."""
    for prop in list(entity.raw_property) + list(entity.property):
        if prop.name == "data" and prop.value.HasField("stringValue"):
            return bytes(prop.value.stringValue)
    raise ApplicationError(BAD_REQUEST, f"datastore_v3.Put(): a {KIND} needs its blob property 'data'.")


@dataclass
class Transaction:
    """An open datastore transaction and the tasks it will enqueue on commit."""

    started: float
    tasks: list[NewTask] = field(default_factory=list)
    #: entities put inside the transaction, deleted again on rollback.
    entities: list[str] = field(default_factory=list)


class DatastoreApi:
    """datastore_v3 Put/Get/Delete for ``_DeferredTaskEntity``, and BeginTransaction/Commit/Rollback."""

    def __init__(self) -> None:
        self.transactions: dict[int, Transaction] = {}

    def handler(self, emulator: Emulator, method: str) -> Handler | None:
        """The coroutine for ``datastore_v3.<method>``, or None."""
        table = {
            "Put": self.put,
            "Get": self.get,
            "Delete": self.delete,
            "BeginTransaction": self.begin,
            "Commit": self.commit,
            "Rollback": self.rollback,
        }
        call = table.get(method)
        return functools.partial(call, emulator) if call else None

    # -- entities -------------------------------------------------------------------------------

    async def put(self, emulator: Emulator, raw: bytes) -> bytes:
        """Store each entity's blob; answer complete keys (ids allocated for new entities)."""
        pb = protos().datastore
        request = parse_message(pb.PutRequest, raw, "datastore_v3.Put")
        txn = self._open(request.transaction) if request.HasField("transaction") else None
        response = pb.PutResponse()
        for entity in request.entity:
            key = response.key.add()
            key.CopyFrom(entity.key)
            elements = key.path.element
            if len(elements) == 1 and not elements[0].HasField("id") and not elements[0].HasField("name"):
                elements[0].id = 1 + secrets.randbelow(MAX_ID - 1)
            name = entity_key_of(key, "Put")
            await emulator.store.put_entity(blob_of(entity), emulator.now_us(), key=name)
            if txn is not None:
                txn.entities.append(name)
        return bytes(response.SerializeToString())

    async def get(self, emulator: Emulator, raw: bytes) -> bytes:
        """One result per key, in order; a missing entity is a result with the key only."""
        pb = protos()
        request = parse_message(pb.datastore.GetRequest, raw, "datastore_v3.Get")
        response = pb.datastore.GetResponse(in_order=True)
        for ref in request.key:
            body = await emulator.store.get_entity(entity_key_of(ref, "Get"))
            result = response.entity.add()
            if body is None:
                result.key.CopyFrom(ref)
                continue
            entity = result.entity
            entity.key.CopyFrom(ref)
            entity.entity_group.element.add().CopyFrom(ref.path.element[0])
            prop = entity.raw_property.add(meaning=BLOB, name="data", multiple=False)
            prop.value.stringValue = body
            result.version = 1
        return bytes(response.SerializeToString())

    async def delete(self, emulator: Emulator, raw: bytes) -> bytes:
        """Delete the entities (deleting a missing one is not an error, as in Datastore)."""
        pb = protos().datastore
        request = parse_message(pb.DeleteRequest, raw, "datastore_v3.Delete")
        for ref in request.key:
            await emulator.store.delete_entity(entity_key_of(ref, "Delete"))
        return bytes(pb.DeleteResponse().SerializeToString())

    # -- transactions ---------------------------------------------------------------------------

    def _open(self, txn: Any) -> Transaction:
        found = self.transactions.get(txn.handle)
        if found is None:
            raise ApplicationError(BAD_REQUEST, "Transaction not found: it was committed, rolled back or has expired.")
        return found

    def _forget_stale(self) -> None:
        cutoff = time.monotonic() - TRANSACTION_TTL_S
        for handle, txn in list(self.transactions.items()):
            if txn.started < cutoff or len(self.transactions) >= MAX_OPEN_TRANSACTIONS:
                del self.transactions[handle]

    async def begin(self, emulator: Emulator, raw: bytes) -> bytes:
        """A new transaction handle."""
        pb = protos().datastore
        request = parse_message(pb.BeginTransactionRequest, raw, "datastore_v3.BeginTransaction")
        self._forget_stale()
        handle = secrets.randbits(63) or 1
        self.transactions[handle] = Transaction(time.monotonic())
        answer = pb.Transaction(handle=handle, app=request.app)
        if request.HasField("database_id"):
            answer.database_id = request.database_id
        return bytes(answer.SerializeToString())

    def stage(self, txn: Any, tasks: list[NewTask]) -> None:
        """Hold tasks until the transaction commits (taskqueue.BulkAdd with a transaction)."""
        open_txn = self._open(txn)
        if len(open_txn.tasks) + len(tasks) > MAX_TASKS_PER_TRANSACTION:
            raise ApplicationError(BAD_REQUEST, f"Too many messages, maximum allowed {MAX_TASKS_PER_TRANSACTION}")
        open_txn.tasks.extend(tasks)

    async def commit(self, emulator: Emulator, raw: bytes) -> bytes:
        """Enqueue the transaction's tasks, all or none."""
        pb = protos().datastore
        request = parse_message(pb.Transaction, raw, "datastore_v3.Commit")
        txn = self._open(request)
        del self.transactions[request.handle]
        if txn.tasks:
            try:
                added = await emulator.add_tasks(txn.tasks, emulator.app_engine_max_size)
            except Exception as exc:
                raise ApplicationError(INTERNAL_ERROR, f"The transactional tasks could not be enqueued: {exc}") from exc
            for task in added:
                await link_payload(emulator, task)
        return bytes(pb.CommitResponse().SerializeToString())

    async def rollback(self, emulator: Emulator, raw: bytes) -> bytes:
        """Drop the transaction's tasks and the entities it put."""
        pb = protos().datastore
        request = parse_message(pb.Transaction, raw, "datastore_v3.Rollback")
        txn = self.transactions.pop(request.handle, None)
        for name in txn.entities if txn else ():
            await emulator.store.delete_entity(name)
        return b""
