"""Finding tasks: what each list row runs, and the name and callable filters of the task list."""

from __future__ import annotations

import base64
import pickle
from typing import Any

import pytest
from conftest import Handle, MakeEmulator, RecordingApp
from deferred_client.serialize import serialize
from deferred_emulator.api import task_find
from deferred_emulator.api.task_find import TaskFilter, parse_filter

V1 = "/_emulator/v1"


def send_welcome(user_id: int, *, template: str) -> None:
    """Deferred by these tests, never run (the emulator does not unpickle)."""


def send_invoice(number: int) -> None:
    """Deferred by these tests, never run."""


class Account:
    """A class whose bound method is deferred."""

    def __init__(self, owner: str) -> None:
        self.owner = owner

    def credit(self, amount: int) -> None:
        """Never called here."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
async def held(make_emulator: MakeEmulator, app_server: RecordingApp) -> Handle:
    """An emulator that delivers only on drain or run."""
    return await make_emulator(app_url=app_server.url, dispatch=False, db_path=":memory:")


async def add_deferred(emulator: Handle, name: str, payload: bytes) -> None:
    request = {"relativeUri": "/_ah/queue/deferred", "body": b64(payload)}
    await emulator.add(name=name, appEngineHttpRequest=request)


async def names(emulator: Handle, query: str) -> list[str]:
    data = await emulator.call("GET", f"{V1}/queues/default/tasks?{query}")
    return [t["name"] for t in data["tasks"]]


async def test_list_rows_say_what_each_task_runs(held: Handle) -> None:
    # Given a deferred function, a deferred bound method and a plain task
    await add_deferred(held, "welcome-1", serialize(send_welcome, 42, template="welcome"))
    await add_deferred(held, "credit-1", serialize(Account("ann").credit, 5))
    await held.add(name="plain", appEngineHttpRequest={"relativeUri": "/hooks/sync", "httpMethod": "PUT"})
    # When the queue's tasks are listed
    data = await held.call("GET", f"{V1}/queues/default/tasks")
    rows = {t["name"]: t for t in data["tasks"]}
    # Then deferred rows carry the callable and a short argument summary; the plain one only its request
    assert rows["welcome-1"]["callable"] == f"{__name__}.send_welcome"
    assert rows["welcome-1"]["argsSummary"] == "42, template='welcome'"
    assert rows["credit-1"]["callable"] == f"{__name__}.Account.credit"
    assert rows["credit-1"]["argsSummary"] == "5"
    assert "callable" not in rows["plain"] and (rows["plain"]["method"], rows["plain"]["url"]) == ("PUT", "/hooks/sync")


async def test_a_payload_stored_apart_shows_the_call_it_holds(held: Handle) -> None:
    # Given a large deferred call kept as an entity, with a small task that runs it from there
    inner = serialize(send_invoice, 7)
    async with held.http.post(f"{held.url}{V1}/entities", data=inner) as resp:
        key = (await resp.json())["key"]
    from deferred_client import run_from_datastore

    await add_deferred(held, "big", pickle.dumps((run_from_datastore, (key,), {})))
    # When listed, and when filtered by the inner callable
    [row] = (await held.call("GET", f"{V1}/queues/default/tasks"))["tasks"]
    found = await names(held, "filter=callable:send_invoice")
    # Then the row shows the inner call, and the filter finds it
    assert (row["callable"], row["argsSummary"], row["entityKey"]) == (f"{__name__}.send_invoice", "7", key)
    assert found == ["big"]


async def test_filters_by_name_prefix_and_by_callable(held: Handle) -> None:
    # Given welcome and invoice calls under two name families, and a plain task that names the function in its URL
    for i in range(3):
        await add_deferred(held, f"welcome-{i}", serialize(send_welcome, i, template="t"))
        await add_deferred(held, f"invoice-{i}", serialize(send_invoice, i))
    await held.add(
        name="welcome-raw", appEngineHttpRequest={"relativeUri": "/send_welcome", "body": b64(b"send_welcome")}
    )
    # When filtered by name prefix, by callable, by both, and by a module path
    by_name = await names(held, "filter=name:welcome-")
    by_callable = await names(held, "filter=callable:send_welcome")
    both = await names(held, "filter=name:invoice- callable:send_invoice")
    none = await names(held, "filter=name:invoice- AND callable:send_welcome")
    by_module = await names(held, f"filter=callable:{__name__}")
    # Then each keeps exactly the tasks it describes
    assert sorted(by_name) == ["welcome-0", "welcome-1", "welcome-2", "welcome-raw"]
    assert sorted(by_callable) == ["welcome-0", "welcome-1", "welcome-2"]
    assert sorted(both) == ["invoice-0", "invoice-1", "invoice-2"]
    assert none == []
    assert len(by_module) == 6
    # And the answer echoes the filter it applied
    data = await held.call("GET", f"{V1}/queues/default/tasks?filter=name:welcome-")
    assert data["filter"] == {"name": "welcome-", "callable": ""}


async def test_a_callable_filter_pages_through_matches(held: Handle) -> None:
    # Given five matching tasks between non-matching ones
    for i in range(5):
        await add_deferred(held, f"w{i}", serialize(send_welcome, i, template="t"))
        await add_deferred(held, f"i{i}", serialize(send_invoice, i))
    # When the matches are paged two at a time
    seen: list[str] = []
    token = ""
    for _ in range(5):
        query = "filter=callable:send_welcome&pageSize=2" + (f"&pageToken={token}" if token else "")
        data = await held.call("GET", f"{V1}/queues/default/tasks?{query}")
        seen += [t["name"] for t in data["tasks"]]
        token = data.get("nextPageToken", "")
        if not token:
            break
    # Then every match comes once, in order, and nothing else
    assert seen == [f"w{i}" for i in range(5)]


async def test_a_search_that_runs_out_of_budget_hands_back_a_token(
    held: Handle, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a small read budget and more candidates than it allows before the only match
    monkeypatch.setattr(task_find, "SCAN_BUDGET", 3)
    monkeypatch.setattr(task_find, "SCAN_BATCH", 2)
    for i in range(6):
        await add_deferred(held, f"i{i}", serialize(send_invoice, f"send_welcome {i}"))  # type: ignore[arg-type]
    await add_deferred(held, "w", serialize(send_welcome, 1, template="t"))
    # When searching for welcome calls (every invoice body names send_welcome too, so each is read)
    first = await held.call("GET", f"{V1}/queues/default/tasks?filter=callable:send_welcome")
    assert first["tasks"] == []
    # Then the first page is empty but says where to go on, and following it finds the match
    found: list[str] = []
    token = first.get("nextPageToken")
    for _ in range(10):
        if not token:
            break
        page = await held.call("GET", f"{V1}/queues/default/tasks?filter=callable:send_welcome&pageToken={token}")
        found += [t["name"] for t in page["tasks"]]
        token = page.get("nextPageToken")
    assert found == ["w"]


@pytest.mark.parametrize(
    "text, words",
    [
        ("state:failed", "Invalid filter term"),
        ("name", "Invalid filter term"),
        ("name:a name:b", "given twice"),
        ('callable:"open', "Invalid filter"),
        ("name:bad!", "cannot start a task name"),
    ],
)
async def test_bad_filters_are_clear_400s(held: Handle, text: str, words: str) -> None:
    # When the filter cannot be read, Then the answer is a Google-style 400 that says why
    from urllib.parse import quote

    data = await held.call("GET", f"{V1}/queues/default/tasks?filter={quote(text)}", expect=400)
    assert words in data["error"]["message"] and data["error"]["status"] == "INVALID_ARGUMENT"


def test_filter_text_is_read_with_quotes_and_and() -> None:
    assert parse_filter("") == TaskFilter()
    assert parse_filter('name:rep callable:"myapp.mail"') == TaskFilter("rep", "myapp.mail")
    assert parse_filter("callable:send AND name:x") == TaskFilter("x", "send")
    assert TaskFilter(callable="myapp..mail").body_has()[0] == [b"myapp", b"mail"]


def test_keeps_matches_the_callable_not_the_arguments() -> None:
    flt = TaskFilter(callable="send")
    runs: dict[str, Any] = {"callable": "myapp.send_welcome", "argsSummary": "1"}
    assert flt.keeps(runs) and not flt.keeps(None)
    assert not TaskFilter(callable="welcome2").keeps(runs)
