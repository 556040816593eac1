"""OIDC tokens on HTTP tasks: a real handler verifies them with PyJWT and with google-auth, fetching the
discovery document and the keys from the emulator, as it would from Google."""

from __future__ import annotations

import base64
import json
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import google.auth.transport.requests
import jwt
import pytest
import requests
from deferred_emulator.oidc import default_issuer
from google.cloud import tasks_v2
from google.oauth2 import id_token
from test_client_fixtures import LiveEmulator, MakeClient, WSGIThread
from test_google_client import LOCATION, PROJECT

pytest_plugins = ["test_client_fixtures"]

ACCOUNT = "tasks@my-project.iam.gserviceaccount.com"
AUDIENCE = "https://worker.example.com"


@dataclass
class Verified:
    """What the handler made of one delivery."""

    path: str
    method: str
    headers: dict[str, str]
    pyjwt: dict[str, Any] | str
    google_auth: dict[str, Any] | str


@dataclass
class VerifyingHandler:
    """A WSGI handler that checks the bearer token as production code does, keys fetched from ``issuer_base``."""

    issuer_base: str
    audience: str
    seen: list[Verified] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def verify_with_pyjwt(self, token: str) -> dict[str, Any]:
        # Production: the discovery document at https://accounts.google.com/.well-known/openid-configuration.
        with urllib.request.urlopen(f"{self.issuer_base}/.well-known/openid-configuration", timeout=10) as resp:
            config = json.load(resp)
        key = jwt.PyJWKClient(config["jwks_uri"]).get_signing_key_from_jwt(token)
        claims: dict[str, Any] = jwt.decode(
            token, key.key, algorithms=["RS256"], audience=self.audience, issuer=config["issuer"]
        )
        if claims["email"] != ACCOUNT or claims["email_verified"] is not True:
            raise ValueError(f"not the expected account: {claims['email']}")
        return claims

    def verify_with_google_auth(self, token: str) -> dict[str, Any]:
        # Production: the same call with certs_url left at its default (Google's oauth2/v1/certs).
        with requests.Session() as session:  # closed here: its kept-alive connection must not outlive the test
            request = google.auth.transport.requests.Request(session)
            claims = dict(
                id_token.verify_token(
                    token, request, audience=self.audience, certs_url=f"{self.issuer_base}/oauth2/v1/certs"
                )
            )
        if claims["iss"] != self.issuer_base or claims["email"] != ACCOUNT:
            raise ValueError(f"unexpected issuer or account: {claims['iss']} {claims['email']}")
        return claims

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
        auth = headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        results: list[dict[str, Any] | str] = []
        for verify in (self.verify_with_pyjwt, self.verify_with_google_auth):
            try:
                results.append(verify(token))
            except Exception as exc:  # the handler answers 401 for any failure, and the test reads why
                results.append(f"{type(exc).__name__}: {exc}")
        query = environ.get("QUERY_STRING")
        path = environ["PATH_INFO"] + (f"?{query}" if query else "")
        with self.lock:
            self.seen.append(Verified(path, environ["REQUEST_METHOD"], headers, results[0], results[1]))
        ok = all(isinstance(r, dict) for r in results)
        start_response("200 OK" if ok else "401 Unauthorized", [("Content-Type", "text/plain")])
        return [b"ok" if ok else b"bad token"]


@pytest.fixture
def verifying(
    live_emulator: Callable[..., LiveEmulator], wsgi_server: Callable[[Callable[..., Any]], WSGIThread]
) -> Iterator[tuple[LiveEmulator, VerifyingHandler, WSGIThread]]:
    emulator = live_emulator()
    handler = VerifyingHandler(f"http://127.0.0.1:{emulator.port}", AUDIENCE)
    yield emulator, handler, wsgi_server(handler)


def http_task(url: str, **token: Any) -> tasks_v2.Task:
    return tasks_v2.Task(http_request=tasks_v2.HttpRequest(url=url, body=b"{}", **token))


