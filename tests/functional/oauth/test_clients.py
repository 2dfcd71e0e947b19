"""The client registry: what registration accepts and refuses (RFC 7591 §2, RFC 6749 §3.1.2,
RFC 8252 §7, RFC 9700 §4.1.3), redirect URI matching, secrets stored as keyed hashes, and
the admin API under /admin/api/v1/oauth/clients."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select

from bastion.audit.models import AuditEvent
from bastion.logging import configure_logging
from bastion.oauth.clients import (
    Client,
    ClientMetadata,
    ClientRegistry,
    InvalidClientMetadata,
    get_client,
    redirect_uri_matches,
)
from bastion.oauth.models import OAuthClient, OAuthConsent, OAuthGrant
from factories import unit_of_work
from factories.oauth_clients import NATIVE_APP, WEB_APP, public_jwks, register_client, signing_key
from harness import Harness

BASE = "/admin/api/v1/oauth/clients"


def registry(h: Harness) -> ClientRegistry:
    return ClientRegistry.of(h.app.state)


def refused(h: Harness, metadata: ClientMetadata) -> InvalidClientMetadata:
    with pytest.raises(InvalidClientMetadata) as caught:
        registry(h).validate(metadata)
    return caught.value


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example/cb",
        "https://app.example:8443/cb?tenant=1",
        "http://127.0.0.1/cb",
        "http://127.0.0.1:8080/cb",
        "http://[::1]/cb",
        "com.example.app:/oauth2redirect",
    ],
)
async def test_redirect_uris_accepted(harness: Harness, uri: str) -> None:
    assert registry(harness).validate(dataclasses.replace(WEB_APP, redirect_uris=(uri,))).redirect_uris == (uri,)


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example/cb#fragment",  # RFC 6749 §3.1.2
        "https://app.example/cb#",
        "https://*.example/cb",  # no wildcards (RFC 9700 §4.1.3)
        "https://app.example/*",
        "http://app.example/cb",  # plain http only for loopback (RFC 8252 §7.3)
        "http://localhost/cb",  # RFC 8252 §8.3: not localhost
        "http://127.0.0.10/cb",
        "http://127.0.0.1.evil.example/cb",
        "http://user@127.0.0.1/cb",
        "https://user:pw@app.example/cb",
        "/relative/cb",
        "app.example/cb",
        "javascript:alert(1)",
        "data:text/html,hi",
        "file:///etc/passwd",
        "myapp:/cb",  # a private-use scheme is a reverse domain name (RFC 8252 §7.1)
        "https:///cb",
        "https://app.example:99999/cb",
        "https://app.example/c b",
        "https://app.example/\u00e9",
        "https://app.example/" + "a" * 2048,
    ],
)
async def test_redirect_uris_refused(harness: Harness, uri: str) -> None:
    error = refused(harness, dataclasses.replace(WEB_APP, redirect_uris=(uri,)))
    assert error.error == "invalid_redirect_uri"
    assert uri not in error.message  # never echoed


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"grant_types": ("implicit",)}, "grant_types"),
        ({"grant_types": ("password",)}, "grant_types"),
        ({"grant_types": ("refresh_token",)}, "refresh_token needs"),
        ({"public": True, "grant_types": ("client_credentials",)}, "public client"),
        ({"scopes": ("admin:users:write",)}, "scope"),
        ({"scopes": ("me:password",)}, "scope"),
        ({"id_token_alg": "HS256"}, "id_token_signed_response_alg"),
        ({"access_token_alg": "none"}, "access_token_signed_response_alg"),
        ({"token_endpoint_auth_method": "client_secret_jwt"}, "token_endpoint_auth_method"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "exactly one of jwks"),
        ({"public": True, "token_endpoint_auth_method": "client_secret_basic"}, "public client"),
        ({"jwks_uri": "https://keys.example/jwks", "token_endpoint_auth_method": "client_secret_post"}, "jwks"),
        ({"jwks": {"keys": []}}, "jwks"),
        ({"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}, "jwks"),
        ({"name": ""}, "client_name"),
        ({"name": "bad\nname"}, "client_name"),
        ({"claims": {"sub": "email"}}, "custom claim"),
        ({"claims": {"tenant": "password_hash"}}, "user field"),
        ({"backchannel_logout_uri": "https://rp.example/logout#x"}, "fragment"),
        ({"grant_types": ("authorization_code",), "redirect_uris": ()}, "redirect_uri"),
    ],
)
async def test_metadata_refused(harness: Harness, changes: dict[str, Any], rule: str) -> None:
    assert rule in refused(harness, dataclasses.replace(WEB_APP, **changes)).message


async def test_private_key_in_jwks_is_refused(harness: Harness) -> None:
    key = signing_key("ES256")
    error = refused(harness, dataclasses.replace(WEB_APP, jwks={"keys": [key.as_dict(private=True)]}))
    assert "private" in error.message


async def test_jwks_uri_must_be_https_in_prod(make_settings: Any) -> None:
    from bastion.clock import FrozenClock
    from bastion.secrets import open_keyrings

    settings = make_settings()
    prod = settings.model_copy(update={"mode": "prod"})
    prod_registry = ClientRegistry(prod, FrozenClock(), open_keyrings(settings).hmac)
    with pytest.raises(InvalidClientMetadata, match="https"):
        prod_registry.validate(dataclasses.replace(WEB_APP, jwks_uri="http://keys.example/jwks"))
    assert prod_registry.validate(dataclasses.replace(WEB_APP, jwks_uri="https://keys.example/jwks")).jwks_uri
    for private in ("https://169.254.169.254/jwks", "https://[::1]/jwks", "https://10.0.0.1/jwks"):
        with pytest.raises(InvalidClientMetadata, match="private"):
            prod_registry.validate(dataclasses.replace(WEB_APP, jwks_uri=private))


async def test_defaults_and_derived_method(harness: Harness) -> None:
    valid = registry(harness).validate(WEB_APP)
    assert valid.token_endpoint_auth_method == "client_secret_basic"
    assert valid.grant_types == ("authorization_code", "refresh_token")
    assert valid.scopes == ("openid", "profile", "email", "offline_access")
    assert valid.id_token_alg == valid.access_token_alg == "RS256"
    assert registry(harness).validate(NATIVE_APP).token_endpoint_auth_method == "none"
    with_keys = dataclasses.replace(WEB_APP, jwks=public_jwks(signing_key("EdDSA")))
    assert registry(harness).validate(with_keys).token_endpoint_auth_method == "private_key_jwt"
    machine = ClientMetadata(name="Machine", grant_types=("client_credentials",), scopes=("records:*",))
    assert registry(harness).validate(machine).redirect_uris == ()


def loopback_client(*uris: str) -> Client:
    return Client(
        id="c", name="n", public=True, first_party=False, token_endpoint_auth_method="none",
        redirect_uris=uris, post_logout_redirect_uris=(), grant_types=("authorization_code",), scopes=(),
        jwks=None, jwks_uri=None, require_par=False, require_dpop=False, id_token_alg="RS256",
        access_token_alg="RS256", backchannel_logout_uri=None, claims={},
    )  # fmt: skip


def test_redirect_uri_matching_is_exact_but_loopback_port() -> None:
    """RFC 6749 §3.1.2.3 exact match; RFC 8252 §7.3 any port on loopback."""
    web = loopback_client("https://app.example/cb", "http://127.0.0.1/cb", "http://[::1]:5000/cb?x=1")
    assert redirect_uri_matches(web, "https://app.example/cb")
    assert redirect_uri_matches(web, "http://127.0.0.1:53012/cb")
    assert redirect_uri_matches(web, "http://127.0.0.1/cb")
    assert redirect_uri_matches(web, "http://[::1]:61000/cb?x=1")
    for wrong in (
        "https://app.example/cb/",
        "https://app.example/cb?x=1",
        "https://APP.example/cb",
        "https://app.example:443/cb",
        "https://app.example/cb#f",
        "https://app.example.evil/cb",
        "http://127.0.0.1:53012/cb/../admin",
        "http://127.0.0.1:53012/other",
        "http://127.0.0.1:53012/cb#f",
        "http://localhost:53012/cb",
        "https://127.0.0.1:53012/cb",
        "http://[::1]:61000/cb",
        "http://127.0.0.1:abc/cb",
        "http://127.0.0.1@evil.example/cb",
    ):
        assert not redirect_uri_matches(web, wrong), wrong


async def tags(h: Harness) -> list[tuple[str, dict[str, Any]]]:
    rows = await h.app.state.db.all(select(AuditEvent.tag, AuditEvent.details).order_by(AuditEvent.id))
    return [(row.tag, row.details) for row in rows if row.tag.startswith("oauth:")]


async def test_create_rotate_delete_with_audit_events_and_no_secret_stored_or_logged(harness: Harness) -> None:
    """V13.3.1: the secret is shown once, stored as a keyed hash, in no event and no log line."""
    captured = io.StringIO()
    configure_logging("debug", stream=captured)
    try:
        client, secret = await register_client(harness.app)
        assert secret is not None
        assert len(secret) >= 43  # 32 random bytes, base64url
        assert len(client.id) >= 22  # 16 random bytes
        async with unit_of_work(harness.app) as uow:
            new = await registry(harness).rotate_secret(uow, client.id)
        assert new is not None
        rotated = new[0]
        assert rotated != secret
        stored = await harness.app.state.db.value(select(OAuthClient.secret_hash).where(OAuthClient.id == client.id))
        assert secret not in stored
        assert rotated not in stored
        assert registry(harness).secret_matches(rotated, stored)
        assert not registry(harness).secret_matches(secret, stored)  # the old one stopped working
        listed = await registry(harness).list(harness.app.state.db)
        assert [c.id for c in listed] == [client.id]
        async with unit_of_work(harness.app) as uow:
            assert await registry(harness).delete(uow, client.id)
            assert not await registry(harness).delete(uow, client.id)
        assert await get_client(harness.app.state.db, client.id) is None
    finally:
        configure_logging("info")
    events = await tags(harness)
    assert [tag for tag, _ in events] == ["oauth:client:create", "oauth:client:secret_rotate", "oauth:client:delete"]
    for text in (captured.getvalue(), str(events)):
        assert secret not in text
        assert rotated not in text


async def test_public_and_key_clients_have_no_secret_to_rotate(harness: Harness) -> None:
    native, secret = await register_client(harness.app, NATIVE_APP)
    assert secret is None
    async with unit_of_work(harness.app) as uow:
        with pytest.raises(InvalidClientMetadata, match="no secret"):
            await registry(harness).rotate_secret(uow, native.id)
        assert await registry(harness).rotate_secret(uow, "no-such-client") is None


async def test_deleting_a_client_deletes_its_grants_and_consents(harness: Harness) -> None:
    """Foreign keys ON DELETE CASCADE: every token of the client's grants stops with it."""
    client, _ = await register_client(harness.app)
    user = await harness.user("alice@example.com")
    now = harness.clock.now()
    async with unit_of_work(harness.app) as uow:
        await uow.db.execute(
            insert(OAuthGrant),
            {"id": uuid.uuid4(), "client_id": client.id, "user_id": user.id, "scopes": ["openid"], "amr": [],
             "created_at": now, "expires_at": now + dt.timedelta(days=1)},
        )  # fmt: skip
        await uow.db.execute(
            insert(OAuthConsent), {"user_id": user.id, "client_id": client.id, "scopes": ["openid"], "created_at": now}
        )
    async with unit_of_work(harness.app) as uow:
        assert await registry(harness).delete(uow, client.id)
    db = harness.app.state.db
    assert await db.value(select(func.count()).select_from(OAuthGrant)) == 0
    assert await db.value(select(func.count()).select_from(OAuthConsent)) == 0


