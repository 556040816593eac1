"""HTTP/2 header blocks as requests carry them: decoded (a repeated block once), and checked (RFC 9113 §8.2-8.3)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from hpack import Decoder

#: The pseudo-headers of a request; :method, :scheme and :path are required (there is no CONNECT here).
REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path"})
REQUIRED_PSEUDO = frozenset({b":method", b":scheme", b":path"})
#: Fields that belong to HTTP/1 connections, malformed in HTTP/2 (§8.2.2).
CONNECTION_SPECIFIC = frozenset({b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"})
#: A name holds no uppercase letters, controls, spaces or DEL and beyond (§8.2.1); ``:`` only leads a pseudo-header.
BAD_NAME = re.compile(rb"[^\x21-\x39\x3b-\x40\x5b-\x7e]")
#: A value holds no NUL, CR or LF, and neither starts nor ends with a space or tab (§8.2.1).
BAD_VALUE = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$")


class Fields(NamedTuple):
    """A decoded block: its fields by name (the last of a repeated one), and what makes it malformed."""

    headers: dict[bytes, bytes]
    #: why the block is malformed as a request's headers (None: it is not).
    problem: str | None
    #: whether it holds any pseudo-header (which a trailer block may not).
    pseudo: bool


def request_problem(fields: Sequence[tuple[bytes, bytes]]) -> str | None:
    """Why ``fields`` are malformed as a request's header block, or None."""
    seen: set[bytes] = set()
    regular = False
    for name, value in fields:
        if name.startswith(b":"):
            if regular:
                return "a pseudo-header after a regular field"
            if name not in REQUEST_PSEUDO:
                return f"the pseudo-header {name.decode('latin-1')} in a request"
            if name in seen:
                return f"{name.decode('latin-1')} twice"
            seen.add(name)
            if BAD_VALUE.search(value) or (name == b":path" and not value):
                return f"a malformed {name.decode('latin-1')}"
            continue
        regular = True
        if not name or BAD_NAME.search(name):
            return f"the field name {name.decode('latin-1')!r}"
        if BAD_VALUE.search(value):
            return f"a malformed value of {name.decode('latin-1')}"
        if name in CONNECTION_SPECIFIC:
            return f"the connection-specific field {name.decode('latin-1')}"
        if name == b"te" and value != b"trailers":
            return "TE other than trailers"
    missing = REQUIRED_PSEUDO - seen
    if missing:
        return f"no {b', '.join(sorted(missing)).decode()}"
    return None


class HeaderReader:
    """A connection's HPACK decoder, which remembers the last block it read.

    Once its table is warm, a gRPC client sends every call to a method with the very same block
    (indexed fields, and literals it does not index): decoding and checking it again cost about 25
    us a call. A block is reused only when reading it left the table as it was, and the table is
    still as it was then: the same length and the same newest entry (held here, so it cannot be
    another object at a recycled address).
    """

    __slots__ = ("decoder", "entries", "last")

    def __init__(self) -> None:
        self.decoder = Decoder()
        self.entries = self.decoder.header_table.dynamic_entries
        #: (block, newest table entry, table length, fields) of a block that left the table alone.
        self.last: tuple[bytes, object, int, Fields] | None = None

    def read(self, block: bytes) -> Fields:
        """The fields of ``block``; their dict is never to be changed by the caller.

        Raises ``hpack.HPACKError`` for a block that cannot be decoded.
        """
        entries = self.entries
        newest = entries[0] if entries else None
        last = self.last
        if last is not None and last[0] == block and last[1] is newest and last[2] == len(entries):
            return last[3]
        size = len(entries)
        decoded = [(bytes(name), bytes(value)) for name, value in self.decoder.decode(block, raw=True)]
        pseudo = any(name.startswith(b":") for name, _ in decoded)
        fields = Fields(dict(decoded), request_problem(decoded), pseudo)
        unchanged = len(entries) == size and (entries[0] if entries else None) is newest
        self.last = (block, newest, size, fields) if unchanged else None
        return fields
