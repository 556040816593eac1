"""A lean HTTP/1.1 path for the request that decides how fast tasks go in: CreateTask over REST.

aiohttp spends about 100 us of CPU on any request, a trivial one included, which was a third of
what adding a task cost. The lane answers ``POST /v2/projects/P/locations/L/queues/Q/tasks`` by
itself, with httptools reading the request head (``lanehead.py``), and calls the same
``create_task`` as aiohttp's handler does, so the checks, the stored task and the answer are the
same. It takes only requests it can take exactly as written: keep-alive HTTP/1.1, a plain path, a
``Content-Length`` of at most 256 KiB, ``application/json``, a permitted ``Host``, no
``Origin``, ``Sec-Fetch-Site``, ``Expect``, ``Transfer-Encoding`` or ``Upgrade``. Other API
requests are lent to aiohttp one at a time (``lend.py``), so a client's gets and lists do not
take its connection off the lane; anything else gives aiohttp the connection, from that request's
first byte on, and it answers it and everything after it as it always has (refusals included).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

from aiohttp.http import SERVER_SOFTWARE

from .api.cloudtasks import create_task
from .api.common import json_bytes, json_object
from .eager import run_eagerly
from .errors import INTERNAL_MESSAGE, EmulatorError
from .guard import HostPolicy
from .lanehead import MAX_HEAD, Verdict, could_be_api, judge
from .lend import Lent
from .middleware import error_body

if TYPE_CHECKING:
    from .service import Emulator

logger = logging.getLogger(__name__)

#: Idle kept-alive connections are closed after this long, as aiohttp's own are.
KEEPALIVE_S = 75.0
#: While a request is served, reading stops once this much more has arrived.
MAX_BUFFER = 4 * 1024 * 1024
ANSWER_HEAD = (
    "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {length}\r\n"
)


class Lanes:
    """What the lanes of one site share: the emulator, the guard's rules, and the open connections."""

    def __init__(
        self, emulator: Emulator, policy: HostPolicy, aiohttp_protocol: Callable[[], asyncio.Protocol]
    ) -> None:
        self.emulator = emulator
        self.policy = policy
        #: a new aiohttp protocol, as aiohttp's server makes one for each connection.
        self.aiohttp_protocol = aiohttp_protocol
        self.open: set[Lane] = set()
        self.closing = False
        #: requests the lanes answered, and requests they lent to aiohttp.
        self.served = 0
        self.lent = 0
        self._date = ("", 0)

    def date(self) -> str:
        """The ``Date`` header's value, made once a second."""
        now = int(time.time())
        if self._date[1] != now:
            self._date = (email.utils.formatdate(now, usegmt=True), now)
        return self._date[0]

    async def close(self, timeout_s: float = 5.0) -> None:
        """Let requests under way finish (for at most ``timeout_s``), then close every connection."""
        self.closing = True
        busy = [lane.serving for lane in self.open if lane.serving is not None]
        if busy:
            await asyncio.wait(busy, timeout=timeout_s)
        for lane in list(self.open):
            if lane.transport is not None:
                lane.transport.close()


