"""Client authentication (RFC 6749 §2.3, RFC 7523 §3), from the attacker's side.

Each method works only for the client that registered it, and every way of
getting it wrong (wrong secret, another client's secret, a forged or
replayed assertion, one made for the token endpoint rather than the issuer,
an expired one, ``alg: none``, an unknown client) is the same 401
``invalid_client`` and changes nothing. The endpoint here is a test route
(``factories.oauth_clients.client_auth_endpoint``) that authenticates and
answers the client id, as the token endpoint calls ``authenticate_client``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey
from joserfc.jws import JWSRegistry
from sqlalchemy import func, select

from bastion.audit import EventTag
from bastion.audit.models import AuditEvent
from bastion.oauth.clients import ClientRegistry
from bastion.oauth.models import OAuthReplay
from conftest import TOKEN, token_request
from factories import unit_of_work
from factories.oauth_clients import (
    ASSERTION_TYPE,
    CLIENT_AUTH_ROUTE,
    NATIVE_APP,
    WEB_APP,
    assertion,
    client_auth_endpoint,
    public_jwks,
    register_client,
    signing_key,
)
from harness import Harness

ROUTE = CLIENT_AUTH_ROUTE
FORM = {"grant_type": "client_credentials"}


@pytest.fixture
async def h(harness: Harness) -> AsyncIterator[Harness]:
    async with client_auth_endpoint(harness.app, harness.address) as client:
        yield dataclasses.replace(harness, client=client)


def basic(client_id: str, secret: str) -> dict[str, str]:
    """RFC 6749 §2.3.1: each part form-urlencoded, then Basic (here every character escaped)."""
    encoded = "".join(f"%{byte:02X}" for byte in client_id.encode()) + ":" + quote(secret, safe="")
    return {"authorization": "Basic " + base64.b64encode(encoded.encode()).decode()}


async def post(h: Harness, data: dict[str, str], headers: dict[str, str] | None = None) -> httpx.Response:
    return await h.client.post(ROUTE, data={**FORM, **data}, headers=headers or {})


def refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")
    assert response.headers["cache-control"] == "no-store"


def now(h: Harness) -> int:
    return int(h.clock.now().timestamp())


async def replays(h: Harness) -> int:
    return int(await h.app.state.db.value(select(func.count()).select_from(OAuthReplay)))


# --- secrets ---------------------------------------------------------------


async def test_client_secret_basic_with_form_encoded_credentials(h: Harness) -> None:
    client, secret = await register_client(h.app)
    assert client.token_endpoint_auth_method == "client_secret_basic"
    assert secret is not None
    response = await post(h, {}, basic(client.id, secret))
    assert response.status_code == 200, response.text
    assert response.json() == {"client_id": client.id}
    # The client_id may also be repeated in the body, if it is the same one.
    assert (await post(h, {"client_id": client.id}, basic(client.id, secret))).status_code == 200


async def test_client_secret_post(h: Harness) -> None:
    client, secret = await register_client(h.app, token_endpoint_auth_method="client_secret_post")
    assert secret is not None
    response = await post(h, {"client_id": client.id, "client_secret": secret})
    assert response.status_code == 200, response.text
    # Registered for the body: the same secret in a Basic header is not its method.
    refused(await post(h, {}, basic(client.id, secret)))


async def test_only_the_registered_method_authenticates(h: Harness) -> None:
    """RFC 7591 §2: a client_secret_basic client's secret does not work in the body."""
    client, secret = await register_client(h.app)
    assert secret is not None
    refused(await post(h, {"client_id": client.id, "client_secret": secret}))


async def test_wrong_secret_another_clients_secret_and_unknown_client(h: Harness) -> None:
    """V10.4.10 (ASVS 5.0): the client is authenticated, with its own credentials only."""
    alice, alice_secret = await register_client(h.app)
    _, bob_secret = await register_client(h.app, name="Bob")
    assert alice_secret is not None
    assert bob_secret is not None
    before = await replays(h)
    refused(await post(h, {}, basic(alice.id, alice_secret[:-1] + ("A" if alice_secret[-1] != "A" else "B"))))
    refused(await post(h, {}, basic(alice.id, bob_secret)))
    refused(await post(h, {}, basic("no-such-client", alice_secret)))
    refused(await post(h, {"client_id": "x" * 65, "client_secret": alice_secret}))
    refused(await post(h, {}, {"authorization": "Basic not-base64!"}))
    refused(await post(h, {}, {"authorization": "Basic " + base64.b64encode(b"no-colon").decode()}))
    assert await replays(h) == before


async def test_two_methods_at_once_is_invalid_request(h: Harness) -> None:
    """RFC 6749 §2.3: a client MUST NOT use more than one authentication method per request."""
    client, secret = await register_client(h.app)
    assert secret is not None
    response = await post(h, {"client_id": client.id, "client_secret": secret}, basic(client.id, secret))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    # A body client_id that names another client than the Basic one is refused too.
    response = await post(h, {"client_id": "someone-else"}, basic(client.id, secret))
    assert response.json()["error"] == "invalid_request"


