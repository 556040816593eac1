"""End to end, HTTP targets in production: examples/cloudrun's Flask service defers through the emulator acting as
Cloud Tasks, which delivers each task with an OIDC token from its own issuer; the handler verifies the token with
the production code (google-auth), given the emulator's keys URL and issuer instead of Google's.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import deferred_client
import pytest
from aiohttp import web
from deferred_client.transport import SyncTransport
from deferred_emulator.api.common import runtime_key
from test_client_fixtures import WSGIThread, http_post
from test_client_production_fixtures import TOKEN, CloudTasksStandIn, FixedToken, StorageEmulator, production

pytest_plugins = ["test_client_fixtures", "test_client_production_fixtures"]

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "cloudrun"
ACCOUNT = "deferred-tasks@prod-project.iam.gserviceaccount.com"
BIG = 300 * 1024


@pytest.fixture(scope="module")
def service() -> Iterator[ModuleType]:
    """The example's Flask service, imported as Cloud Run would run it."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        import signup_service

        yield signup_service
    finally:
        sys.path.remove(str(EXAMPLE))


@pytest.fixture
def app(service: ModuleType, wsgi_server: Callable[..., WSGIThread], monkeypatch: pytest.MonkeyPatch) -> WSGIThread:
    service.DONE.clear()
    for name in ("GAE_ENV", "GAE_APPLICATION"):
        monkeypatch.delenv(name, raising=False)  # not on App Engine: only OIDC tokens are trusted
    return wsgi_server(service.app)


@pytest.fixture
def cloud(
    app: WSGIThread, cloud_tasks: Callable[..., CloudTasksStandIn], storage: StorageEmulator
) -> Iterator[CloudTasksStandIn]:
    yield cloud_tasks()


def issuer_of(emulator: CloudTasksStandIn) -> str:
    """The ``iss`` of the emulator's tokens (its discovery document says it)."""
    status, discovery = emulator.call("GET", "/.well-known/openid-configuration")
    assert status == 200, discovery
    return str(discovery["issuer"])


def configure_http_targets(emulator: CloudTasksStandIn, app: Any, keys: str = "/oauth2/v1/certs") -> str:
    """Production configuration with HTTP targets; the handler checks tokens against the emulator's issuer."""
    handler = app.url + "/_ah/queue/deferred"
    issuer = issuer_of(emulator)
    production(
        emulator,
        FixedToken(),
        handler_url=handler,
        service_account=ACCOUNT,
        oidc_issuer=issuer,
        oidc_certs_url=issuer + keys,
    )
    return handler


def mint(emulator: CloudTasksStandIn, email: str, audience: str, now_s: float | None = None) -> str:
    """A token from the emulator's issuer, as it signs the ones its deliveries carry."""
    issuer = emulator.runner.app[runtime_key].emulator.issuer
    return str(emulator._run(issuer.id_token(email, audience, now_s)))


