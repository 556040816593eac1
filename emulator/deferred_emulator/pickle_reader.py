"""Reading a pickle without running it: ``pickletools`` opcodes drive a small symbolic stack machine.

``pickle.loads`` runs whatever code a payload names, so the emulator never calls it. Here constants
stay Python constants, globals become dotted names, and calls and objects become inert records.
"""

from __future__ import annotations

import datetime
import pickletools
from dataclasses import dataclass, field
from typing import Any

#: Opcodes read before giving up (a task body is at most --max-task-size bytes anyway).
MAX_OPS = 200_000
#: Module names Python 2 pickles use, shown as Python 3 names.
RENAMED = {"__builtin__": "builtins", "copy_reg": "copyreg"}
#: Stdlib value types whose constructors are pure, so they can be rebuilt from constant arguments.
VALUE_TYPES: dict[str, Any] = {
    "datetime.date": datetime.date,
    "datetime.datetime": datetime.datetime,
    "datetime.time": datetime.time,
    "datetime.timedelta": datetime.timedelta,
}
CONSTANTS = (int, float, str, bytes, bytearray, bool, type(None))


class Unreadable(Exception):
    """Raised when the opcodes do not make a pickle this reader can follow."""


@dataclass(frozen=True)
class Global:
    """A module-level name the pickle refers to (a function or class)."""

    path: str


@dataclass
class Seq:
    """A tuple, list, set or frozenset under construction."""

    kind: str
    items: list[Any] = field(default_factory=list)


@dataclass
class Map:
    """A dict under construction."""

    items: list[tuple[Any, Any]] = field(default_factory=list)


@dataclass
class Call:
    """``func(*args)`` recorded, not made (REDUCE); ``state`` is what BUILD set on the result."""

    func: Any
    args: Any
    state: Any = None


@dataclass
class Obj:
    """An instance of ``cls`` (NEWOBJ, INST, OBJ) with the state BUILD gave it."""

    cls: Any
    state: Any = None


@dataclass(frozen=True)
class Opaque:
    """Something only the unpickler could resolve (persistent ids, extension codes, buffers)."""

    text: str


class _Mark:
    """The MARK opcode's place on the stack."""


MARK = _Mark()


def _global(module: str, name: str) -> Global:
    return Global(f"{RENAMED.get(module, module)}.{name}")


def _reduce(func: Any, args: Any) -> Any:
    """The value of ``func(*args)`` when it is a known pure constructor of constants, else a Call."""
    if isinstance(func, Global) and isinstance(args, Seq) and args.kind == "tuple":
        values = args.items
        if func.path == "_codecs.encode" and len(values) == 2 and all(isinstance(v, str) for v in values):
            # How protocols 0-2 spell bytes: encode(text, 'latin1').
            try:
                return values[0].encode(values[1])
            except (LookupError, UnicodeError):
                return Call(func, args)
        if func.path == "copyreg._reconstructor" and values:
            return Obj(values[0])
        maker = VALUE_TYPES.get(func.path)
        if maker is not None and all(isinstance(v, (int, float, bytes)) and not isinstance(v, bool) for v in values):
            try:
                return maker(*values)
            except (TypeError, ValueError, OverflowError):
                return Call(func, args)
        if func.path in ("builtins.set", "builtins.frozenset") and len(values) <= 1:
            inner = values[0] if values else Seq("list")
            if isinstance(inner, Seq):
                return Seq(func.path.split(".")[1], list(inner.items))
    return Call(func, args)


