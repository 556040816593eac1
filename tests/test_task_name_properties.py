"""Properties of task and queue ids: exactly the documented alphabet and lengths, and clean errors."""

from __future__ import annotations

import re

import pytest
from deferred_emulator.api.tasks_json import task_from_json
from deferred_emulator.errors import InvalidArgument
from deferred_emulator.service import check_queue_name, check_task_name
from deferred_emulator.taskids import generate_task_name
from hypothesis import given, settings
from hypothesis import strategies as st

TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,500}")
QUEUE_ID = re.compile(r"[A-Za-z0-9-]{1,100}")
QUEUE_PATH = "projects/p/locations/l/queues/q"
names = st.text(max_size=510) | st.from_regex(TASK_ID, fullmatch=True) | st.text("ab_-\n\r\t /:.é", max_size=8)


@settings(deadline=None, max_examples=50)
@given(names)
def test_task_ids_are_exactly_the_documented_ones(name: str) -> None:
    valid = TASK_ID.fullmatch(name) is not None
    try:
        check_task_name(name)
    except InvalidArgument:
        assert not valid
    else:
        assert valid


@settings(deadline=None, max_examples=50)
@given(st.text(max_size=110) | st.from_regex(QUEUE_ID, fullmatch=True))
def test_queue_ids_are_exactly_the_documented_ones(name: str) -> None:
    valid = QUEUE_ID.fullmatch(name) is not None
    try:
        check_queue_name(name)
    except InvalidArgument:
        assert not valid
    else:
        assert valid


@pytest.mark.parametrize("name", ["task\n", "queue\n", "a\r\n"])
def test_a_trailing_newline_is_not_part_of_a_valid_id(name: str) -> None:
    with pytest.raises(InvalidArgument):
        check_task_name(name)
    with pytest.raises(InvalidArgument):
        check_queue_name(name)


def test_generated_names_are_valid_distinct_and_rising() -> None:
    names = [generate_task_name() for _ in range(2000)]
    for name in names:
        check_task_name(name)
        assert len(name) == 20 and name.isdigit()
    assert len(set(names)) == len(names)
    # (rising in their leading digits, so that they are added side by side in the name index)
    assert [name[:14] for name in names] == sorted(name[:14] for name in names)


@settings(deadline=None, max_examples=50)
@given(names)
def test_full_task_names_parse_to_their_short_id(short: str) -> None:
    # Given a task named with the full resource path of its queue
    new = task_from_json({"name": f"{QUEUE_PATH}/tasks/{short}"}, "q", QUEUE_PATH, 0)
    # Then the short id is what is kept (validated later, with the queue)
    assert new.name == short


@settings(deadline=None, max_examples=50)
@given(st.text(max_size=40).filter(lambda p: p and p != QUEUE_PATH))
def test_a_name_under_another_queue_is_refused(prefix: str) -> None:
    try:
        new = task_from_json({"name": f"{prefix}/tasks/x"}, "q", QUEUE_PATH, 0)
    except InvalidArgument:
        return
    # Only a name whose "/tasks/" split lands elsewhere gets through, and then as a short id of its own
    assert new.name == "x" or "/tasks/" in prefix
