"""Large payloads in a Cloud Storage bucket: written before their task, read, run and deleted by the handler.

Storage is reached through its JSON API with google-auth's ``AuthorizedSession``: three calls (upload,
download, delete) need no more, and the same credentials serve Cloud Tasks and Storage.
``STORAGE_EMULATOR_HOST`` points it at a local Storage emulator, as Google's own clients do.
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Any
from urllib.parse import quote

from .auth import require, resolve_credentials
from .config import ENV, Config, current_config
from .datastore import run_stored
from .errors import ConfigurationError, Error, TransientError
from .serialize import serialize

__all__ = ["StoragePayloads", "payload_store", "run_from_storage"]

STORAGE_EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
GOOGLE_STORAGE = "https://storage.googleapis.com"

_lock = threading.Lock()
_stores: dict[tuple[Any, ...], StoragePayloads] = {}


def _base_url() -> str:
    host = os.environ.get(STORAGE_EMULATOR_ENV, "").strip().rstrip("/")
    if not host:
        return GOOGLE_STORAGE
    return host if "://" in host else "http://" + host


class StoragePayloads:
    """Payload objects in one bucket, named ``<prefix><random hex>``."""

    def __init__(self, bucket: str, prefix: str, credentials: Any, timeout_s: float) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.base = _base_url()
        if credentials is None and self.base != GOOGLE_STORAGE:
            credentials = require("google.auth.credentials").AnonymousCredentials()
        transport = require("google.auth.transport.requests")
        self.session = transport.AuthorizedSession(resolve_credentials(credentials))

    def __repr__(self) -> str:
        return f"<StoragePayloads gs://{self.bucket}/{self.prefix} at {self.base}>"

    def _object_url(self, name: str) -> str:
        return f"{self.base}/storage/v1/b/{quote(self.bucket, safe='')}/o/{quote(name, safe='')}"

    def _fail(self, what: str, name: str, resp: Any) -> Error:
        text = resp.text[:300].strip()
        message = f"Cloud Storage {what} gs://{self.bucket}/{name}: HTTP {resp.status_code}: {text}"
        return TransientError(message) if resp.status_code in (408, 429) or resp.status_code >= 500 else Error(message)

    def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        requests = require("requests")
        try:
            return self.session.request(method, url, timeout=self.timeout_s, **kwargs)
        except requests.RequestException as exc:
            raise TransientError(f"Cloud Storage at {self.base} did not answer: {type(exc).__name__}: {exc}") from exc

    def put(self, data: bytes) -> str:
        """Store a payload as a new object; its name."""
        name = f"{self.prefix}{uuid.uuid4().hex}"
        url = f"{self.base}/upload/storage/v1/b/{quote(self.bucket, safe='')}/o"
        params = {"uploadType": "media", "name": name, "ifGenerationMatch": "0"}
        headers = {"Content-Type": "application/octet-stream"}
        resp = self._call("POST", url, params=params, data=data, headers=headers)
        if resp.status_code != 200:
            raise self._fail("upload to", name, resp)
        return name

    def get(self, name: str) -> bytes | None:
        """A payload, or ``None`` when its object is gone."""
        resp = self._call("GET", self._object_url(name), params={"alt": "media"})
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise self._fail("download of", name, resp)
        return bytes(resp.content)

    def delete(self, name: str) -> None:
        """Delete a payload's object (gone already is fine)."""
        resp = self._call("DELETE", self._object_url(name))
        if resp.status_code not in (200, 204, 404):
            raise self._fail("deletion of", name, resp)

    def runner(self, name: str) -> bytes:
        """The small deferred call that runs the payload stored as ``name``."""
        return serialize(run_from_storage, self.bucket, name)


def payload_store(config: Config, bucket: str | None = None) -> StoragePayloads:
    """The bucket store for a configuration (``bucket`` overrides the configured one), reused across calls."""
    bucket = bucket or config.payload_bucket
    if not bucket:
        raise ConfigurationError(
            f"This payload is over the task size limit and no bucket is configured for it: set {ENV['payload_bucket']}"
            " (or configure(payload_bucket=...))."
        )
    key = (bucket, config.prefix, id(config.credentials), config.timeout_s, _base_url())
    store = _stores.get(key)
    if store is None:
        with _lock:
            store = _stores.get(key)
            if store is None:
                if len(_stores) > 8:
                    _stores.clear()
                store = _stores[key] = StoragePayloads(bucket, config.prefix, config.credentials, config.timeout_s)
    return store


def run_from_storage(bucket: str, name: str) -> Any:
    """Read a payload from the bucket, run it, then delete it (it is kept for the retry if the call fails)."""
    store = payload_store(current_config(), bucket)
    return run_stored(store.get(name), lambda: store.delete(name), f"gs://{bucket}/{name}")