async def test_confidential_client_without_credentials_is_refused(h: Harness) -> None:
    client, _ = await register_client(h.app)
    refused(await post(h, {"client_id": client.id}))
    refused(await post(h, {}))


async def test_public_client_names_itself_and_has_no_secret(h: Harness) -> None:
    client, secret = await register_client(h.app, NATIVE_APP)
    assert secret is None
    assert client.public
    assert client.token_endpoint_auth_method == "none"
    assert (await post(h, {"client_id": client.id})).status_code == 200
    refused(await post(h, {"client_id": client.id, "client_secret": "anything"}))
    refused(await post(h, {}, basic(client.id, "anything")))


async def test_secret_survives_a_rotation_of_the_hmac_keyring(h: Harness) -> None:
    """The digest names its key, so rotating the "hmac" keyring keeps old secrets valid."""
    client, secret = await register_client(h.app)
    assert secret is not None
    h.app.state.keys.hmac.rotate()
    assert (await post(h, {}, basic(client.id, secret))).status_code == 200


async def _expired_refusals(h: Harness) -> list[dict[str, Any]]:
    rows = await h.app.state.db.all(
        select(AuditEvent.outcome, AuditEvent.details).where(AuditEvent.tag == EventTag.OAUTH_CLIENT_AUTH.value)
    )
    return [{"outcome": row.outcome, **row.details} for row in rows]


async def test_an_expired_secret_is_refused_as_a_wrong_one_and_a_rotated_one_works(harness: Harness) -> None:
    """V13.3.4 (secrets expire and are rotated as documented): a client secret authenticates
    at the token endpoint until oauth.client_secret_lifetime after it was issued; from then
    on, with client_secret_basic and client_secret_post alike, it is the same 401
    invalid_client as a wrong secret, recorded as an oauth:client:auth failure with reason
    secret_expired (a wrong secret records nothing); the rotated secret works, and expires
    a lifetime after its rotation."""
    lifetime = dt.timedelta(seconds=harness.settings.oauth.client_secret_lifetime)
    grant = {"grant_type": "client_credentials"}
    issued = harness.clock.now()
    service = {"grant_types": ("client_credentials",), "scopes": ("records:notes:read",)}
    basic_client, basic_secret = await register_client(harness.app, **service)
    post_client, post_secret = await register_client(
        harness.app, name="Post", token_endpoint_auth_method="client_secret_post", **service
    )
    assert basic_secret is not None
    assert post_secret is not None
    assert basic_client.secret_expires_at == issued + lifetime

    def by_post(secret: str) -> dict[str, str]:
        return {"client_id": post_client.id, "client_secret": secret, **grant}

    harness.clock.at = issued + lifetime - dt.timedelta(seconds=1)  # the last second it works
    assert (await token_request(harness, basic_client.id, basic_secret, grant)).status_code == 200
    assert (await harness.client.post(TOKEN, data=by_post(post_secret))).status_code == 200

    harness.clock.at = issued + lifetime
    wrong = await token_request(harness, basic_client.id, basic_secret[::-1], grant)
    refused(wrong)
    assert await _expired_refusals(harness) == []
    expired = await token_request(harness, basic_client.id, basic_secret, grant)
    refused(expired)
    assert expired.json() == wrong.json()
    refused(await harness.client.post(TOKEN, data=by_post(post_secret)))
    assert await _expired_refusals(harness) == [
        {"outcome": "failure", "client_id": client.id, "method": client.token_endpoint_auth_method,
         "reason": "secret_expired", "expired_at": (issued + lifetime).isoformat()}
        for client in (basic_client, post_client)
    ]  # fmt: skip

    async with unit_of_work(harness.app) as uow:
        rotated = await ClientRegistry.of(harness.app.state).rotate_secret(uow, basic_client.id)
    assert rotated is not None
    new_secret, new_expiry = rotated
    assert new_expiry == harness.clock.now() + lifetime
    assert (await token_request(harness, basic_client.id, new_secret, grant)).status_code == 200
    refused(await token_request(harness, basic_client.id, basic_secret, grant))  # the old one stays dead
    harness.clock.at = new_expiry
    refused(await token_request(harness, basic_client.id, new_secret, grant))


# --- private_key_jwt ----------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_private_key_jwt(h: Harness, alg: str) -> None:
    key = signing_key(alg)
    client, secret = await register_client(h.app, WEB_APP, jwks=public_jwks(key))
    assert secret is None
    assert client.token_endpoint_auth_method == "private_key_jwt"
    signed = assertion(key, client.id, h.settings.auth.public_url, now=now(h))
    response = await post(h, {"client_assertion_type": ASSERTION_TYPE, "client_assertion": signed})
    assert response.status_code == 200, response.text
    assert response.json() == {"client_id": client.id}


