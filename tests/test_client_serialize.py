"""deferred_client.serialize: which callables can be deferred, and how ``run`` calls them."""

from __future__ import annotations

import math
import operator
import pickle
import threading
from functools import partial
from typing import Any

import pytest
from deferred_client import PermanentTaskFailure, invoke_member, run, serialize
from deferred_client.serialize import CROSS_COMPATIBLE_ENV


def add(a: int, b: int = 0) -> int:
    return a + b


class Point:
    """A top-level class: deferring it constructs an instance."""

    def __init__(self, x: int, y: int = 0) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def moved(self, dx: int, dy: int = 0) -> Point:
        return Point(self.x + dx, self.y + dy)

    @classmethod
    def origin(cls, offset: int = 0) -> Point:
        return cls(offset, offset)

    @staticmethod
    def norm(x: int, y: int) -> float:
        return math.hypot(x, y)


class Multiplier:
    """Instances are callable."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __call__(self, value: int) -> int:
        return value * self.factor


def roundtrip(obj: Any, *args: Any, **kwargs: Any) -> Any:
    return run(serialize(obj, *args, **kwargs))


def test_top_level_function_runs_with_args_and_kwargs() -> None:
    assert roundtrip(add, 2, b=3) == 5


def test_top_level_class_is_constructed() -> None:
    assert roundtrip(Point, 1, y=2) == Point(1, 2)


def test_callable_instance_keeps_its_state() -> None:
    assert roundtrip(Multiplier(3), 5) == 15


def test_bound_method_goes_through_invoke_member() -> None:
    # Given a bound method of a picklable instance
    payload = serialize(Point(1, 1).moved, 2, dy=3)
    # Then it is pickled as invoke_member(instance, "moved", ...) and runs on a copy of the instance
    func, args, kwargs = pickle.loads(payload)
    assert func is invoke_member
    assert args[1:] == ("moved", 2) and kwargs == {"dy": 3}
    assert run(payload) == Point(3, 4)


def test_class_method_runs_on_the_class() -> None:
    func, args, _ = pickle.loads(serialize(Point.origin, 4))
    assert func is invoke_member and args[0] is Point
    assert roundtrip(Point.origin, offset=4) == Point(4, 4)


def test_static_method_pickles_by_qualified_name() -> None:
    # Python 3 pickles static methods by their qualified name, so they work (unlike on Python 2)
    assert roundtrip(Point.norm, 3, 4) == 5.0


def test_builtins_and_builtin_methods() -> None:
    assert roundtrip(len, [1, 2, 3]) == 3
    assert roundtrip(math.sqrt, 16) == 4.0
    assert roundtrip(operator.mul, 6, 7) == 42
    assert roundtrip(dict.fromkeys, "ab") == {"a": None, "b": None}
    # A builtin method bound to an object is deferred as invoke_member(obj, name)
    func, args, _ = pickle.loads(serialize("a,b".split, ","))
    assert func is invoke_member and args == ("a,b", "split", ",")
    assert roundtrip("a,b".split, ",") == ["a", "b"]


def test_partial_of_a_top_level_function() -> None:
    assert roundtrip(partial(add, 10), 5) == 15


square = lambda x: x * x  # noqa: E731 - a module-level lambda is still refused


def test_lambda_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"the lambda test_client_serialize\.<lambda>: lambdas cannot be pickled"):
        serialize(square, 2)
    with pytest.raises(ValueError, match=r"lambda test_client_serialize\.test_lambda_is_refused_by_name\.<locals>"):
        serialize(lambda: None)


def test_closure_and_nested_function_are_refused_by_name() -> None:
    offset = 3

    def nested(x: int) -> int:
        return x + offset

    with pytest.raises(ValueError, match=r"test_closure_and_nested_function_are_refused_by_name\.<locals>\.nested"):
        serialize(nested, 1)


def test_instance_of_a_nested_class_is_refused() -> None:
    class Local:
        def __call__(self) -> None:
            pass

    with pytest.raises(ValueError, match=r"Cannot defer instance of .*<locals>\.Local"):
        serialize(Local())
    with pytest.raises(ValueError, match=r"<locals>\.Local\.__call__"):
        serialize(Local().__call__)


def test_unpicklable_arguments_are_refused_naming_the_callable() -> None:
    with pytest.raises(ValueError, match=r"Cannot defer test_client_serialize\.add: its arguments cannot be pickled"):
        serialize(add, threading.Lock())


def test_not_callable_is_refused() -> None:
    with pytest.raises(ValueError, match="not callable"):
        serialize(42)


def test_highest_protocol_by_default_and_protocol_0_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    assert serialize(add, 1)[:2] == bytes([0x80, pickle.HIGHEST_PROTOCOL])
    monkeypatch.setenv(CROSS_COMPATIBLE_ENV, "1")
    assert serialize(add, 1)[:1] != b"\x80"
    assert run(serialize(add, 1, 2)) == 3


def test_unreadable_payload_is_a_permanent_failure() -> None:
    with pytest.raises(PermanentTaskFailure, match="cannot be unpickled"):
        run(b"not a pickle")
    with pytest.raises(PermanentTaskFailure, match="cannot be unpickled"):
        run(pickle.dumps((add, (1,))))  # wrong shape


def test_exceptions_from_the_callable_propagate() -> None:
    with pytest.raises(ZeroDivisionError):
        roundtrip(operator.truediv, 1, 0)


def test_invoke_member_calls_the_named_member() -> None:
    assert invoke_member([3, 1, 2], "index", 2) == 2