def test_a_task_token_verifies_with_pyjwt_and_google_auth(
    verifying: tuple[LiveEmulator, VerifyingHandler, WSGIThread], make_client: MakeClient
):
    emulator, handler, app = verifying
    client = make_client(emulator)
    parent = client.queue_path(PROJECT, LOCATION, "default")
    oidc = tasks_v2.OidcToken(service_account_email=ACCOUNT, audience=AUDIENCE)
    # Given an HTTP task with an OIDC token (Google's sample create_http_task_with_token)
    task = client.create_task(parent=parent, task=http_task(app.url + "/work", oidc_token=oidc))
    # Then the token is kept and shown as production shows it
    assert task.http_request.oidc_token == oidc
    assert client.get_task(name=task.name).http_request.oidc_token == oidc
    # When it is delivered
    report = emulator.drain()
    # Then the handler verified it both ways: signature, audience, issuer and account
    assert report["succeeded"] == 1, (report, handler.seen)
    [seen] = handler.seen
    assert isinstance(seen.pyjwt, dict) and isinstance(seen.google_auth, dict), seen
    claims = seen.pyjwt
    assert claims["iss"] == f"http://127.0.0.1:{emulator.port}"
    assert (claims["aud"], claims["sub"], claims["azp"]) == (AUDIENCE, ACCOUNT, ACCOUNT)
    assert claims["exp"] - claims["iat"] == 3600
    assert seen.google_auth == claims
    assert jwt.get_unverified_header(seen.headers["Authorization"].split()[1])["alg"] == "RS256"


def test_a_wrong_audience_fails_verification(
    verifying: tuple[LiveEmulator, VerifyingHandler, WSGIThread], make_client: MakeClient
) -> None:
    emulator, handler, app = verifying
    client = make_client(emulator)
    parent = client.queue_path(PROJECT, LOCATION, "default")
    oidc = tasks_v2.OidcToken(service_account_email=ACCOUNT, audience="https://someone-else.example.com")
    client.create_task(parent=parent, task=http_task(app.url + "/work", oidc_token=oidc))
    report = emulator.drain()
    assert report["succeeded"] == 0
    seen = handler.seen[0]
    assert isinstance(seen.pyjwt, str) and "InvalidAudience" in seen.pyjwt
    assert isinstance(seen.google_auth, str) and "audience" in seen.google_auth.lower()


def test_the_audience_defaults_to_the_url_without_its_query(
    verifying: tuple[LiveEmulator, VerifyingHandler, WSGIThread], make_client: MakeClient
) -> None:
    emulator, handler, app = verifying
    handler.audience = app.url + "/work"
    client = make_client(emulator)
    parent = client.queue_path(PROJECT, LOCATION, "default")
    oidc = tasks_v2.OidcToken(service_account_email=ACCOUNT)
    task = client.create_task(parent=parent, task=http_task(app.url + "/work?attempt=1", oidc_token=oidc))
    assert task.http_request.oidc_token.audience == ""  # not filled in at rest, as production
    assert emulator.drain()["succeeded"] == 1, handler.seen
    assert isinstance(handler.seen[0].pyjwt, dict) and handler.seen[0].pyjwt["aud"] == app.url + "/work"


def jwks(emulator: LiveEmulator) -> dict[str, Any]:
    status, data = emulator.call("GET", "/oauth2/v3/certs")
    assert status == 200
    return dict(data)


