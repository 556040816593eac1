"""The emulator's OpenID Connect issuer: the tokens HTTP tasks carry, and what a handler verifies them with.

An HTTP task with an ``oidcToken`` is delivered with ``Authorization: Bearer <JWT>``, RS256-signed with
a key the emulator keeps in its database (the same across restarts, a new one after a reset), with the
claims Google's tokens have. The emulator serves the discovery document and the public keys, both as a
JWK Set (``jwks_uri``) and as Google's ``{kid: certificate}`` map, so the verification code a handler
runs in production works unchanged but for where it fetches the keys.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from .models import AuthToken
from .store import Store

#: Where the signing key is kept (the ``meta`` table).
KEY_META = "oidc_signing_key"
TOKEN_LIFETIME_S = 3600
#: OAuth's scope when a task names none (Cloud Tasks' default).
DEFAULT_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DISCOVERY_PATH = "/.well-known/openid-configuration"
#: The same paths as Google's: JWK Set (the discovery document's jwks_uri) and PEM certificates by key id.
JWKS_PATH = "/oauth2/v3/certs"
CERTS_PATH = "/oauth2/v1/certs"
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]", "*"})
OAUTH_PREFIX = "emulator-oauth."


def default_issuer(host: str, port: int) -> str:
    """``http://{host}:{port}`` as bound; a wildcard host is written as 127.0.0.1."""
    host = "127.0.0.1" if host in WILDCARD_HOSTS else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def audience_of(url: str) -> str:
    """A task URL without its query (and fragment): the audience when the task names none."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _b64url_int(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    """The private key, its id, and its public forms."""

    private: rsa.RSAPrivateKey
    kid: str
    jwk: dict[str, str]
    cert_pem: str

    @classmethod
    def load(cls, text: str) -> SigningKey:
        """The key kept in the database (PEM private key and certificate, as JSON)."""
        data = json.loads(text)
        private = serialization.load_pem_private_key(data["key"].encode(), password=None)
        assert isinstance(private, rsa.RSAPrivateKey)
        numbers = private.public_key().public_numbers()
        public = {"e": _b64url_int(numbers.e), "kty": "RSA", "n": _b64url_int(numbers.n)}
        # RFC 7638's thumbprint, in hex as Google writes its key ids.
        kid = hashlib.sha256(json.dumps(public, separators=(",", ":"), sort_keys=True).encode()).hexdigest()[:40]
        return cls(private, kid, {**public, "alg": "RS256", "use": "sig", "kid": kid}, data["cert"])

    @staticmethod
    def generate(issuer: str) -> str:
        """A new RSA key and a self-signed certificate for it, as the text ``load`` reads."""
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"deferred-emulator OIDC issuer {issuer}"[:64])])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .sign(private, hashes.SHA256())
        )
        key_pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        return json.dumps({"key": key_pem.decode(), "cert": cert_pem.decode()})


class Issuer:
    """Signs the tokens of HTTP tasks with the key kept in the store; ``url`` is the ``iss`` claim."""

    def __init__(self, store: Store, url: str, explicit: bool = False) -> None:
        self.store = store
        self.url = url.rstrip("/")
        #: Whether ``url`` was configured (--oidc-issuer) rather than derived from the bound address.
        self.explicit = explicit
        self._key: SigningKey | None = None
        self._lock = asyncio.Lock()

    def bound(self, host: str, port: int) -> None:
        """The server is listening: the default issuer names the port it got."""
        if not self.explicit:
            self.url = default_issuer(host, port)

    async def key(self) -> SigningKey:
        """The signing key: kept in memory once read, made (and kept in the database) on first use."""
        if self._key is not None:
            return self._key
        async with self._lock:
            if self._key is None:
                text = await self.store.get_meta(KEY_META)
                if text is None:
                    # A 2048-bit key takes a CPU-bound 50-200 ms to make: off the event loop.
                    made = await asyncio.to_thread(SigningKey.generate, self.url)
                    text = await self.store.put_meta(KEY_META, made, replace=False)
                self._key = SigningKey.load(text)
            return self._key

    async def forget(self) -> None:
        """Drop the key (reset): the next token is signed with a new one."""
        async with self._lock:
            await self.store.delete_meta(KEY_META)
            self._key = None

    async def id_token(self, email: str, audience: str, now_s: float | None = None) -> str:
        """An OIDC ID token as Google signs them for Cloud Tasks, with this issuer's key."""
        key = await self.key()
        # Wall-clock time even under --virtual-clock: the handler checks iat and exp against its own clock.
        issued = int(time.time() if now_s is None else now_s)
        claims = {
            "iss": self.url,
            "aud": audience,
            "azp": email,
            "sub": email,
            "email": email,
            "email_verified": True,
            "iat": issued,
            "exp": issued + TOKEN_LIFETIME_S,
        }
        return jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": key.kid})

    async def authorization(self, auth: AuthToken, url: str) -> str:
        """The ``Authorization`` header of a delivery to ``url`` carrying ``auth``."""
        if auth.kind == "oidc":
            return "Bearer " + await self.id_token(auth.service_account, auth.value or audience_of(url))
        return "Bearer " + oauth_token(auth.service_account, auth.value or DEFAULT_SCOPE)

    def discovery(self) -> dict[str, Any]:
        """The OpenID Connect discovery document (``issuer`` is exactly the ``iss`` of the tokens)."""
        return {
            "issuer": self.url,
            "jwks_uri": self.url + JWKS_PATH,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "claims_supported": ["aud", "azp", "email", "email_verified", "exp", "iat", "iss", "sub"],
        }

    async def jwks(self) -> dict[str, Any]:
        """The public key as a JWK Set."""
        return {"keys": [(await self.key()).jwk]}

    async def certs(self) -> dict[str, str]:
        """The public key as Google's ``oauth2/v1/certs`` writes keys: a PEM certificate by key id."""
        key = await self.key()
        return {key.kid: key.cert_pem}


def oauth_token(email: str, scope: str) -> str:
    """The opaque bearer token of an ``oauthToken``: it names the account and scope; no Google API takes it."""
    payload = json.dumps({"email": email, "scope": scope, "iat": int(time.time())}, separators=(",", ":"))
    return OAUTH_PREFIX + base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode()
