"""v2beta3's Queue shape, for both transports: App Engine routing sits under ``appEngineHttpQueue``.

The rest of a v2beta3 queue or task reads and writes as v2's; a pull queue (queue.yaml ``mode: pull``)
shows as ``type: PULL``, as v2beta3 names it.
"""

from __future__ import annotations

from typing import Any

BETA = "v2beta3"
ROUTING = "appEngineRoutingOverride"
HTTP_QUEUE = "appEngineHttpQueue"


def queue_in(data: dict[str, Any], version: str) -> dict[str, Any]:
    """A Queue as the client sent it, in v2's shape."""
    if version != BETA or HTTP_QUEUE not in data:
        return data
    out = {k: v for k, v in data.items() if k != HTTP_QUEUE}
    http_queue = data[HTTP_QUEUE]
    if isinstance(http_queue, dict) and ROUTING in http_queue:
        out[ROUTING] = http_queue[ROUTING]
    return out


def queue_out(data: dict[str, Any], version: str) -> dict[str, Any]:
    """A queue's v2 JSON in the version asked for."""
    if version != BETA:
        return data
    out = {k: v for k, v in data.items() if k not in (ROUTING, "mode")}
    out[HTTP_QUEUE] = {ROUTING: data[ROUTING]} if ROUTING in data else {}
    out["type"] = "PULL" if data.get("mode") == "PULL" else "PUSH"
    return out


def mask_in(mask: list[str] | None, version: str) -> list[str] | None:
    """An update mask's paths in v2's names (``appEngineHttpQueue[.appEngineRoutingOverride...]``)."""
    if version != BETA or mask is None:
        return mask
    renamed = []
    for path in mask:
        head, _, rest = path.partition(".")
        if head in (HTTP_QUEUE, "app_engine_http_queue"):
            rest = rest.replace("app_engine_routing_override", ROUTING)
            renamed.append(rest if rest.startswith(ROUTING) else ROUTING)
        else:
            renamed.append(path)
    return renamed
