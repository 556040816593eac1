"""A queue's httpTarget and appEngineRoutingOverride kept, shown and applied; HTTP-target header rules at dispatch."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from conftest import API, Handle, MakeEmulator, RecordingApp
from deferred_emulator.httptarget import override_url
from deferred_emulator.models import UriOverride
from google.cloud import tasks_v2
from test_client_fixtures import LiveEmulator, MakeClient
from test_google_client import LOCATION, PROJECT

pytest_plugins = ["test_client_fixtures"]

PARENT = API.removeprefix("/v2/")
ACCOUNT = "queue@my-project.iam.gserviceaccount.com"


@pytest.mark.parametrize(
    ("url", "override", "expected"),
    [
        ("https://a.test/x?q=1", UriOverride(host="b.test"), "https://b.test/x?q=1"),
        ("https://a.test:8443/x", UriOverride(scheme="HTTP", port=8080), "http://a.test:8080/x"),
        ("http://a.test:81/x", UriOverride(port=0), "http://a.test/x"),
        ("http://a.test/x?q=1", UriOverride(path="/y", query=""), "http://a.test/y"),
        ("http://a.test/x", UriOverride(query="a=1&b=2"), "http://a.test/x?a=1&b=2"),
        # IF_NOT_EXISTS: only the parts the task's URL lacks
        (
            "http://a.test/x?q=1",
            UriOverride(host="b.test", path="/y", query="z", mode="IF_NOT_EXISTS"),
            "http://a.test/x?q=1",
        ),
        ("http://a.test/", UriOverride(port=9, path="/y", query="z", mode="IF_NOT_EXISTS"), "http://a.test:9/y?z"),
        ("http://[::1]:80/x", UriOverride(port=81), "http://[::1]:81/x"),
    ],
)
def test_uri_override(url: str, override: UriOverride, expected: str) -> None:
    assert override_url(url, override) == expected


def queue_http_target(app: RecordingApp, audience: str) -> dict[str, Any]:
    port = app.server.port
    return {
        "uriOverride": {
            "host": "127.0.0.1",
            "port": str(port),
            "pathOverride": {"path": "/queue-path"},
            "uriOverrideEnforceMode": "ALWAYS",
        },
        "httpMethod": "PUT",
        "headerOverrides": [
            {"header": {"key": "X-Queue", "value": "yes"}},
            {"header": {"key": "x-task", "value": "q"}},
        ],
        "oidcToken": {"serviceAccountEmail": ACCOUNT, "audience": audience},
    }


async def test_a_queues_http_target_is_kept_shown_and_applied(
    make_emulator: MakeEmulator, app_server: RecordingApp
) -> None:
    emulator = await make_emulator(app_url=app_server.url, dispatch=False)
    # Given a queue whose httpTarget sends its tasks to the app, by PUT, with a header and an OIDC token
    target = queue_http_target(app_server, "https://queue-audience.example.com")
    created = await emulator.call("POST", f"{API}/queues", {"name": f"{PARENT}/queues/hooks", "httpTarget": target})
    # Then it is shown as given (port as an int64 string)
    assert created["httpTarget"] == target
    assert (await emulator.call("GET", f"{API}/queues/hooks"))["httpTarget"] == target
    # When an HTTP task for another host is added
    task = {"httpRequest": {"url": "http://elsewhere.invalid/orig?keep=1", "headers": {"X-Task": "t"}, "body": "e30="}}
    added = await emulator.call("POST", f"{API}/queues/hooks/tasks", {"task": task})
    # Then the stored task shows its own request, not the queue's
    assert added["httpRequest"]["url"] == "http://elsewhere.invalid/orig?keep=1"
    assert "oidcToken" not in added["httpRequest"]
    # And when it is delivered, it goes where, and how, the queue says: query kept, path replaced,
    # headers overridden (whatever their case)
    assert (await emulator.drain())["succeeded"] == 1
    [req] = app_server.requests
    assert (req.method, req.path) == ("PUT", "/queue-path?keep=1")
    assert req.headers["X-Queue"] == "yes" and req.headers["x-task"] == "q"
    assert [k for k, _ in req.raw_headers if k.lower() == "x-task"] == ["x-task"]
    # And with the queue's token
    claims = jwt.decode(req.headers["Authorization"].split()[1], options={"verify_signature": False})
    assert (claims["aud"], claims["email"]) == ("https://queue-audience.example.com", ACCOUNT)


async def test_update_mask_replaces_only_the_named_parts(emulator: Handle, app_server: RecordingApp) -> None:
    target = queue_http_target(app_server, "https://a.example.com")
    await emulator.call("POST", f"{API}/queues", {"name": f"{PARENT}/queues/hooks", "httpTarget": target})
    # When only the enforce mode and the method are patched
    patch = {"httpTarget": {"uriOverride": {"uriOverrideEnforceMode": "IF_NOT_EXISTS"}, "httpMethod": "POST"}}
    mask = "httpTarget.uriOverride.uriOverrideEnforceMode,httpTarget.httpMethod"
    patched = await emulator.call("PATCH", f"{API}/queues/hooks?updateMask={mask}", patch)
    # Then the rest of the target is kept
    expected = {**target, "httpMethod": "POST"}
    expected["uriOverride"] = {**target["uriOverride"], "uriOverrideEnforceMode": "IF_NOT_EXISTS"}
    assert patched["httpTarget"] == expected
    # And a mask naming the whole field with no value clears it
    cleared = await emulator.call("PATCH", f"{API}/queues/hooks?updateMask=httpTarget", {})
    assert "httpTarget" not in cleared
    # A PATCH without a mask that leaves it out keeps it
    await emulator.call("PATCH", f"{API}/queues/hooks?updateMask=httpTarget", {"httpTarget": target})
    kept = await emulator.call("PATCH", f"{API}/queues/hooks", {"rateLimits": {"maxDispatchesPerSecond": 3}})
    assert kept["httpTarget"] == target


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"oidcToken": {"serviceAccountEmail": ACCOUNT}}, "both serviceAccountEmail and audience"),
        ({"oauthToken": {"scope": "s"}}, "serviceAccountEmail is required"),
        ({"uriOverride": {"port": "70000"}}, "port"),
        ({"uriOverride": {"scheme": "FTP"}}, "scheme"),
        ({"headerOverrides": [{"header": {"value": "v"}}]}, "needs a key"),
    ],
)
async def test_invalid_http_targets_are_refused(emulator: Handle, target: dict[str, Any], message: str) -> None:
    answer = await emulator.call(
        "POST", f"{API}/queues", {"name": f"{PARENT}/queues/bad", "httpTarget": target}, expect=400
    )
    assert message in answer["error"]["message"]


async def test_app_engine_routing_override_keeps_service_version_and_instance(emulator: Handle) -> None:
    routing = {"service": "worker", "version": "v2", "instance": "i1"}
    await emulator.call("POST", f"{API}/queues", {"name": f"{PARENT}/queues/routed"})
    patched = await emulator.call(
        "PATCH", f"{API}/queues/routed?updateMask=appEngineRoutingOverride", {"appEngineRoutingOverride": routing}
    )
    assert patched["appEngineRoutingOverride"] == routing
    assert (await emulator.call("GET", f"{API}/queues/routed"))["appEngineRoutingOverride"] == routing


async def test_http_targets_get_no_content_type_and_standard_names_are_respelled(
    emulator: Handle, app_server: RecordingApp
) -> None:
    body = base64.b64encode(b"{}").decode()
    headers = {"content-type": "application/json", "x-My-Header": "v", "accept": "text/plain"}
    for request in (
        {"url": app_server.url + "/typed", "body": body, "headers": headers},
        {"url": app_server.url + "/untyped", "body": body},
    ):
        await emulator.call("POST", f"{API}/queues/default/tasks", {"task": {"httpRequest": request}})
    await emulator.add(appEngineHttpRequest={"relativeUri": "/app-engine", "body": body})
    await emulator.drain()  # the dispatcher may have delivered some already
    await app_server.wait_for(3)
    by_path = {r.path: [k for k, _ in r.raw_headers] for r in app_server.requests}
    # Standard names go out in their usual spelling, others as given
    assert {"Content-Type", "Accept", "x-My-Header"} <= set(by_path["/typed"])
    assert not {"content-type", "accept"} & set(by_path["/typed"])
    # An HTTP task that set no Content-Type gets none; an App Engine task gets application/octet-stream
    assert not [k for k in by_path["/untyped"] if k.lower() == "content-type"]
    assert "Content-Type" in by_path["/app-engine"]


async def test_googles_client_reads_and_writes_the_queue_fields(
    live_emulator: Callable[..., LiveEmulator], make_client: MakeClient
) -> None:
    emulator = live_emulator()
    client = make_client(emulator)
    name = client.queue_path(PROJECT, LOCATION, "hooks")

    def scenario() -> tasks_v2.Queue:
        target = tasks_v2.HttpTarget(
            uri_override=tasks_v2.UriOverride(
                scheme=tasks_v2.UriOverride.Scheme.HTTPS,
                host="api.example.com",
                port=8443,
                path_override=tasks_v2.PathOverride(path="/hook"),
                uri_override_enforce_mode=tasks_v2.UriOverride.UriOverrideEnforceMode.IF_NOT_EXISTS,
            ),
            http_method=tasks_v2.HttpMethod.PATCH,
            header_overrides=[
                tasks_v2.HttpTarget.HeaderOverride(header=tasks_v2.HttpTarget.Header(key="K", value="V"))
            ],
            oauth_token=tasks_v2.OAuthToken(service_account_email=ACCOUNT, scope="https://scope.example"),
        )
        routing = tasks_v2.AppEngineRouting(service="worker", version="v2", instance="i1")
        queue = tasks_v2.Queue(name=name, http_target=target, app_engine_routing_override=routing)
        created = client.create_queue(parent=client.common_location_path(PROJECT, LOCATION), queue=queue)
        assert created.http_target == target
        assert created.app_engine_routing_override == routing
        return client.get_queue(name=name)

    fetched = await asyncio.to_thread(scenario)
    assert fetched.http_target.uri_override.port == 8443
    assert fetched.http_target.oauth_token.scope == "https://scope.example"