def test_the_key_survives_a_restart_and_reset_makes_a_new_one(
    live_emulator: Callable[..., LiveEmulator],
    wsgi_server: Callable[[Callable[..., Any]], WSGIThread],
    tmp_path: Any,
    make_client: MakeClient,
) -> None:
    db = str(tmp_path / "kept.sqlite3")
    first = live_emulator(db_path=db)
    keys = jwks(first)
    [key] = keys["keys"]
    assert (key["kty"], key["alg"], key["use"]) == ("RSA", "RS256", "sig")
    first.close()
    # When the emulator starts again on the same database, the key is the same
    second = live_emulator(db_path=db)
    assert jwks(second) == keys
    # And a token it signs verifies against the key fetched before the restart
    handler = VerifyingHandler(f"http://127.0.0.1:{second.port}", AUDIENCE)
    app = wsgi_server(handler)
    client = make_client(second)
    parent = client.queue_path(PROJECT, LOCATION, "default")
    oidc = tasks_v2.OidcToken(service_account_email=ACCOUNT, audience=AUDIENCE)
    client.create_task(parent=parent, task=http_task(app.url + "/", oidc_token=oidc))
    assert second.drain()["succeeded"] == 1
    token = handler.seen[0].headers["Authorization"].split()[1]
    assert jwt.get_unverified_header(token)["kid"] == key["kid"]
    public = jwt.PyJWK(key).key
    assert jwt.decode(token, public, algorithms=["RS256"], audience=AUDIENCE)["email"] == ACCOUNT
    # When the emulator is reset, its key is new
    assert second.call("POST", "/_emulator/v1/reset", {})[0] == 200
    assert jwks(second)["keys"][0]["kid"] != key["kid"]


def test_a_configured_issuer_is_the_discovery_documents_and_the_tokens(
    live_emulator: Callable[..., LiveEmulator],
) -> None:
    emulator = live_emulator(oidc_issuer="http://tasks-emulator:8123")
    status, config = emulator.call("GET", "/.well-known/openid-configuration")
    assert status == 200
    assert config["issuer"] == "http://tasks-emulator:8123"
    assert config["jwks_uri"] == "http://tasks-emulator:8123/oauth2/v3/certs"
    assert "RS256" in config["id_token_signing_alg_values_supported"]


def test_an_oauth_token_is_an_opaque_bearer_token(
    live_emulator: Callable[..., LiveEmulator],
    wsgi_server: Callable[[Callable[..., Any]], WSGIThread],
    make_client: MakeClient,
) -> None:
    emulator = live_emulator()
    handler = VerifyingHandler(f"http://127.0.0.1:{emulator.port}", AUDIENCE)
    app = wsgi_server(handler)
    client = make_client(emulator)
    parent = client.queue_path(PROJECT, LOCATION, "default")
    oauth = tasks_v2.OAuthToken(service_account_email=ACCOUNT, scope="https://www.googleapis.com/auth/datastore")
    task = client.create_task(parent=parent, task=http_task(app.url + "/", oauth_token=oauth))
    assert client.get_task(name=task.name).http_request.oauth_token == oauth
    emulator.drain()
    token = handler.seen[0].headers["Authorization"].removeprefix("Bearer ")
    assert token.startswith("emulator-oauth.")
    payload = json.loads(base64.urlsafe_b64decode(token.removeprefix("emulator-oauth.") + "=="))
    assert (payload["email"], payload["scope"]) == (ACCOUNT, oauth.scope)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ({"oidcToken": {"audience": AUDIENCE}}, "serviceAccountEmail is required"),
        ({"oidcToken": {"serviceAccountEmail": ACCOUNT}, "oauthToken": {"serviceAccountEmail": ACCOUNT}}, "both"),
        ({"oidcToken": "me"}, "expected an object"),
    ],
)
def test_invalid_tokens_are_refused(
    live_emulator: Callable[..., LiveEmulator], token: dict[str, Any], message: str
) -> None:
    emulator = live_emulator()
    path = f"/v2/projects/{PROJECT}/locations/{LOCATION}/queues/default/tasks"
    status, answer = emulator.call("POST", path, {"task": {"httpRequest": {"url": "http://x.test/", **token}}})
    assert status == 400 and message in answer["error"]["message"], answer
    assert emulator.tasks() == []


@pytest.mark.parametrize(
    ("host", "port", "issuer"),
    [
        ("127.0.0.1", 8123, "http://127.0.0.1:8123"),
        ("0.0.0.0", 8123, "http://127.0.0.1:8123"),
        ("::", 9000, "http://127.0.0.1:9000"),
        ("localhost", 8123, "http://localhost:8123"),
        ("::1", 8123, "http://[::1]:8123"),
    ],
)
def test_the_default_issuer_is_the_bound_address(host: str, port: int, issuer: str) -> None:
    assert default_issuer(host, port) == issuer
