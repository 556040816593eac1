"""The OIDC issuer's documents: discovery, the JWK Set, and Google-style PEM certificates."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..oidc import CERTS_PATH, DISCOVERY_PATH, JWKS_PATH
from .common import emulator_of, json_response

#: Verifiers fetch the keys again when a token names a key id they do not have (a reset makes a new key).
NO_CACHE = {"Cache-Control": "no-cache"}


def _answer(data: Any) -> web.Response:
    response = json_response(data)
    response.headers.update(NO_CACHE)
    return response


async def discovery(request: web.Request) -> web.Response:
    """``/.well-known/openid-configuration``: the issuer and where its keys are."""
    return _answer(emulator_of(request).issuer.discovery())


async def jwks(request: web.Request) -> web.Response:
    """The signing key as a JWK Set (the discovery document's ``jwks_uri``)."""
    return _answer(await emulator_of(request).issuer.jwks())


async def certs(request: web.Request) -> web.Response:
    """The signing key as ``{kid: PEM certificate}``, the form of Google's ``oauth2/v1/certs``."""
    return _answer(await emulator_of(request).issuer.certs())


def routes() -> list[web.RouteDef]:
    """The issuer's routes."""
    return [web.get(DISCOVERY_PATH, discovery), web.get(JWKS_PATH, jwks), web.get(CERTS_PATH, certs)]
