"""Ids for tasks added without a name: 20 digits, as production gives them."""

from __future__ import annotations

import random
import secrets
import time

#: Ids must be unique, not secret: a seeded Mersenne Twister costs a fraction of os.urandom.
_random = random.Random(secrets.randbits(128))
_last_us = 0
#: The leading digits count microseconds, modulo this (about 115 days).
_TIME_SPAN = 10**13
_RANDOM_SPAN = 10**6


def generate_task_name() -> str:
    """A 20-digit id: microseconds (rising, never repeated in this process) then six random digits.

    Rising ids land side by side in the database's name index. With wholly random ones every insert
    dirtied another page of that index, and writing those pages back was most of what adding a task
    cost, more so the more tasks were waiting.
    """
    global _last_us
    now = time.time_ns() // 1000
    _last_us = now if now > _last_us else _last_us + 1
    return str(10**19 + (_last_us % _TIME_SPAN) * _RANDOM_SPAN + int(_random.random() * _RANDOM_SPAN))
