"""Describing task bodies: pickles are read opcode by opcode and never run."""

from __future__ import annotations

import datetime
import pickle
import time
from pathlib import Path

import pytest
from deferred_emulator.payload import describe_body
from deferred_emulator.pickle_reader import Unreadable, read_pickle


class Marker:
    """Unpickling an instance of this class would touch a file (it must never happen)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (Path(self.path),))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_a_deferred_call_reads_the_same_in_every_protocol(protocol: int) -> None:
    # Given a deferred-style (callable, args, kwargs) with assorted constants
    value = (len, (1, "x", b"y", [1, 2], {"a": 1.5}, datetime.date(2020, 1, 2), {3}), {"k": None})
    # When described
    data = describe_body(pickle.dumps(value, protocol))
    # Then the call reads as Python, with Python 3 names
    assert data["format"] == "deferred" and data["protocol"] == protocol
    assert data["call"] == "builtins.len(1, 'x', b'y', [1, 2], {'a': 1.5}, datetime.date(2020, 1, 2), {3}, k=None)"


def test_a_hostile_pickle_is_described_not_run(tmp_path: Path) -> None:
    # Given a pickle that would create a file if it were loaded
    target = tmp_path / "pwned"
    body = pickle.dumps((print, (Marker(str(target)),), {}))
    # When described
    data = describe_body(body)
    # Then the call it would make is shown, and nothing ran
    assert "pathlib.Path.touch(" in data["args"][0] and "pathlib." in " ".join(data["globals"])
    assert not target.exists()


def test_shared_references_cannot_blow_up_the_rendering() -> None:
    # Given a small pickle whose shared references make a tree of 50**9 leaves
    value: object = [1] * 50
    for _ in range(8):
        value = [value] * 50
    body = pickle.dumps((print, (value,), {}))
    # When described, Then it takes milliseconds and the text stays short
    start = time.perf_counter()
    data = describe_body(body)
    assert (
        time.perf_counter() - start < 5.0
    )  # an exponential rendering would take far longer; 0.5 s failed at 0.99 s on a slow machine
    assert len(data["call"]) <= 1000


def test_cycles_and_long_argument_lists_are_cut_short() -> None:
    # Given a list that contains itself, and a call with many arguments
    loop: list[object] = []
    loop.append(loop)
    many = describe_body(pickle.dumps((print, tuple(range(500)), {})))
    # Then both are rendered with an ellipsis
    assert "…" in describe_body(pickle.dumps(loop))["value"]
    assert len(many["args"]) == 50 and many["argCount"] == 500 and many["call"].endswith(", 49, …)")


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"\x80\x05.", "leaves 0 values"),  # STOP with nothing built
        (b"\x80\x05h\x07.", "memo"),  # BINGET of a key never PUT
        (b"\x80\x05K\x01K\x02.", "leaves 2 values"),  # two values left on the stack
        (b"\x80\x05K\x01.K\x02", "no STOP at the end"),  # data after STOP
        (b"\x80\x05a.", "stack"),  # APPEND with nothing to append to
    ],
)
def test_malformed_pickles_are_unreadable(body: bytes, reason: str) -> None:
    # When a malformed pickle is read, Then it is refused with a reason, and described as an unreadable pickle
    with pytest.raises(Unreadable, match=reason):
        read_pickle(body)
    data = describe_body(body)
    assert data["format"] == "pickle" and "not a readable pickle" in data["error"]


def test_a_pickle_that_is_not_a_call_shows_its_value() -> None:
    # A pickled value that is not (callable, args, kwargs) is shown as a value
    data = describe_body(pickle.dumps({"user": 7, "tags": ("a", "b")}))
    assert data["format"] == "pickle" and data["value"] == "{'user': 7, 'tags': ('a', 'b')}"


def test_text_and_bytes_get_a_bounded_excerpt() -> None:
    long_text = describe_body(b"x" * 2000)
    assert long_text["format"] == "text" and len(long_text["excerpt"]) == 500 and long_text["truncated"]
    assert describe_body(b"\xff\xfe\x00")["excerpt"] == "ff fe 00"
    assert describe_body(b"") == {"size": 0, "format": "empty"}
