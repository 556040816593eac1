"""Queue rates shown as people write them."""

from __future__ import annotations

import pytest
from deferred_emulator.models import QueueConfig
from deferred_emulator.rates import format_rate, parse_rate_text, rate_label


@pytest.mark.parametrize(
    "rate, text",
    [
        (5.0, "5/s"),
        (2.5, "2.5/s"),
        (500.0, "500/s"),
        (2 / 60, "2/m"),
        (0.5, "30/m"),
        (3 / 3600, "3/h"),
        (1 / 86400, "1/d"),
        (0.0, "0"),
        (0.0123, "44.3/h"),
    ],
)
def test_natural_units(rate: float, text: str) -> None:
    assert format_rate(rate) == text


def test_queue_yaml_text_is_kept_while_it_holds() -> None:
    # Given a queue whose file said 120/h (2 a minute)
    queue = QueueConfig("q", rate_per_s=120 / 3600, rate_text="120/h")
    # Then it is shown as written, and as a natural unit once the API changed the rate
    assert rate_label(queue) == "120/h"
    assert rate_label(queue.with_changes(rate_per_s=5.0)) == "5/s"
    assert rate_label(QueueConfig("api", rate_per_s=2 / 60)) == "2/m"


def test_parse_rate_text() -> None:
    assert parse_rate_text("20/m") == pytest.approx(1 / 3)
    assert parse_rate_text("0") == 0.0
    assert parse_rate_text("fast") is None
