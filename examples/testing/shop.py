"""A small Flask shop that defers its slow work; ``test_shop.py`` tests it against the emulator.

deferred-emulator serve --app-url http://127.0.0.1:8080 &
DEFERRED_EMULATOR_HOST=127.0.0.1:8123 flask --app shop run --port 8080
"""

from __future__ import annotations

import deferred_client
from flask import Flask

#: What the deferred tasks did (a real shop would write to its database and call its providers).
RECEIPTS: list[str] = []
REMINDERS: list[str] = []
CHARGES: list[str] = []
#: Switched off by tests to make the payment provider fail.
PROVIDER = {"up": True}
#: Charges are retried once, 60 seconds after a failure, then given up on.
CHARGE_RETRIES = deferred_client.TaskRetryOptions(min_backoff_seconds=60, max_backoff_seconds=3600, task_retry_limit=1)


def send_receipt(order_id: str) -> None:
    """Email the receipt."""
    RECEIPTS.append(order_id)


def remind_to_review(order_id: str) -> None:
    """Ask for a review an hour after the order."""
    REMINDERS.append(order_id)


def charge(order_id: str) -> None:
    """Charge the card; an exception makes the emulator retry the task with backoff."""
    if not PROVIDER["up"]:
        raise ConnectionError("the payment provider is unavailable")
    CHARGES.append(order_id)


app = Flask(__name__)
# /_ah/queue/deferred runs deferred tasks; every other path is the shop.
app.wsgi_app = deferred_client.wrap_wsgi_app(app.wsgi_app)


@app.post("/orders/<order_id>")
def place_order(order_id: str) -> tuple[dict[str, str], int]:
    """Take an order and defer the work that can wait."""
    deferred_client.defer(charge, order_id, _retry_options=CHARGE_RETRIES, _name=f"charge-{order_id}")
    deferred_client.defer(send_receipt, order_id)
    deferred_client.defer(remind_to_review, order_id, _countdown=3600)
    return {"order": order_id}, 202
