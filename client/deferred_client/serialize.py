"""Pickling a call for later and running it: the rules of App Engine's ``deferred``, in Python 3."""

from __future__ import annotations

import os
import pickle
import types
from collections.abc import Callable
from typing import Any

from .errors import PermanentTaskFailure

__all__ = ["describe", "invoke_member", "run", "serialize"]

#: Set (to anything) to pickle with protocol 0, which Python 2 apps can read too (as App Engine's SDK does).
CROSS_COMPATIBLE_ENV = "DEFERRED_USE_CROSS_COMPATIBLE_PICKLE_PROTOCOL"
Curried = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


def invoke_member(obj: Any, membername: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``obj.<membername>(*args, **kwargs)``; how bound methods are deferred."""
    return getattr(obj, membername)(*args, **kwargs)


def describe(obj: object) -> str:
    """A readable, qualified name for a callable (for error messages and logs)."""
    if isinstance(obj, types.MethodType):
        return f"{describe(obj.__func__)} (bound to {type(obj.__self__).__name__})"
    qualname = getattr(obj, "__qualname__", None)
    if isinstance(qualname, str):
        module = getattr(obj, "__module__", None)
        return f"{module}.{qualname}" if module else qualname
    cls = type(obj)
    return f"instance of {cls.__module__}.{cls.__qualname__}"


def _check_function(obj: types.FunctionType) -> None:
    if obj.__name__ == "<lambda>":
        raise ValueError(
            f"Cannot defer the lambda {describe(obj)}: lambdas cannot be pickled. Defer a function defined at the"
            " top level of a module instead."
        )
    if "<locals>" in obj.__qualname__:
        raise ValueError(
            f"Cannot defer {describe(obj)}: it is a nested function or closure, which cannot be pickled. Defer a"
            " function defined at the top level of a module (pass what it closes over as arguments)."
        )


def _curry(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Curried:
    """``(callable, args, kwargs)`` that pickles and that ``run`` can call, as App Engine builds it."""
    if isinstance(obj, types.FunctionType):
        _check_function(obj)
        return obj, args, kwargs
    if isinstance(obj, types.MethodType):
        func = obj.__func__
        if isinstance(func, types.FunctionType):
            _check_function(func)
        return invoke_member, (obj.__self__, func.__name__, *args), kwargs
    if isinstance(obj, types.BuiltinMethodType):
        owner = obj.__self__
        if owner is None or isinstance(owner, types.ModuleType):
            return obj, args, kwargs
        return invoke_member, (owner, obj.__name__, *args), kwargs
    if callable(obj):
        return obj, args, kwargs
    raise ValueError(f"Cannot defer {obj!r}: it is not callable.")


def _protocol() -> int:
    return 0 if os.environ.get(CROSS_COMPATIBLE_ENV) else pickle.HIGHEST_PROTOCOL


def serialize(obj: Any, *args: Any, **kwargs: Any) -> bytes:
    """Pickle a call of ``obj(*args, **kwargs)`` as a deferred task payload; ``ValueError`` if it cannot be."""
    curried = _curry(obj, args, kwargs)
    try:
        return pickle.dumps(curried, _protocol())
    except Exception as exc:
        try:
            pickle.dumps(curried[0], _protocol())
        except Exception:
            what = "it cannot be pickled by reference (define it at the top level of an importable module)"
        else:
            what = "its arguments cannot be pickled"
        raise ValueError(f"Cannot defer {describe(obj)}: {what}: {type(exc).__name__}: {exc}") from exc


def run(data: bytes) -> Any:
    """Unpickle a deferred payload and call it; ``PermanentTaskFailure`` if it cannot be unpickled."""
    try:
        func, args, kwargs = pickle.loads(data)
    except Exception as exc:
        raise PermanentTaskFailure(f"The task payload cannot be unpickled: {type(exc).__name__}: {exc}") from exc
    return func(*args, **kwargs)
