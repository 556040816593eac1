"""Which task headers the emulator takes: valid HTTP names and values, no hop-by-hop or framing headers.

A task's headers are copied into every delivery, so a header that changes how the request is framed
(``Transfer-Encoding`` beside the emulator's ``Content-Length``) would let a task smuggle a second,
forged request into the app's connection; a name or value that is not valid HTTP fails every attempt.
Both are refused when the task is created, on every API, through ``Emulator.validate``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .errors import InvalidArgument

#: RFC 9110 token characters: a header name is one or more of these.
TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: A field value: visible characters, spaces, tabs and obs-text; no CR, LF, NUL or other controls.
FIELD_VALUE_RE = re.compile(r"[\t\x20-\x7e\x80-\U0010ffff]*")
#: Headers about one connection or the framing of one message (RFC 9110 7.6.1 and 6.1), lower case.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"})


def is_hop_by_hop(name: str) -> bool:
    """Whether a header belongs to one connection (or frames the body) rather than to the request."""
    lower = name.lower()
    return lower in HOP_BY_HOP or lower.startswith("proxy-")


def check_headers(headers: Mapping[str, str], field: str = "headers") -> None:
    """Raise InvalidArgument naming the first header that is not valid HTTP or is hop-by-hop."""
    for name, value in headers.items():
        if not TOKEN_RE.fullmatch(name):
            raise InvalidArgument(f"Invalid {field}: the header name {name!r} is not a valid HTTP header name.")
        if is_hop_by_hop(name):
            raise InvalidArgument(
                f"Invalid {field}: {name} is a hop-by-hop or framing header; the emulator frames each"
                " delivery itself (Content-Length), so a task may not set it."
            )
        if not FIELD_VALUE_RE.fullmatch(value):
            raise InvalidArgument(
                f"Invalid {field}: the value of header {name} contains a character not allowed in HTTP"
                " (CR, LF, NUL or another control character)."
            )
