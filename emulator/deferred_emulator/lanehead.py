"""What the lane makes of a request head: answer it (CreateTask), lend it to aiohttp, or give aiohttp the connection.

httptools (the parser uvicorn uses) reads the head. The lane answers only a CreateTask it can
take exactly as written (see ``lane.py``). Other API requests with plain framing (keep-alive
HTTP/1.1, a ``Content-Length`` or no body) are lent to aiohttp one at a time (``lend.py``);
anything else (a browser's page, a chunked or ``Expect`` upload, an upgrade) gives aiohttp the
connection for good.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import httptools

from .guard import HostPolicy

#: A head longer than this is not the lane's: within it no line can pass aiohttp's limit (8190 bytes).
MAX_HEAD = 8190
#: Larger bodies are aiohttp's, which reads them as a stream (a deferred task's payload is at most 100 KiB).
MAX_BODY = 256 * 1024
#: A lent request's body is gathered whole first: larger ones give aiohttp the connection.
MAX_LENT_BODY = 4 * 1024 * 1024
#: A CreateTask path the lane takes (project ids may hold dots and a colon: "example.com:proj").
CREATE_PATH = re.compile(rb"/v2/projects/([\w.:~-]+)/locations/([\w.~-]+)/queues/([\w-]+)/tasks", re.ASCII)
#: How the requests the lane answers or lends begin: a method, then a path under one of the APIs.
OPENINGS = tuple(
    method + b" " + path
    for method in (b"POST", b"GET", b"DELETE", b"PATCH", b"PUT")
    for path in (b"/v2/", b"/v2beta3/", b"/_emulator/")
)
#: Headers the lane reads; a second copy of one of them gives aiohttp the request.
READ = frozenset({b"host", b"content-type", b"content-length", b"connection", b"x-deferred-client"})
#: Framing the lane does not follow: the connection goes to aiohttp.
FRAMING = frozenset({b"expect", b"transfer-encoding", b"upgrade"})
#: The guard's to judge (``guard.py``): such a request is lent, not answered by the lane.
GUARDED = frozenset({b"origin", b"sec-fetch-site"})


def could_be_api(buffer: bytes | bytearray) -> bool:
    """Whether the bytes so far may open a request the lane answers or lends."""
    if buffer.startswith(OPENINGS[0]):  # the one that matters for speed
        return True
    return any(
        opening.startswith(buffer) if len(buffer) < len(opening) else buffer.startswith(opening) for opening in OPENINGS
    )


@dataclass
class Head:
    """httptools' callbacks for one request head, and what they found."""

    url: bytes = b""
    headers: dict[bytes, bytes] = field(default_factory=dict)
    #: a header the lane reads came twice.
    repeated: bool = False
    framing: bool = False
    guarded: bool = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in READ:
            self.repeated |= name in self.headers
            self.headers[name] = value
        elif name in FRAMING:
            self.framing = True
        elif name in GUARDED:
            self.guarded = True


@dataclass
class Verdict:
    """What to do with a request: ``path`` set for the lane to answer, else lend it; ``length`` of its body."""

    length: int
    path: str | None = None
    headers: dict[bytes, bytes] = field(default_factory=dict)


def judge(raw: bytes, policy: HostPolicy) -> Verdict | None:
    """The lane's verdict on a whole request head (ending with its blank line); None gives aiohttp the connection."""
    head = Head()
    parser = httptools.HttpRequestParser(head)
    try:
        parser.feed_data(raw)
    except httptools.HttpParserError:
        return None
    headers = head.headers
    if head.framing or head.repeated or parser.get_http_version() != "1.1" or not parser.should_keep_alive():
        return None
    if b"close" in headers.get(b"connection", b"").lower():
        return None
    raw_length = headers.get(b"content-length", b"0")
    if not raw_length.isdigit() or int(raw_length) > MAX_LENT_BODY:
        return None
    length = int(raw_length)
    path = queue_path(head.url) if parser.get_method() == b"POST" else None
    if path is None or head.guarded or not 0 < length <= MAX_BODY:
        return Verdict(length)
    media = headers.get(b"content-type", b"").partition(b";")[0].strip().lower()
    if media != b"application/json" or not policy.permits(headers.get(b"host", b"").decode("latin-1")):
        return Verdict(length)
    return Verdict(length, path, headers)


def queue_path(url: bytes) -> str | None:
    """``projects/P/locations/L/queues/Q`` of a CreateTask URL the lane takes as written, else None.

    Only names of plain characters: aiohttp decodes escapes, drops fragments and resolves dot
    segments before it routes, and what it would make of anything else is left to it.
    """
    match = CREATE_PATH.fullmatch(url.partition(b"?")[0])
    if match is None or any(part in (b".", b"..") for part in match.groups()):
        return None
    return match[0][4:-6].decode("ascii")
