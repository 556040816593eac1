"""What the /rpc_http handlers share: the SDK's message modules, errors, and request decoding."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import Any

#: remote_api RpcError codes (remote_api_bytes.proto).
UNKNOWN = 0
CALL_NOT_FOUND = 1
PARSE_ERROR = 2
#: The SDK modules that define the messages, by the short names the handlers use.
PROTO_MODULES = {
    "remote_api": "google.appengine.ext.remote_api.remote_api_bytes_pb2",
    "taskqueue": "google.appengine.api.taskqueue.taskqueue_service_bytes_pb2",
    "datastore": "google.appengine.datastore.datastore_v3_bytes_pb2",
    "entity": "google.appengine.datastore.entity_bytes_pb2",
}
MISSING_SDK = (
    "POST /rpc_http needs the App Engine SDK's message definitions: install the gae extra"
    " (pip install 'deferred-emulator[gae]', which brings appengine-python-standard)."
)


class ApplicationError(Exception):
    """Raised by a handler to answer a service error the SDK turns into its own exception."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"application error {code}: {detail}")
        self.code = code
        self.detail = detail


class RpcError(Exception):
    """Raised by a handler to answer an RPC-level error (unknown call, unparsable request)."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"rpc error {code}: {detail}")
        self.code = code
        self.detail = detail


def import_alone(name: str) -> types.ModuleType:
    """Import ``name`` without running its package's ``__init__``.

    ``google.appengine.api.taskqueue``'s ``__init__`` imports the whole task queue API, with the
    Cloud Tasks and gRPC clients: seconds of work that would stall the server's event loop, for
    a message module that needs none of it.
    """
    if name in sys.modules:
        return sys.modules[name]
    root = importlib.util.find_spec("google.appengine")
    parts = name.split(".")[2:]
    for base in (root.submodule_search_locations or []) if root else []:
        path = Path(base, *parts[:-1], parts[-1] + ".py")
        if path.is_file():
            break
    else:
        raise ImportError(f"No module named {name!r}")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered under its real name, so the SDK's own import (in an app sharing the process)
    # finds it instead of defining the same protobuf messages twice.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


@cache
def protos() -> types.SimpleNamespace:
    """The SDK's protobuf modules (ImportError without the gae extra)."""
    modules = {short: importlib.import_module(name) for short, name in PROTO_MODULES.items() if short != "taskqueue"}
    return types.SimpleNamespace(taskqueue=import_alone(PROTO_MODULES["taskqueue"]), **modules)


Handler = Callable[[bytes], Awaitable[bytes]]


def parse_message(cls: Any, raw: bytes, what: str) -> Any:
    """Decode ``raw`` as ``cls``, or raise RpcError(PARSE_ERROR) naming ``what``."""
    message = cls()
    try:
        message.ParseFromString(raw)
    except Exception as exc:  # protobuf raises DecodeError, and others for broken groups
        raise RpcError(PARSE_ERROR, f"{what}: the request is not a valid {cls.__name__} ({exc})") from exc
    if not message.IsInitialized():
        missing = ", ".join(message.FindInitializationErrors())
        raise RpcError(PARSE_ERROR, f"{what}: the {cls.__name__} lacks required fields: {missing}")
    return message


def unsupported(service: str, method: str) -> str:
    """The CallNotFound text naming what is not emulated."""
    return (
        f"The API call {service}.{method}() is not supported by deferred-emulator, which answers taskqueue"
        " (BulkAdd, Delete, PurgeQueue, FetchQueueStats, QueryTasks) and datastore_v3 (Put, Get, Delete,"
        " BeginTransaction, Commit, Rollback) for the _DeferredTaskEntity kind only."
    )