@pytest.mark.parametrize("keys", ["/oauth2/v1/certs", "/oauth2/v3/certs"], ids=["pem-certs", "jwk-set"])
def test_http_target_deliveries_carry_tokens_that_verify(
    cloud: CloudTasksStandIn, app: WSGIThread, service: ModuleType, storage: StorageEmulator, keys: str
) -> None:
    handler = configure_http_targets(cloud, app, keys)
    # When the service defers through its own views
    assert http_post(app.url + "/signup/ann")[0] == 202
    upload = bytes(range(256)) * (BIG // 256)
    status, body = http_post(app.url + "/import", upload)
    assert status == 202 and json.loads(body)["payload"].startswith("deferred/")
    # Then the tasks are HTTP tasks to the handler with an OIDC token for the service account
    tasks = cloud.tasks()
    assert {t["httpRequest"]["url"] for t in tasks} == {handler}
    assert len(storage.objects()) == 1
    # And they run once delivered, each with a token the handler verified; the payload object is gone
    cloud.drain()
    assert sorted(service.DONE)[1] == "welcome ann"
    assert sorted(service.DONE)[0].startswith(f"imported {BIG} bytes")
    assert storage.objects() == []
    # The client made Cloud Tasks calls only; the handler fetched the issuer's keys once for both deliveries
    seen = cloud.client_requests()
    key_fetches = [r for r in seen if r.path == keys]
    assert len(key_fetches) == 1
    for request in seen:
        if request not in key_fetches:
            assert request.path.startswith("/v2/") and request.authorization == f"Bearer {TOKEN}", request


def test_the_task_asks_for_a_token_for_the_service_account_and_the_handler(
    cloud: CloudTasksStandIn, app: WSGIThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[dict[str, Any]] = []
    send = SyncTransport.request

    def spy(self: SyncTransport, method: str, path: str, body: bytes | None = None, *args: Any) -> Any:
        sent.append(json.loads(body or b"{}"))
        return send(self, method, path, body, *args)

    monkeypatch.setattr(SyncTransport, "request", spy)
    handler = configure_http_targets(cloud, app)
    deferred_client.defer(len, "x", _headers={"X-Trace": "t"})
    [request] = [s["task"]["httpRequest"] for s in sent]
    assert request["oidcToken"] == {"serviceAccountEmail": ACCOUNT, "audience": handler}
    assert request["url"] == handler and request["headers"]["X-Trace"] == "t"
    assert base64.b64decode(request["body"]) == deferred_client.serialize(len, "x")


def forged_token_cases(emulator: CloudTasksStandIn, handler: str) -> dict[str, str | None]:
    """Authorization headers that must not get a task run, by what is wrong with them."""
    good = mint(emulator, ACCOUNT, handler)
    head, claims, signature = good.split(".")
    tampered_claims = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    tampered_claims["email"] = "intruder@prod-project.iam.gserviceaccount.com"
    tampered = base64.urlsafe_b64encode(json.dumps(tampered_claims).encode()).rstrip(b"=").decode()
    return {
        "missing": None,
        "not a bearer token": "Basic " + base64.b64encode(b"user:pass").decode(),
        "tampered": f"Bearer {head}.{tampered}.{signature}",
        "bad signature": f"Bearer {head}.{claims}.{signature[:-6]}AAAAAA",
        "expired": "Bearer " + mint(emulator, ACCOUNT, handler, now_s=time.time() - 2 * 3600),
        "wrong audience": "Bearer " + mint(emulator, ACCOUNT, "https://elsewhere.example/_ah/queue/deferred"),
        "wrong service account": "Bearer " + mint(emulator, "intruder@prod-project.iam.gserviceaccount.com", handler),
        "not a JWT": "Bearer not-a-token",
    }


def test_missing_tampered_expired_or_misdirected_tokens_get_403_and_run_nothing(
    cloud: CloudTasksStandIn, app: WSGIThread, service: ModuleType
) -> None:
    handler = configure_http_targets(cloud, app)
    body = deferred_client.serialize(service.send_welcome, "mallory")
    task_headers = {"X-CloudTasks-TaskName": "t1", "X-CloudTasks-QueueName": "default"}
    for case, authorization in forged_token_cases(cloud, handler).items():
        headers = dict(task_headers, **({"Authorization": authorization} if authorization else {}))
        status, text = http_post(handler, body, headers)
        assert status == 403, (case, text)
    assert service.DONE == []
    # The same request with a good token runs: the refusals above were about the tokens
    good = {"Authorization": "Bearer " + mint(cloud, ACCOUNT, handler), **task_headers}
    assert http_post(handler, body, good)[0] == 200
    assert service.DONE == ["welcome mallory"]


def test_a_token_from_another_issuer_is_refused(cloud: CloudTasksStandIn, app: WSGIThread, service: ModuleType) -> None:
    handler = configure_http_targets(cloud, app)
    token = mint(cloud, ACCOUNT, handler)
    # The handler expects Google's issuer while the token (validly signed by these keys) names the emulator's
    config = deferred_client.current_config()
    deferred_client.configure(**{**_settings(config), "oidc_issuer": "https://accounts.google.com"})
    body = deferred_client.serialize(service.send_welcome, "eve")
    status, text = http_post(handler, body, {"Authorization": f"Bearer {token}", "X-CloudTasks-TaskName": "t"})
    assert status == 403 and b"issuer" in text
    assert service.DONE == []


def _settings(config: deferred_client.Config) -> dict[str, Any]:
    names = ("backend", "cloud_tasks_url", "project", "location", "credentials", "handler_url", "service_account")
    return {name: getattr(config, name) for name in (*names, "oidc_certs_url", "payload_bucket")}


def test_target_picks_among_services_and_url_replaces_the_path(
    cloud: CloudTasksStandIn, app: WSGIThread, service: ModuleType, wsgi_server: Callable[..., WSGIThread]
) -> None:
    # Two services run the handler; the second one records what reaches it
    reached: list[str] = []

    def worker_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        reached.append(environ["PATH_INFO"])
        return service.app(environ, start_response)

    worker = wsgi_server(worker_app)
    issuer = issuer_of(cloud)
    default_url, worker_url = app.url + "/_ah/queue/deferred", worker.url + "/_ah/queue/deferred"
    production(
        cloud,
        FixedToken(),
        handler_url=f"{default_url}, worker={worker_url}",
        service_account=ACCOUNT,
        oidc_issuer=issuer,
        oidc_certs_url=issuer + "/oauth2/v1/certs",
    )
    cloud.create_queue("other")
    deferred_client.defer(service.send_welcome, "to-worker", _target="worker")
    deferred_client.defer(service.send_welcome, "to-default")
    deferred_client.defer(service.send_welcome, "elsewhere", _target="worker", _url="/tasks/run?x=1", _queue="other")
    with pytest.raises(deferred_client.InvalidTaskError, match="'mailer'.*known: \\(default\\), 'worker'"):
        deferred_client.defer(service.send_welcome, "nowhere", _target="mailer")
    # Each task goes to its service's URL, with that URL as the token's audience
    assert sorted(t["httpRequest"]["url"] for t in cloud.tasks()) == sorted([default_url, worker_url])
    [moved] = cloud.tasks("other")
    assert moved["httpRequest"]["url"] == worker.url + "/tasks/run?x=1"
    cloud.drain(queues=["default"])
    assert sorted(service.DONE) == ["welcome to-default", "welcome to-worker"]
    assert reached == ["/_ah/queue/deferred"]


def test_rotated_keys_are_fetched_again_once_the_held_ones_are_old(
    cloud: CloudTasksStandIn, app: WSGIThread, service: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deferred_client import production_trust

    handler = configure_http_targets(cloud, app)
    headers = {"X-CloudTasks-TaskName": "t"}
    body = deferred_client.serialize(service.send_welcome, "before")
    assert http_post(handler, body, {**headers, "Authorization": "Bearer " + mint(cloud, ACCOUNT, handler)})[0] == 200
    # The issuer's key changes (a reset makes a new one); the handler still holds the old keys
    assert cloud.call("POST", "/_emulator/v1/reset", {})[0] == 200
    rotated = {**headers, "Authorization": "Bearer " + mint(cloud, ACCOUNT, handler)}
    body = deferred_client.serialize(service.send_welcome, "after")
    # Keys fetched moments ago are trusted as they are: the new token is refused
    assert http_post(handler, body, rotated)[0] == 403
    # Once they are old enough, a token that does not verify makes the handler fetch them again
    monkeypatch.setattr(production_trust, "REFETCH_AFTER_S", 0.0)
    assert http_post(handler, body, rotated)[0] == 200
    assert service.DONE == ["welcome before", "welcome after"]


@pytest.mark.parametrize("kind", ["asgi", "aiohttp"])
def test_asgi_and_aiohttp_handlers_verify_tokens_too(
    kind: str,
    cloud: CloudTasksStandIn,
    service: ModuleType,
    asgi_server: Callable[..., Any],
    aiohttp_thread: Callable[..., Any],
) -> None:
    if kind == "asgi":
        server = asgi_server(deferred_client.asgi_application)
    else:
        aio = web.Application()
        deferred_client.add_aiohttp_route(aio)
        server = aiohttp_thread(aio)
    handler = configure_http_targets(cloud, server)
    deferred_client.defer(service.send_welcome, kind)
    cloud.drain()
    assert service.DONE == [f"welcome {kind}"]
    body = deferred_client.serialize(service.send_welcome, "mallory")
    forged = {"Authorization": "Bearer " + mint(cloud, ACCOUNT, "https://elsewhere.example/")}
    assert http_post(handler, body, {"X-CloudTasks-TaskName": "t", **forged})[0] == 403
    assert service.DONE == [f"welcome {kind}"]
