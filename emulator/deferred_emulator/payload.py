"""A safe description of a task's body: deferred pickles are read opcode by opcode, never unpickled.

The pickle is read by ``pickle_reader`` and rendered as the call ``deferred`` will make:
``myapp.tasks.send(42, subject='hi')``.
"""

from __future__ import annotations

import datetime
from typing import Any

from .pickle_reader import CONSTANTS, Call, Global, Map, Obj, Opaque, Seq, Unreadable, read_pickle

#: Longest rendering of one argument, and of the whole call.
MAX_REPR = 200
MAX_CALL = 1000
#: Longest excerpt of a text or binary body.
MAX_EXCERPT = 500
MAX_DEPTH = 6
MAX_ARGS = 50
#: Longest argument summary a task list shows beside the callable.
MAX_SUMMARY = 80


def _clip(text: str, limit: int = MAX_REPR) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Budget:
    """How many more values one rendering may visit: shared references can make a small pickle a huge tree."""

    def __init__(self, nodes: int = 2000) -> None:
        self.nodes = nodes

    def spend(self) -> bool:
        self.nodes -= 1
        return self.nodes >= 0


def render(value: Any, depth: int = 0, budget: _Budget | None = None) -> str:  # noqa: C901 - one branch per kind
    """A Python-like repr of a symbolic value, bounded in depth, breadth and length."""
    budget = budget or _Budget()
    if not budget.spend() or depth > MAX_DEPTH:
        return "…"
    if isinstance(value, CONSTANTS) or isinstance(value, (datetime.date, datetime.time, datetime.timedelta)):
        return _clip(repr(value))
    if isinstance(value, Global):
        return value.path
    if isinstance(value, Opaque):
        return value.text

    def sub(item: Any) -> str:
        return render(item, depth + 1, budget)

    def many(items: list[Any], show: Any = sub, sep: str = ", ") -> str:
        parts: list[str] = []
        for item in items[:MAX_ARGS]:
            if budget.nodes <= 0:
                parts.append("…")
                break
            parts.append(show(item))
        else:
            parts += ["…"] if len(items) > MAX_ARGS else []
        return sep.join(parts)

    if isinstance(value, Seq):
        inner = many(value.items)
        if value.kind == "tuple":
            return _clip(f"({inner},)" if len(value.items) == 1 else f"({inner})")
        if value.kind == "list":
            return _clip(f"[{inner}]")
        if value.kind == "set":
            return _clip(f"{{{inner}}}" if value.items else "set()")
        return _clip(f"frozenset({{{inner}}})")
    if isinstance(value, Map):
        return _clip("{" + many(value.items, lambda kv: f"{sub(kv[0])}: {sub(kv[1])}") + "}")
    if isinstance(value, Obj):
        state = value.state
        if isinstance(state, Map) and all(isinstance(k, str) for k, _ in state.items):
            text = many(state.items, lambda kv: f"{kv[0]}={sub(kv[1])}", " ")
        else:
            text = "" if state is None else sub(state)
        return _clip(f"<{sub(value.cls)}{' ' + text if text else ''}>")
    if isinstance(value, Call):
        args = value.args.items if isinstance(value.args, Seq) else [value.args]
        return _clip(f"{sub(value.func)}({many(args)})")
    return _clip(repr(value))


def _deferred_call(value: Any) -> dict[str, Any] | None:
    """``callable``, ``args``, ``kwargs`` and ``call`` when ``value`` is deferred's (callable, args, kwargs)."""
    if not (isinstance(value, Seq) and value.kind == "tuple" and len(value.items) == 3):
        return None
    func, args, kwargs = value.items
    if not (isinstance(args, Seq) and args.kind == "tuple" and isinstance(kwargs, Map)):
        return None
    if not all(isinstance(k, str) for k, _ in kwargs.items):
        return None
    name = render(func)
    arg_texts = [render(a) for a in args.items[:MAX_ARGS]]
    kwarg_texts = {k: render(v) for k, v in kwargs.items[:MAX_ARGS]}
    out: dict[str, Any] = {"callable": name, "args": arg_texts, "kwargs": kwarg_texts}
    shown, shown_args = name, arg_texts
    if name.endswith(".invoke_member") and len(args.items) >= 2 and isinstance(args.items[1], str):
        # Bound methods are deferred as invoke_member(instance, "method", *args).
        out["boundTo"], out["method"] = arg_texts[0], args.items[1]
        instance = args.items[0]
        owner = render(instance.cls) if isinstance(instance, Obj) else arg_texts[0]
        out["boundCallable"] = f"{owner}.{args.items[1]}"
        shown, shown_args = f"{arg_texts[0]}.{args.items[1]}", arg_texts[2:]
    if name.endswith(".run_from_datastore") and args.items and isinstance(args.items[0], str):
        out["entityKey"] = args.items[0]
    parts = shown_args + [f"{k}={v}" for k, v in kwarg_texts.items()]
    if len(args.items) > MAX_ARGS or len(kwargs.items) > MAX_ARGS:
        out["argCount"] = len(args.items) + len(kwargs.items)
        parts.append("…")
    out["call"] = _clip(f"{shown}({', '.join(parts)})", MAX_CALL)
    out["argsSummary"] = _clip(", ".join(parts), MAX_SUMMARY)
    return out


def call_summary(body: bytes) -> dict[str, str] | None:
    """What a task list shows of a deferred call (``callable``, ``argsSummary``, maybe ``entityKey``), else None."""
    # Pickles start with PROTO (protocol 2 and up) or, in protocols 0 and 1, with MARK or GLOBAL.
    if body[:1] not in (b"\x80", b"(", b"c"):
        return None
    try:
        value, _, _ = read_pickle(body)
    except Unreadable:
        return None
    call = _deferred_call(value)
    if call is None:
        return None
    out = {"callable": call.get("boundCallable", call["callable"]), "argsSummary": call["argsSummary"]}
    if "entityKey" in call:
        out["entityKey"] = call["entityKey"]
    return out


def describe_body(body: bytes) -> dict[str, Any]:
    """What a task body holds: a deferred call, another pickle, text, or bytes; never unpickled."""
    out: dict[str, Any] = {"size": len(body)}
    if not body:
        out["format"] = "empty"
        return out
    try:
        value, protocol, names = read_pickle(body)
    except Unreadable as exc:
        if body[:1] == b"\x80":
            out.update(_excerpt(body))
            out.update(format="pickle", error=f"not a readable pickle: {exc}")
            return out
    else:
        call = _deferred_call(value)
        out.update(format="deferred" if call else "pickle", protocol=protocol, globals=names)
        if call:
            out.update(call)
        else:
            out["value"] = _clip(render(value), MAX_CALL)
        return out
    out.update(_excerpt(body))
    return out


def _excerpt(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        shown = body[: MAX_EXCERPT // 2]
        return {"format": "bytes", "excerpt": shown.hex(" "), "truncated": len(body) > len(shown)}
    shown_text = text[:MAX_EXCERPT]
    return {"format": "text", "excerpt": shown_text, "truncated": len(text) > len(shown_text)}