class _Machine:
    """The stack, mark stack and memo of one pickle being read."""

    def __init__(self) -> None:
        self.stack: list[Any] = []
        self.memo: dict[int, Any] = {}
        self.globals: list[str] = []
        self.protocol = 0

    def pop(self) -> Any:
        if not self.stack or self.stack[-1] is MARK:
            raise Unreadable("stack underflow")
        return self.stack.pop()

    def pop_mark(self) -> list[Any]:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i] is MARK:
                items = self.stack[i + 1 :]
                del self.stack[i:]
                return items
        raise Unreadable("no MARK on the stack")

    def top(self) -> Any:
        if not self.stack or self.stack[-1] is MARK:
            raise Unreadable("stack underflow")
        return self.stack[-1]

    def add_global(self, value: Global) -> Global:
        if value.path not in self.globals:
            self.globals.append(value.path)
        return value

    def step(self, name: str, arg: Any) -> None:  # noqa: C901 - one branch per family of opcodes
        """Apply one opcode."""
        if name in ("PROTO",):
            self.protocol = int(arg)
        elif name in ("FRAME", "STOP"):
            return
        elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
            self.stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
        elif name in _CONSTANT_OPS:
            self.stack.append(bytes(arg) if isinstance(arg, bytearray) else arg)
        elif name == "MARK":
            self.stack.append(MARK)
        elif name in _CONTAINER_OPS:
            self._container(name)
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            self.memo[int(arg)] = self.top()
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = self.top()
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if int(arg) not in self.memo:
                raise Unreadable(f"memo key {arg} unset")
            self.stack.append(self.memo[int(arg)])
        elif name == "POP":
            self.pop()
        elif name == "POP_MARK":
            self.pop_mark()
        elif name == "DUP":
            self.stack.append(self.top())
        else:
            self._objects(name, arg)

    def _container(self, name: str) -> None:
        if name == "EMPTY_TUPLE":
            self.stack.append(Seq("tuple"))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            count = int(name[-1])
            items = [self.pop() for _ in range(count)][::-1]
            self.stack.append(Seq("tuple", items))
        elif name in ("TUPLE", "LIST", "FROZENSET"):
            self.stack.append(Seq(name.lower(), self.pop_mark()))
        elif name in ("EMPTY_LIST", "EMPTY_SET"):
            self.stack.append(Seq("list" if name == "EMPTY_LIST" else "set"))
        elif name == "EMPTY_DICT":
            self.stack.append(Map())
        elif name == "DICT":
            items = self.pop_mark()
            self.stack.append(Map(list(zip(items[::2], items[1::2]))))
        elif name == "APPEND":
            value = self.pop()
            self._seq(self.top()).items.append(value)
        elif name in ("APPENDS", "ADDITEMS"):
            values = self.pop_mark()
            self._seq(self.top()).items.extend(values)
        elif name == "SETITEM":
            value, key = self.pop(), self.pop()
            self._map(self.top()).items.append((key, value))
        elif name == "SETITEMS":
            items = self.pop_mark()
            self._map(self.top()).items.extend(zip(items[::2], items[1::2]))

    @staticmethod
    def _seq(value: Any) -> Seq:
        if not isinstance(value, Seq):
            raise Unreadable("APPEND to something that is not a list")
        return value

    @staticmethod
    def _map(value: Any) -> Map:
        if not isinstance(value, Map):
            raise Unreadable("SETITEM on something that is not a dict")
        return value

    def _objects(self, name: str, arg: Any) -> None:  # noqa: C901 - one branch per object opcode
        if name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            self.stack.append(self.add_global(_global(module, attr)))
        elif name == "STACK_GLOBAL":
            attr, module = self.pop(), self.pop()
            if not isinstance(attr, str) or not isinstance(module, str):
                raise Unreadable("STACK_GLOBAL without a module and a name")
            self.stack.append(self.add_global(_global(module, attr)))
        elif name == "REDUCE":
            args = self.pop()
            self.stack.append(_reduce(self.pop(), args))
        elif name == "BUILD":
            state = self.pop()
            target = self.top()
            if isinstance(target, (Obj, Call)):
                target.state = state
        elif name == "NEWOBJ":
            self.pop()
            self.stack.append(Obj(self.pop()))
        elif name == "NEWOBJ_EX":
            self.pop(), self.pop()
            self.stack.append(Obj(self.pop()))
        elif name == "INST":
            module, _, attr = str(arg).partition(" ")
            self.pop_mark()
            self.stack.append(Obj(self.add_global(_global(module, attr))))
        elif name == "OBJ":
            items = self.pop_mark()
            if not items:
                raise Unreadable("OBJ without a class")
            self.stack.append(Obj(items[0]))
        elif name in ("EXT1", "EXT2", "EXT4"):
            self.stack.append(Opaque(f"<extension code {arg}>"))
        elif name == "PERSID":
            self.stack.append(Opaque(f"<persistent id {arg!r}>"))
        elif name == "BINPERSID":
            pid = self.pop()
            self.stack.append(Opaque(f"<persistent id {pid!r}>" if isinstance(pid, CONSTANTS) else "<persistent id>"))
        elif name == "NEXT_BUFFER":
            self.stack.append(Opaque("<out-of-band buffer>"))
        elif name == "READONLY_BUFFER":
            return
        else:
            raise Unreadable(f"unknown opcode {name}")


_CONSTANT_OPS = frozenset(
    "INT BININT BININT1 BININT2 LONG LONG1 LONG4 FLOAT BINFLOAT STRING BINSTRING SHORT_BINSTRING BINBYTES"
    " SHORT_BINBYTES BINBYTES8 BYTEARRAY8 UNICODE BINUNICODE SHORT_BINUNICODE BINUNICODE8".split()
)
_CONTAINER_OPS = frozenset(
    "EMPTY_TUPLE TUPLE1 TUPLE2 TUPLE3 TUPLE LIST FROZENSET EMPTY_LIST EMPTY_SET EMPTY_DICT DICT APPEND APPENDS"
    " ADDITEMS SETITEM SETITEMS".split()
)


def read_pickle(body: bytes) -> tuple[Any, int, list[str]]:
    """The symbolic value a pickle builds, its protocol and the globals it names; Unreadable if it is not one."""
    machine = _Machine()
    stopped_at = -1
    try:
        for count, (opcode, arg, pos) in enumerate(pickletools.genops(body)):
            if count >= MAX_OPS:
                raise Unreadable(f"more than {MAX_OPS} opcodes")
            machine.step(opcode.name, arg)
            if opcode.name == "STOP":
                stopped_at = int(pos or 0)
    except Unreadable:
        raise
    except Exception as exc:  # genops reports malformed input with ValueError and friends
        raise Unreadable(str(exc) or type(exc).__name__) from exc
    if stopped_at != len(body) - 1:
        raise Unreadable("no STOP at the end of the pickle")
    if len(machine.stack) != 1:
        raise Unreadable(f"the pickle leaves {len(machine.stack)} values on the stack instead of one")
    return machine.stack[0], machine.protocol, machine.globals