class Lane(asyncio.Protocol):
    """One HTTP/1 connection: CreateTask answered here, other API requests lent to aiohttp, until one that
    gives aiohttp the connection."""

    def __init__(self, lanes: Lanes, handover: Callable[[asyncio.Transport, bytes], asyncio.Protocol]) -> None:
        self.lanes = lanes
        #: ``handover(transport, data)``: gives the connection to aiohttp, with the bytes not yet served.
        self.handover = handover
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.serving: asyncio.Future[None] | None = None
        self.paused = False
        self.idle_since = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.eof = False
        #: the connection was given to aiohttp.
        self.handed = False
        #: ``_next`` is running (answers written meanwhile leave the next request to it).
        self.in_next = False
        #: the aiohttp protocol answering a lent request, and the transport it writes to.
        self.lending: tuple[asyncio.Protocol, Lent] | None = None

    @property
    def busy(self) -> bool:
        """Whether a request is being answered (by the lane, or by aiohttp on loan)."""
        return self.serving is not None or self.lending is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count the connection among the site's, and close it after a long idle spell."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.lanes.open.add(self)
        loop = asyncio.get_running_loop()
        self.idle_since = loop.time()
        self.timer = loop.call_later(KEEPALIVE_S, self._idle_check)

    def connection_lost(self, exc: Exception | None) -> None:
        """No longer the site's (nor, for a request on loan, aiohttp's)."""
        self._forget()
        if self.lending is not None:
            protocol, lent = self.lending
            self.lending = None
            lent.detach()
            protocol.connection_lost(exc)

    def _forget(self) -> None:
        self.lanes.open.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _idle_check(self) -> None:
        assert self.transport is not None
        idle = asyncio.get_running_loop().time() - self.idle_since
        if not self.busy and idle >= KEEPALIVE_S:  # idle, or a request begun and left unfinished
            self.transport.close()
        else:
            self.timer = asyncio.get_running_loop().call_later(max(0.05, KEEPALIVE_S - idle), self._idle_check)

    def data_received(self, data: bytes) -> None:
        """Serve the next request when it is whole (one at a time, in order)."""
        self.buffer += data
        self.idle_since = asyncio.get_running_loop().time()
        if not self.busy:
            self._next()
        elif len(self.buffer) > MAX_BUFFER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        """The client is done sending: answer what is under way, then close (or let aiohttp finish)."""
        self.eof = True
        if not self.busy:
            self._after_eof()
        return True

    def _after_eof(self) -> None:
        assert self.transport is not None
        if self.buffer:
            self._to_aiohttp()
        else:
            self.transport.close()

    def _to_aiohttp(self) -> None:
        assert self.transport is not None
        self.handed = True
        self._forget()
        data, self.buffer = bytes(self.buffer), bytearray()
        protocol = self.handover(self.transport, data)
        if self.eof:
            protocol.eof_received()

    def _next(self) -> None:
        """Serve the requests in the buffer one after another, until one must wait or is not whole yet."""
        if self.in_next:
            return  # an answer written from inside the loop below: the loop goes on
        self.in_next = True
        try:
            while not self.busy and not self.handed and self.buffer:
                if self.transport is None or self.transport.is_closing() or not self._serve_next():
                    return
        finally:
            self.in_next = False

    def _serve_next(self) -> bool:
        """Start the first request of the buffer; whether it was answered at once (the next may follow)."""
        buffer = self.buffer
        if not could_be_api(buffer):
            self._to_aiohttp()
            return False
        end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD)
        if end < 0:
            if len(buffer) >= MAX_HEAD:
                self._to_aiohttp()
            return False
        verdict = judge(bytes(buffer[: end + 4]), self.lanes.policy)
        if verdict is None:
            self._to_aiohttp()
            return False
        size = end + 4 + verdict.length
        if len(buffer) < size:
            return False  # the body is still coming
        if verdict.path is None:
            request = bytes(buffer[:size])
            del buffer[:size]
            self._lend(request)
            return False
        body = bytes(buffer[end + 4 : size])
        del buffer[:size]
        return self._start(verdict, body)

    def _start(self, verdict: Verdict, body: bytes) -> bool:
        assert verdict.path is not None
        # Most adds never wait: run it now; when it waits (for the store, say), a Task carries it on.
        carried = run_eagerly(self._serve(verdict.path, verdict.headers, body))
        if carried is None:
            return True
        self.serving = carried
        return False

    def _lend(self, request: bytes) -> None:
        """Have a new aiohttp protocol answer ``request`` (a whole one) on this connection."""
        assert self.transport is not None
        protocol = self.lanes.aiohttp_protocol()
        lent = Lent(self.transport, self._lent_back)
        self.lending = (protocol, lent)
        self.lanes.lent += 1
        protocol.connection_made(lent)
        protocol.data_received(request)

    def _lent_back(self, keep: bool) -> None:
        """aiohttp has answered the lent request: let its protocol go, and read on (or close)."""
        if self.lending is None:
            return
        protocol, lent = self.lending
        self.lending = None
        lent.detach()
        protocol.connection_lost(None)
        if not keep and self.transport is not None:
            self.transport.close()
            return
        self._read_on()

    async def _serve(self, path: str, headers: dict[bytes, bytes], body: bytes) -> None:
        status, answer = 200, b""
        try:
            data = json_object(body, "application/json", required=True)
            answer = json_bytes(
                await create_task(self.lanes.emulator, path, data, bool(headers.get(b"x-deferred-client")))
            )
        except EmulatorError as exc:
            if exc.status >= 500:
                logger.error("POST /v2/%s/tasks: %s", path, exc.message)
            status, answer = exc.status, json_bytes(exc.to_json())
        except Exception:
            logger.exception("unexpected error serving POST /v2/%s/tasks", path)
            status, answer = 500, json_bytes(error_body(500, INTERNAL_MESSAGE, "INTERNAL"))
        self._answer(status, answer)

    def _answer(self, status: int, body: bytes) -> None:
        transport = self.transport
        self.serving = None
        if transport is None or transport.is_closing():
            return
        head = ANSWER_HEAD.format(status=status, reason=HTTPStatus(status).phrase, length=len(body))
        head += f"Date: {self.lanes.date()}\r\nServer: {SERVER_SOFTWARE}\r\n\r\n"
        transport.write(head.encode("latin-1") + body)
        self.lanes.served += 1
        self._read_on()

    def _read_on(self) -> None:
        """An answer is out: on to the next request (or close, when the client or the site is done)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.idle_since = asyncio.get_running_loop().time()
        if self.paused:
            self.paused = False
            transport.resume_reading()
        if self.lanes.closing:
            transport.close()
        elif self.eof:
            self._after_eof()
        else:
            self._next()