async def jwt_client(h: Harness) -> tuple[Any, Any]:
    key = signing_key("ES256")
    client, _ = await register_client(h.app, WEB_APP, jwks=public_jwks(key))
    return client, key


async def with_assertion(h: Harness, signed: str, **extra: str) -> httpx.Response:
    return await post(h, {"client_assertion_type": ASSERTION_TYPE, "client_assertion": signed, **extra})


async def test_assertion_refusals_change_nothing(h: Harness) -> None:
    """RFC 7523 §3 and RFC 9700 §2.3, each way an assertion can be wrong."""
    client, key = await jwt_client(h)
    other_client, other_key = await jwt_client(h)
    issuer, t = h.settings.auth.public_url, now(h)
    token_endpoint = issuer.rstrip("/") + "/oauth2/token"
    forged_key = signing_key("ES256", kid=key.kid)  # same kid, another key
    bad = {
        "forged": assertion(forged_key, client.id, issuer, now=t),
        "another client's key": assertion(other_key, client.id, issuer, now=t, header={"kid": other_key.kid}),
        "aud is the token endpoint": assertion(key, client.id, token_endpoint, now=t),
        "aud is a list": assertion(key, client.id, [issuer], now=t),
        "aud is another server": assertion(key, client.id, "https://elsewhere.example", now=t),
        "expired": assertion(key, client.id, issuer, now=t - 600),
        "exp too far ahead": assertion(key, client.id, issuer, now=t, lifetime=3600),
        "no exp": assertion(key, client.id, issuer, now=t, exp=None),
        "no jti": assertion(key, client.id, issuer, now=t, jti=None),
        "iss is another client": assertion(key, client.id, issuer, now=t, iss=other_client.id),
        "sub is another client": assertion(key, other_client.id, issuer, now=t, iss=client.id),
        "iat in the future": assertion(key, client.id, issuer, now=t + 600),
        "a key in the header": assertion(key, client.id, issuer, now=t, header={"jwk": key.as_dict(private=False)}),
        "not a JWT": "not.a.jwt",
    }
    unsigned = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(
        f'{{"iss":"{client.id}","sub":"{client.id}","aud":"{issuer}","exp":{t + 60},"jti":"x"}}'.encode()
    )
    bad["alg none"] = f"{unsigned}.{body.rstrip(b'=').decode()}."
    # HS256 keyed with the public key's text: the classic algorithm confusion.
    confused = OctKey.import_key(str(public_jwks(key)).encode())
    bad["HS256 with the public key"] = jwt.encode(
        {"alg": "HS256", "kid": key.kid},
        {"iss": client.id, "sub": client.id, "aud": issuer, "exp": t + 60, "jti": "y"},
        confused,
        registry=JWSRegistry(algorithms=["HS256"]),
    )
    before = await replays(h)
    for name, signed in bad.items():
        response = await with_assertion(h, signed)
        assert response.status_code == 401, name
        assert response.json()["error"] == "invalid_client", name
    assert await replays(h) == before
    # The wrong assertion type, or a type without an assertion.
    good = assertion(key, client.id, issuer, now=t)
    refused(await post(h, {"client_assertion_type": "urn:other", "client_assertion": good}))
    assert (await post(h, {"client_assertion_type": ASSERTION_TYPE})).json()["error"] == "invalid_request"
    # And a secret next to an assertion is two methods.
    both = await with_assertion(h, good, client_secret="x", client_id=client.id)
    assert both.json()["error"] == "invalid_request"
    assert (await with_assertion(h, good)).status_code == 200


async def test_assertion_is_single_use(h: Harness) -> None:
    client, key = await jwt_client(h)
    signed = assertion(key, client.id, h.settings.auth.public_url, now=now(h))
    assert (await with_assertion(h, signed)).status_code == 200
    refused(await with_assertion(h, signed))


async def test_concurrent_replays_of_one_assertion_exactly_one_wins(h: Harness) -> None:
    client, key = await jwt_client(h)
    signed = assertion(key, client.id, h.settings.auth.public_url, now=now(h))
    responses = await asyncio.gather(*(with_assertion(h, signed) for _ in range(10)))
    assert sorted(response.status_code for response in responses) == [200] + [401] * 9
    assert await replays(h) == 1


async def test_assertion_of_a_deleted_client_is_refused(h: Harness) -> None:
    from bastion.oauth.clients import ClientRegistry
    from factories import unit_of_work as factory_uow

    client, key = await jwt_client(h)
    async with factory_uow(h.app) as uow:
        assert await ClientRegistry.of(h.app.state).delete(uow, client.id)
    refused(await with_assertion(h, assertion(key, client.id, h.settings.auth.public_url, now=now(h))))