# --- the admin API ------------------------------------------------------------


async def test_admin_api_create_show_rotate_delete(harness: Harness, admin_client: httpx.AsyncClient) -> None:
    admin = harness.bearer(await harness.admin())
    created = await admin_client.post(
        BASE,
        json={"name": "Admin made", "redirect_uris": ["https://app.example/cb"], "scopes": ["openid", "records:*"]},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    client_id, secret = body["client_id"], body["client_secret"]
    assert body["scope"] == "openid records:*"
    shown = await admin_client.get(f"{BASE}/{client_id}", headers=admin)
    assert shown.status_code == 200
    assert "client_secret" not in shown.json()
    assert [c["client_id"] for c in (await admin_client.get(BASE, headers=admin)).json()] == [client_id]
    assert dt.datetime.fromisoformat(body["secret_expires_at"]) == harness.clock.now() + dt.timedelta(
        seconds=harness.settings.oauth.client_secret_lifetime
    )
    harness.clock.advance(seconds=90)  # within the admin's token and step-up
    rotated = await admin_client.post(f"{BASE}/{client_id}/rotate-secret", headers=admin)
    assert rotated.status_code == 200
    assert rotated.json()["client_secret"] != secret
    assert dt.datetime.fromisoformat(rotated.json()["secret_expires_at"]) == dt.datetime.fromisoformat(
        body["secret_expires_at"]
    ) + dt.timedelta(seconds=90)
    assert (await admin_client.delete(f"{BASE}/{client_id}", headers=admin)).status_code == 204
    assert (await admin_client.get(f"{BASE}/{client_id}", headers=admin)).status_code == 404
    assert (await admin_client.delete(f"{BASE}/{client_id}", headers=admin)).status_code == 404


async def test_admin_api_refuses_bad_metadata_and_unknown_fields(
    harness: Harness, admin_client: httpx.AsyncClient
) -> None:
    admin = harness.bearer(await harness.admin())
    bad = await admin_client.post(BASE, json={"name": "x", "redirect_uris": ["https://*.example/cb"]}, headers=admin)
    assert bad.status_code == 422
    assert bad.json()["error"] == "invalid_redirect_uri"
    smuggled = await admin_client.post(
        BASE, json={"name": "x", "redirect_uris": ["https://a.example/cb"], "secret_hash": "x"}, headers=admin
    )
    assert smuggled.status_code == 422
    assert await registry(harness).list(harness.app.state.db) == []


async def test_admin_api_sets_the_owner_reminded_of_the_secret(
    harness: Harness, admin_client: httpx.AsyncClient
) -> None:
    """V6.4.5 (renewal reminders reach someone): the owner is given at registration or set later, each
    change audited; an owner that is no user is refused (422) and changes nothing."""
    admin = harness.bearer(await harness.admin())
    alice, bob = await harness.user("alice@example.com"), await harness.user("bob@example.com")
    body = {"name": "Owned", "redirect_uris": ["https://app.example/cb"]}
    nobody = str(uuid.uuid4())
    refused = await admin_client.post(BASE, json={**body, "owner_id": nobody}, headers=admin)
    assert refused.status_code == 422, refused.text
    assert "no such user" in refused.text
    assert await registry(harness).list(harness.app.state.db) == []
    created = await admin_client.post(BASE, json={**body, "owner_id": str(alice.id)}, headers=admin)
    assert created.status_code == 201, created.text
    client_id = created.json()["client_id"]
    assert created.json()["owner_id"] == str(alice.id)
    owner = f"{BASE}/{client_id}/owner"
    moved = await admin_client.put(owner, json={"owner_id": str(bob.id)}, headers=admin)
    assert moved.status_code == 200, moved.text
    assert moved.json()["owner_id"] == str(bob.id)
    assert (await admin_client.put(owner, json={"owner_id": nobody}, headers=admin)).status_code == 422
    assert (await admin_client.put(f"{BASE}/nope/owner", json={"owner_id": None}, headers=admin)).status_code == 404
    assert (await admin_client.put(owner, json={"owner_id": "bob"}, headers=admin)).status_code == 422
    assert (await admin_client.get(f"{BASE}/{client_id}", headers=admin)).json()["owner_id"] == str(bob.id)
    cleared = await admin_client.put(owner, json={"owner_id": None}, headers=admin)
    assert cleared.json()["owner_id"] is None
    events = await harness.app.state.db.all(
        select(AuditEvent.tag, AuditEvent.details).where(AuditEvent.tag.like("oauth:client:%")).order_by(AuditEvent.id)
    )
    assert [(e.tag, e.details.get("owner_id")) for e in events] == [
        ("oauth:client:create", str(alice.id)),
        ("oauth:client:owner", str(bob.id)),
        ("oauth:client:owner", None),
    ]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", BASE),
        ("POST", BASE),
        ("GET", f"{BASE}/x"),
        ("POST", f"{BASE}/x/rotate-secret"),
        ("PUT", f"{BASE}/x/owner"),
        ("DELETE", f"{BASE}/x"),
    ],
)
async def test_admin_api_needs_the_permission_and_two_factors(
    harness: Harness, admin_client: httpx.AsyncClient, method: str, path: str
) -> None:
    """V8.2.1: a user, or an admin without a second factor, gets nothing."""
    user = harness.bearer(await harness.signed_in("bob@example.com"))
    one_factor = harness.bearer(await harness.admin("admin2@example.com", mfa=False))
    body: dict[str, Any] | None = None
    if method == "POST" and path == BASE:
        body = {"name": "x", "redirect_uris": ["https://a.example/cb"]}
    elif method == "PUT":
        body = {"owner_id": None}
    for headers in (user, one_factor, {}):
        response = await admin_client.request(method, path, json=body, headers=headers)
        assert response.status_code in {401, 403}, (headers, response.status_code)
    assert await registry(harness).list(harness.app.state.db) == []


def test_admin_permissions_are_not_oauth_scopes() -> None:
    from bastion.access.permissions import Permission
    from bastion.oauth.scopes import GRANTABLE_PERMISSIONS

    assert Permission.ADMIN_OAUTH_CLIENTS_READ not in GRANTABLE_PERMISSIONS
    assert Permission.ADMIN_OAUTH_CLIENTS_WRITE not in GRANTABLE_PERMISSIONS
