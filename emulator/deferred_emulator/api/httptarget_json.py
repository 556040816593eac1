"""Cloud Tasks v2 JSON of auth tokens (``oidcToken``, ``oauthToken``) and of a queue's ``httpTarget``."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidArgument
from ..header_rules import check_headers
from ..models import AuthToken, HttpTarget, UriOverride

HTTP_METHODS = ["HTTP_METHOD_UNSPECIFIED", "POST", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"]
SCHEMES = ["SCHEME_UNSPECIFIED", "HTTP", "HTTPS"]
ENFORCE_MODES = ["URI_OVERRIDE_ENFORCE_MODE_UNSPECIFIED", "IF_NOT_EXISTS", "ALWAYS"]
MAX_PORT = 65535


def _enum(value: object, names: list[str], field: str) -> str:
    """An enum given by name or number; the unspecified value is ""."""
    if value is None or value == "":
        return ""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        name = names[value]
    elif isinstance(value, str) and value.upper() in names:
        name = value.upper()
    else:
        raise InvalidArgument(f"Invalid value for {field}: {value!r}.")
    return "" if name == names[0] else name


def _object(value: object, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"Invalid value for {field}: expected an object.")
    return value


def _string(data: dict[str, Any], key: str, field: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"Invalid value for {field}.{key}: expected a string.")
    return value


def auth_from_json(data: dict[str, Any], where: str, *, queue_level: bool = False) -> AuthToken | None:
    """The ``oidcToken`` or ``oauthToken`` of a request (or of a queue's httpTarget), if any."""
    oidc, oauth = data.get("oidcToken"), data.get("oauthToken")
    if oidc is not None and oauth is not None:
        raise InvalidArgument(f"{where} has both oidcToken and oauthToken; at most one of them may be set.")
    if oidc is None and oauth is None:
        return None
    kind, field, other = ("oidc", "oidcToken", "audience") if oidc is not None else ("oauth", "oauthToken", "scope")
    token = _object(oidc if oidc is not None else oauth, f"{where}.{field}")
    email = _string(token, "serviceAccountEmail", f"{where}.{field}")
    value = _string(token, other, f"{where}.{field}")
    if not email:
        raise InvalidArgument(f"{where}.{field}.serviceAccountEmail is required.")
    if queue_level and not value:
        # Production's rule for the queue-level override: both fields.
        raise InvalidArgument(f"{where}.{field}: both serviceAccountEmail and {other} must be specified.")
    return AuthToken(kind, email, value)


def auth_to_json(auth: AuthToken) -> dict[str, Any]:
    """``{"oidcToken": {...}}`` or ``{"oauthToken": {...}}``, empty fields left out as production does."""
    token = {"serviceAccountEmail": auth.service_account}
    if auth.kind == "oidc":
        if auth.value:
            token["audience"] = auth.value
        return {"oidcToken": token}
    if auth.value:
        token["scope"] = auth.value
    return {"oauthToken": token}


def _port(value: object) -> int | None:
    if value is None or value == "":
        return None
    try:
        port = int(str(value)) if not isinstance(value, bool) else -1
    except ValueError:
        port = -1
    if not 0 <= port <= MAX_PORT:
        raise InvalidArgument(f"Invalid value for HttpTarget.uriOverride.port: {value!r} (0 to {MAX_PORT}).")
    return port


def _uri_override(data: dict[str, Any]) -> UriOverride:
    where = "HttpTarget.uriOverride"
    path = data.get("pathOverride")
    query = data.get("queryOverride")
    host = _string(data, "host", where)
    if "/" in host or "?" in host or "#" in host or " " in host:
        raise InvalidArgument(f"Invalid value for {where}.host: {host!r} is not a host name.")
    path_text = None if path is None else _string(_object(path, f"{where}.pathOverride"), "path", where)
    if path_text and not path_text.startswith("/"):
        path_text = "/" + path_text
    return UriOverride(
        scheme=_enum(data.get("scheme"), SCHEMES, f"{where}.scheme"),
        host=host,
        port=_port(data.get("port")),
        path=path_text,
        query=None if query is None else _string(_object(query, f"{where}.queryOverride"), "queryParams", where),
        mode=_enum(data.get("uriOverrideEnforceMode"), ENFORCE_MODES, f"{where}.uriOverrideEnforceMode") or "ALWAYS",
    )


def _header_overrides(value: object) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidArgument("Invalid value for HttpTarget.headerOverrides: expected a list.")
    pairs = []
    for item in value:
        header = _object(_object(item, "HttpTarget.headerOverrides[]").get("header"), "HeaderOverride.header")
        key = _string(header, "key", "HeaderOverride.header")
        if not key:
            raise InvalidArgument("HttpTarget.headerOverrides: every header needs a key.")
        pairs.append((key, _string(header, "value", "HeaderOverride.header")))
    check_headers(dict(pairs), "HttpTarget.headerOverrides")
    return tuple(pairs)


def http_target_from_json(value: object) -> HttpTarget | None:
    """A queue's ``httpTarget``; None when absent."""
    if value is None:
        return None
    data = _object(value, "Queue.httpTarget")
    uri = data.get("uriOverride")
    return HttpTarget(
        uri_override=None if uri is None else _uri_override(_object(uri, "HttpTarget.uriOverride")),
        method=_enum(data.get("httpMethod"), HTTP_METHODS, "HttpTarget.httpMethod"),
        headers=_header_overrides(data.get("headerOverrides")),
        auth=auth_from_json(data, "HttpTarget", queue_level=True),
    )


def http_target_to_json(target: HttpTarget) -> dict[str, Any]:
    """The ``httpTarget`` JSON of a queue, as production shows it."""
    out: dict[str, Any] = {}
    uri = target.uri_override
    if uri is not None:
        shown: dict[str, Any] = {}
        if uri.scheme:
            shown["scheme"] = uri.scheme
        if uri.host:
            shown["host"] = uri.host
        if uri.port:
            shown["port"] = str(uri.port)  # int64: a string in JSON
        if uri.path is not None:
            shown["pathOverride"] = {"path": uri.path} if uri.path else {}
        if uri.query is not None:
            shown["queryOverride"] = {"queryParams": uri.query} if uri.query else {}
        shown["uriOverrideEnforceMode"] = uri.mode
        out["uriOverride"] = shown
    if target.method:
        out["httpMethod"] = target.method
    if target.headers:
        out["headerOverrides"] = [{"header": {"key": k, "value": v}} for k, v in target.headers]
    if target.auth is not None:
        out.update(auth_to_json(target.auth))
    return out
