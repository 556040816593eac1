"""HMAC signatures that prove a delivery came from the emulator."""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["sign", "verify"]


def sign(secret: str | bytes, task_name: str, body: bytes) -> str:
    """Hex HMAC-SHA256 over the task name, a newline, and the body."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, task_name.encode() + b"\n" + body, hashlib.sha256).hexdigest()


def verify(secret: str | bytes, task_name: str, body: bytes, signature: str) -> bool:
    """Whether ``signature`` is the one ``sign`` gives (constant-time)."""
    expected = sign(secret, task_name, body).encode()
    return hmac.compare_digest(expected, (signature or "").encode("utf-8", "surrogateescape"))
