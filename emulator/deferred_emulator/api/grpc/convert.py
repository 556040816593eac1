"""REST JSON into protobuf messages: fast for the shapes the emulator writes, ``json_format`` for the rest.

``json_format.ParseDict`` walks a message in pure Python and parses timestamps with ``strptime``: for
a task it cost more than the rest of a gRPC CreateTask. The emulator's JSON is regular (its own
output), so the common field kinds are set directly; the others (``Any``, ``Struct``, maps of
messages, anything unexpected) are handed to ``json_format`` field by field, which also decides
errors. Unknown fields (the emulator's own, such as a task's ``state``) are left out, as
``ignore_unknown_fields`` does. ``tests/test_grpc_convert.py`` checks both give the same messages.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from functools import cache
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from ...errors import InvalidArgument
from ..timefmt import parse_ts

TIMESTAMP = "google.protobuf.Timestamp"
#: ``2026-12-01T12:00:00.123456Z``: longer texts carry nanoseconds (or nonsense): json_format's.
MAX_MICROSECOND_TS = 27
DURATION = "google.protobuf.Duration"
#: How each field is set: by kind, decided once per message type.
STRING, BOOL, NUMBER, ENUM, BYTES, INT, MESSAGE, REPEATED_MESSAGE, REPEATED_SCALAR, STRING_MAP, TIME, SPAN, OTHER = (
    range(13)
)
FLOATS = {FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE}
INT_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def string_values(entry: Descriptor) -> bool:
    """Whether a map's entry type holds plain strings (whose JSON form is the same dict)."""
    value = entry.fields_by_name["value"]
    return value.message_type is None and value.type == FieldDescriptor.TYPE_STRING


def _kind(field: FieldDescriptor) -> int:
    repeated = field.is_repeated
    message = field.message_type
    if message is not None:
        if message.GetOptions().map_entry:
            return STRING_MAP if string_values(message) else OTHER
        if message.full_name == TIMESTAMP and not repeated:
            return TIME
        if message.full_name == DURATION and not repeated:
            return SPAN
        if message.full_name.startswith("google.protobuf."):
            return OTHER  # Any, Struct, wrappers, FieldMask: json_format knows their JSON forms
        return REPEATED_MESSAGE if repeated else MESSAGE
    if repeated:
        return REPEATED_SCALAR if field.type == FieldDescriptor.TYPE_STRING else OTHER
    if field.type == FieldDescriptor.TYPE_ENUM:
        return ENUM
    if field.type == FieldDescriptor.TYPE_BYTES:
        return BYTES
    if field.type in INT_TYPES:
        return INT  # int64 is a string in JSON
    if field.type == FieldDescriptor.TYPE_STRING:
        return STRING
    if field.type == FieldDescriptor.TYPE_BOOL:
        return BOOL
    return NUMBER


@cache
def _plan(descriptor: Descriptor) -> dict[str, tuple[str, int, FieldDescriptor]]:
    """JSON name -> (field name, kind, field), for one message type."""
    return {field.json_name: (field.name, _kind(field), field) for field in descriptor.fields}


def from_json(data: dict[str, Any], message: Any) -> Any:
    """Fill ``message`` from its REST JSON form (unknown fields ignored) and return it."""
    plan = _plan(message.DESCRIPTOR)
    for key, value in data.items():
        entry = plan.get(key)
        if entry is None or value is None:
            continue
        name, kind, field = entry
        if not _set(message, name, kind, field, value):
            json_format.ParseDict({key: value}, message, ignore_unknown_fields=True)
    return message


def _set(message: Any, name: str, kind: int, field: FieldDescriptor, value: Any) -> bool:
    """Set one field; False when ``json_format`` should (an unusual kind or value)."""
    setter = SETTERS.get(kind)
    return setter is not None and setter(message, name, field, value)


def _plain(types: tuple[type, ...]) -> Setter:
    def set_plain(message: Any, name: str, field: FieldDescriptor, value: Any) -> bool:
        if not isinstance(value, types) or isinstance(value, bool) is not (bool in types):
            return False
        if isinstance(value, float) and field.cpp_type not in FLOATS:
            return False  # a float for an integer field: json_format decides
        setattr(message, name, value)
        return True

    return set_plain


def _set_message(message: Any, name: str, field: FieldDescriptor, value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    sub = getattr(message, name)
    sub.SetInParent()
    from_json(value, sub)
    return True


def _set_time(message: Any, name: str, field: FieldDescriptor, value: Any) -> bool:
    # The emulator writes UTC with "Z" and microseconds; json_format takes (or refuses) anything else.
    if not isinstance(value, str) or len(value) > MAX_MICROSECOND_TS or not value.endswith("Z"):
        return False
    try:
        getattr(message, name).FromMicroseconds(parse_ts(value, name))
    except InvalidArgument:
        return False
    return True


def _set_span(message: Any, name: str, field: FieldDescriptor, value: Any) -> bool:
    return isinstance(value, str) and _duration(getattr(message, name), value)


def _set_enum(message: Any, name: str, field: FieldDescriptor, value: Any) -> bool:
    number = field.enum_type.values_by_name.get(value) if isinstance(value, str) else None
    if number is None:
        return False
    setattr(message, name, number.number)
    return True


def _set_map(message: Any, name: str, field: FieldDescriptor, value: Any) -> bool:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        return False
    getattr(message, name).update(value)
    return True


def _set_bytes(message: Any, name: str, field: FieldDescriptor, value: Any) -> bool:
    try:
        setattr(message, name, base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError, TypeError):
        return False  # URL-safe or unpadded base64: json_format takes those
    return True


def _set_int(message: Any, name: str, field: FieldDescriptor, value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).lstrip("-").isdigit():
        return False
    setattr(message, name, int(value))
    return True


def _set_messages(message: Any, name: str, field: FieldDescriptor, value: Any) -> bool:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        return False
    items = getattr(message, name)
    for item in value:
        from_json(item, items.add())
    return True


def _set_strings(message: Any, name: str, field: FieldDescriptor, value: Any) -> bool:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return False
    getattr(message, name).extend(value)
    return True


Setter = Callable[[Any, str, FieldDescriptor, Any], bool]
SETTERS: dict[int, Setter] = {
    STRING: _plain((str,)),
    BOOL: _plain((bool,)),
    NUMBER: _plain((int, float)),
    ENUM: _set_enum,
    BYTES: _set_bytes,
    INT: _set_int,
    MESSAGE: _set_message,
    REPEATED_MESSAGE: _set_messages,
    REPEATED_SCALAR: _set_strings,
    STRING_MAP: _set_map,
    TIME: _set_time,
    SPAN: _set_span,
}


def _duration(duration: Any, text: str) -> bool:
    """``"600s"``, ``"0.100s"``, ``"-1s"`` exactly (no float rounding), or False."""
    body = text[:-1] if text.endswith("s") else ""
    negative = body.startswith("-")
    whole, _, frac = body.lstrip("-").partition(".")
    if not whole.isdigit() or (frac and (not frac.isdigit() or len(frac) > 9)):
        return False
    seconds, nanos = int(whole), int(frac.ljust(9, "0")) if frac else 0
    duration.seconds, duration.nanos = (-seconds, -nanos) if negative else (seconds, nanos)
    return True
