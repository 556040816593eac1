"""``POST /rpc_http``: the App Engine API server that appengine-python-standard apps call.

The SDK's ``default_api_stub`` sends every bundled-service call as a remote_api ``Request``
protobuf to ``http://$API_HOST:$API_PORT/rpc_http`` and expects HTTP 200 with a remote_api
``Response``. The message classes are the SDK's own (extra ``gae``), imported on first use so the
emulator runs without them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from ..dberrors import StoreUnavailable
from ..errors import EmulatorError
from .common import runtime_key
from .gae_datastore import DatastoreApi
from .gae_protocol import (
    CALL_NOT_FOUND,
    MISSING_SDK,
    UNKNOWN,
    ApplicationError,
    Handler,
    RpcError,
    parse_message,
    protos,
    unsupported,
)
from .gae_taskqueue import TaskQueueApi

logger = logging.getLogger(__name__)

PATH = "/rpc_http"


@dataclass
class Call:
    """One decoded remote_api call."""

    service: str
    method: str
    request: bytes
    ticket: str


#: The application error codes for "try again later": taskqueue's TRANSIENT_ERROR, datastore_v3's TIMEOUT.
TASKQUEUE_TRANSIENT = 2
UNAVAILABLE_CODES = {"taskqueue": TASKQUEUE_TRANSIENT, "datastore_v3": 5}


class BadRpcBody(EmulatorError):
    """Raised when the body of POST /rpc_http is not a remote_api Request."""

    status = 400
    rpc_status = "INVALID_ARGUMENT"


def decode_call(body: bytes) -> Call:
    """The remote_api Request in ``body``; BadRpcBody (HTTP 400) if it is not one."""
    try:
        outer = parse_message(protos().remote_api.Request, body, "rpc_http")
    except RpcError as exc:
        raise BadRpcBody(
            f"The body of POST {PATH} must be a remote_api Request protobuf, as appengine-python-standard"
            f" sends: {exc.detail}"
        ) from exc
    return Call(outer.service_name, outer.method, outer.request, outer.request_id)


class ApiServer:
    """Routes remote_api calls to the taskqueue and datastore_v3 handlers."""

    def __init__(self) -> None:
        self.datastore = DatastoreApi()
        self.taskqueue = TaskQueueApi(self.datastore)

    def handler_for(self, request: web.Request, call: Call) -> Handler | None:
        """The coroutine answering ``service.method``, or None."""
        runtime = request.app[runtime_key]
        if call.service == "taskqueue":
            return self.taskqueue.handler(runtime, call.method)
        if call.service == "datastore_v3":
            return self.datastore.handler(runtime.emulator, call.method)
        return None

    async def handle(self, request: web.Request) -> web.Response:
        """``POST /rpc_http``: decode, dispatch, answer a remote_api Response (always HTTP 200)."""
        try:
            pb = protos()
        except ImportError as exc:
            logger.error("%s (%s)", MISSING_SDK, exc)
            raise NotImplementedByServer(MISSING_SDK) from exc
        call = decode_call(await request.read())
        logger.debug("rpc_http %s.%s (ticket %s)", call.service, call.method, call.ticket)
        response = pb.remote_api.Response()
        handler = self.handler_for(request, call)
        try:
            if handler is None:
                raise RpcError(CALL_NOT_FOUND, unsupported(call.service, call.method))
            response.response = await handler(call.request)
        except ApplicationError as exc:
            logger.info("%s.%s: application error %d: %s", call.service, call.method, exc.code, exc.detail)
            response.application_error.code = exc.code
            response.application_error.detail = exc.detail
        except StoreUnavailable as exc:
            # The database takes no change now (locked, disk full, gone): a transient error the SDK raises as
            # taskqueue.TransientError or datastore_errors.Timeout, with the cause in its text.
            logger.warning("%s.%s: %s", call.service, call.method, exc.message)
            response.application_error.code = UNAVAILABLE_CODES.get(call.service, TASKQUEUE_TRANSIENT)
            response.application_error.detail = exc.message
        except RpcError as exc:
            logger.warning("%s.%s: %s", call.service, call.method, exc.detail)
            response.rpc_error.code = exc.code
            response.rpc_error.detail = exc.detail
        except Exception as exc:
            # An emulator bug: the app gets an RPCFailedError naming the call, the server lives on.
            logger.exception("%s.%s failed", call.service, call.method)
            response.rpc_error.code = UNKNOWN
            response.rpc_error.detail = f"{call.service}.{call.method}: internal error in deferred-emulator: {exc!r}"
        return web.Response(body=response.SerializeToString(), content_type="application/octet-stream")


class NotImplementedByServer(EmulatorError):
    """Raised when /rpc_http is called but the gae extra is not installed."""

    status = 501
    rpc_status = "UNIMPLEMENTED"


def routes() -> list[web.RouteDef]:
    """The ``/rpc_http`` route, with its own API server state."""
    server = ApiServer()
    return [web.post(PATH, server.handle)]
