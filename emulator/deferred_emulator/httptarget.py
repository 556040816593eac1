"""A queue's ``httpTarget`` applied to its HTTP tasks at dispatch: URL parts, method, headers and token."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

from .models import HttpTarget, Task, UriOverride


def override_url(url: str, uri: UriOverride) -> str:
    """``url`` with the override's parts: all of them (ALWAYS), or only those the URL lacks (IF_NOT_EXISTS)."""
    parts = urlsplit(url)
    always = uri.mode != "IF_NOT_EXISTS"
    scheme = parts.scheme
    if uri.scheme and always:
        scheme = uri.scheme.lower()
    host = parts.hostname or ""
    if uri.host and (always or not host):
        host = uri.host
    port = parts.port
    if uri.port is not None and (always or port is None):
        port = uri.port or None  # 0 clears the port
    path = parts.path
    if uri.path is not None and (always or path in ("", "/")):
        path = uri.path
    query = parts.query
    if uri.query is not None and (always or not query):
        query = uri.query
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + host + (f":{port}" if port else "")
    return urlunsplit((scheme, netloc, path, query, parts.fragment))


def apply_http_target(task: Task, target: HttpTarget) -> Task:
    """The task as its queue's ``httpTarget`` has it delivered (the stored task is not changed)."""
    url = task.url if target.uri_override is None else override_url(task.url, target.uri_override)
    headers = task.headers
    if target.headers:
        names = {name.lower() for name, _ in target.headers}
        headers = {k: v for k, v in task.headers.items() if k.lower() not in names}
        headers.update(target.headers)
    return replace(
        task,
        url=url,
        method=target.method or task.method,
        headers=headers,
        auth=target.auth or task.auth,
    )
