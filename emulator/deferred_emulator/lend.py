"""One request of a lane's connection lent to aiohttp, which answers it; then the connection is the lane's again.

The deferred client asks ``GET /_emulator/v1/health`` before its first add, and Google's clients
mix gets and lists with their adds: if any such request gave the whole connection to aiohttp, most
connections would leave the lane at once. So an API request the lane does not answer itself goes
to a new aiohttp protocol on a transport of its own (``Lent``), which passes what aiohttp writes on
to the real connection and reads it with httptools' response parser. When the answer is complete,
the protocol is let go (``connection_lost``) and the lane reads on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httptools


class Lent(asyncio.Transport):
    """What an aiohttp protocol serving one lent request writes to: the real connection, watched."""

    def __init__(self, real: asyncio.Transport, done: Callable[[bool], None]) -> None:
        super().__init__()
        self.real = real
        #: ``done(keep)``: the answer is complete; whether the connection can go on.
        self._done = done
        self._parser = httptools.HttpResponseParser(self)
        self._finished = False
        self._detached = False

    # -- the transport aiohttp sees ------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Pass the bytes on, and watch for the end of the answer."""
        if self._detached:
            return
        self.real.write(data)
        if not self._finished:
            try:
                self._parser.feed_data(bytes(data))
            except httptools.HttpParserError:
                self._finish(keep=False)  # not an answer the lane can follow: the connection ends with it

    def writelines(self, list_of_data: Any) -> None:
        """Pass each on."""
        for data in list_of_data:
            self.write(data)

    def is_closing(self) -> bool:
        """Whether the real connection is closing (or this one was closed)."""
        return self._detached or self.real.is_closing()

    def close(self) -> None:
        """aiohttp ends the connection (``Connection: close``, an error): the real one ends."""
        if not self._detached:
            self._detached = True
            self.real.close()
            self._finish(keep=False)

    def abort(self) -> None:
        """As ``close``, at once."""
        if not self._detached:
            self._detached = True
            self.real.abort()
            self._finish(keep=False)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The real connection's."""
        return self.real.get_extra_info(name, default)

    def can_write_eof(self) -> bool:
        """The lane's connection is not half-closed for a lent request."""
        return False

    def pause_reading(self) -> None:
        """The whole request was handed over at once: nothing to pause."""

    def resume_reading(self) -> None:
        """See ``pause_reading``."""

    def is_reading(self) -> bool:
        """See ``pause_reading``."""
        return True

    def get_write_buffer_size(self) -> int:
        """The real connection's."""
        return self.real.get_write_buffer_size()

    # -- httptools' callback ---------------------------------------------------------------------

    def on_message_complete(self) -> None:
        """The answer is whole."""
        self._finish(keep=self._parser.should_keep_alive())

    def _finish(self, keep: bool) -> None:
        if not self._finished:
            self._finished = True
            # After aiohttp's current step: it may still be finishing the response it just wrote.
            asyncio.get_running_loop().call_soon(self._done, keep)

    def detach(self) -> None:
        """Nothing more reaches the real connection from here."""
        self._detached = True
