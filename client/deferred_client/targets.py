"""Where a task is delivered: App Engine routing, or an HTTP target (the handler's URL) with an OIDC token."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .config import ENV, Config
from .errors import ConfigurationError, InvalidTaskError

__all__ = ["Delivery", "delivery_for", "parse_handler_urls"]

DEFAULT_SERVICE = ""
DEFAULT_URL = "/_ah/queue/deferred"


def parse_handler_urls(text: str) -> dict[str, str]:
    """``URL`` or ``SERVICE=URL,SERVICE=URL`` (a bare URL is the default service's) as a dict by service."""
    urls: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        service, sep, url = item.partition("=")
        if not sep or "/" in service or ":" in service:
            service, url = DEFAULT_SERVICE, item
        service, url = service.strip(), url.strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(f"{ENV['handler_url']} must hold full URLs (https://...), not {url!r}.")
        if service in urls:
            raise ConfigurationError(f"{ENV['handler_url']} names the service {service or '(default)'!r} twice.")
        urls[service] = url
    return urls


@dataclass(frozen=True)
class Delivery:
    """How tasks reach the handler: App Engine targets (no handler URLs) or HTTP targets."""

    #: the handler's full URL by service (``""``: the default); empty for App Engine targets.
    handler_urls: tuple[tuple[str, str], ...] = ()
    service_account: str | None = None
    #: whether the emulator's extensions (a countdown counted on its clock) may be used.
    extensions: bool = True

    def http_request(self, target: str | None, url: str) -> dict[str, Any] | None:
        """The ``httpRequest`` fields for a task to ``target`` at ``url`` (``None``: an App Engine task)."""
        if not self.handler_urls:
            return None
        urls = dict(self.handler_urls)
        service = target or DEFAULT_SERVICE
        base = urls.get(service)
        if base is None:
            if target is None and len(urls) == 1:
                base = next(iter(urls.values()))
            else:
                known = ", ".join(repr(s) if s else "(default)" for s in urls)
                raise InvalidTaskError(
                    f"No handler URL for the target {service or '(default)'!r} in {ENV['handler_url']}; known: {known}."
                )
        full = base
        if url != DEFAULT_URL:
            parts = urlsplit(base)
            path, _, query = url.partition("?")
            full = urlunsplit((parts.scheme, parts.netloc, path, query, ""))
        request: dict[str, Any] = {"url": full, "httpMethod": "POST"}
        if self.service_account:
            request["oidcToken"] = {"serviceAccountEmail": self.service_account, "audience": base}
        return request


@lru_cache(maxsize=32)
def _delivery(handler_url: str | None, service_account: str | None, production: bool) -> Delivery:
    urls = tuple(parse_handler_urls(handler_url).items()) if handler_url else ()
    if urls and production and not service_account:
        raise ConfigurationError(
            f"HTTP-target tasks need {ENV['service_account']} (the service account whose OIDC token they carry and"
            " that the handler checks)."
        )
    return Delivery(urls, service_account, extensions=not production)


def delivery_for(config: Config) -> Delivery:
    """The delivery a configuration asks for."""
    return _delivery(config.handler_url, config.service_account, config.production)


def audiences(config: Config) -> list[str]:
    """The OIDC audiences a handler accepts: the configured one, else every configured handler URL."""
    if config.oidc_audience:
        return [a.strip() for a in config.oidc_audience.split(",") if a.strip()]
    return list(parse_handler_urls(config.handler_url).values()) if config.handler_url else []
