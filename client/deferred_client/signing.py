"""The emulator's signatures on its deliveries, and the secret they are made with.

The emulator signs every delivery (``X-Deferred-Signature``): an HMAC-SHA256 over the queue, the
task name, the retry count and the body. A recorded delivery therefore cannot be replayed as another
task, into another queue, or as another attempt of the same task. The secret is the one the app
configures (``DEFERRED_EMULATOR_SECRET``); with none, the handlers fetch the emulator's own once,
from ``GET /_emulator/v1/secret``, which the emulator answers only to local programs (its Host and
Origin checks), never to a web page. Peer addresses and proxy headers play no part.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import urllib.error
import urllib.request

__all__ = ["SecretUnavailable", "emulator_secret", "forget_secrets", "sign", "verify"]

#: Where the emulator hands its secret to local programs.
SECRET_PATH = "/_emulator/v1/secret"

_lock = threading.Lock()
_fetched: dict[str, str] = {}


class SecretUnavailable(Exception):
    """Raised when the emulator's signing secret cannot be fetched (the emulator is down or too old)."""


def _message(queue: str, task_name: str, retry_count: str | int, body: bytes) -> bytes:
    return f"{queue}\n{task_name}\n{retry_count}\n".encode() + body


def sign(secret: str | bytes, queue: str, task_name: str, retry_count: str | int, body: bytes) -> str:
    """Hex HMAC-SHA256 over the queue, task name and retry count (each ended by a newline), then the body."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, _message(queue, task_name, retry_count, body), hashlib.sha256).hexdigest()


def verify(
    secret: str | bytes, queue: str, task_name: str, retry_count: str | int, body: bytes, signature: str
) -> bool:
    """Whether ``signature`` is the one ``sign`` gives (constant-time)."""
    expected = sign(secret, queue, task_name, retry_count, body).encode()
    return hmac.compare_digest(expected, (signature or "").encode("utf-8", "surrogateescape"))


def emulator_secret(base_url: str, timeout_s: float = 5.0) -> str:
    """The signing secret of the emulator at ``base_url``, fetched once and then kept."""
    with _lock:
        known = _fetched.get(base_url)
    if known is not None:
        return known
    request = urllib.request.Request(base_url + SECRET_PATH, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            secret = json.loads(resp.read())["secret"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SecretUnavailable(
            f"cannot fetch the emulator's signing secret from {base_url}{SECRET_PATH}: {exc}"
        ) from exc
    if not isinstance(secret, str) or not secret:
        raise SecretUnavailable(f"the emulator at {base_url} answered no signing secret")
    with _lock:
        _fetched[base_url] = secret
    return secret


def forget_secrets() -> None:
    """Fetch the emulator's secret again next time (it changes with a new database)."""
    with _lock:
        _fetched.clear()
