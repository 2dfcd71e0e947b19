"""The device authorization grant (RFC 8628): the device polls while the
user approves elsewhere; pending, slow_down, denied and expired are errors."""

from __future__ import annotations

import re
from typing import Any

from bastion.oauth.rfc8628 import normalise_user_code
from conftest import token_request
from factories.oauth import basic, create_client, decide_device
from harness import Harness

DEVICE = "/oauth2/device"
GRANT = "urn:ietf:params:oauth:grant-type:device_code"


async def start(harness: Harness, client_id: str, secret: str | None, **form: str) -> dict[str, Any]:
    headers = basic(client_id, secret) if secret else {}
    data = form if secret else {"client_id": client_id, **form}
    response = await harness.client.post(DEVICE, data=data, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def poll(device_code: str) -> dict[str, str]:
    return {"grant_type": GRANT, "device_code": device_code}


async def test_the_device_gets_tokens_once_the_user_approves(harness: Harness) -> None:
    user = await harness.user("alice@example.com")
    client_id, _ = await create_client(harness.app, public=True)
    started = await start(harness, client_id, None, scope="openid records:*")
    assert re.fullmatch(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}", started["user_code"])
    assert started["verification_uri"] == harness.settings.auth.public_url + "/oauth2/device/verify"
    assert started["interval"] == harness.settings.oauth.device_poll_interval

    pending = await token_request(harness, client_id, None, poll(started["device_code"]))
    assert (pending.status_code, pending.json()["error"]) == (400, "authorization_pending")
    too_soon = await token_request(harness, client_id, None, poll(started["device_code"]))
    assert too_soon.json()["error"] == "slow_down"

    code = normalise_user_code(started["user_code"].lower())
    assert code is not None
    await decide_device(harness.app, code, user.id)
    harness.clock.advance(seconds=started["interval"])
    granted = await token_request(harness, client_id, None, poll(started["device_code"]))
    assert granted.status_code == 200, granted.text
    assert granted.json()["scope"] == "openid records:*"
    again = await token_request(harness, client_id, None, poll(started["device_code"]))
    assert again.json()["error"] == "invalid_grant"  # single-use


async def test_denied_expired_and_unknown_device_codes(harness: Harness) -> None:
    user = await harness.user("alice@example.com")
    client_id, secret = await create_client(harness.app)
    denied = await start(harness, client_id, secret, scope="openid")
    code = normalise_user_code(denied["user_code"])
    assert code is not None
    await decide_device(harness.app, code, user.id, approve=False)
    response = await token_request(harness, client_id, secret, poll(denied["device_code"]))
    assert response.json()["error"] == "access_denied"

    expiring = await start(harness, client_id, secret, scope="openid")
    harness.clock.advance(seconds=harness.settings.oauth.device_code_ttl)
    response = await token_request(harness, client_id, secret, poll(expiring["device_code"]))
    assert response.json()["error"] == "expired_token"

    other_id, other_secret = await create_client(harness.app)
    fresh = await start(harness, client_id, secret, scope="openid")
    stolen = await token_request(harness, other_id, other_secret, poll(fresh["device_code"]))
    assert stolen.json()["error"] == "invalid_grant"


async def test_the_grant_type_and_scopes_must_be_registered(harness: Harness) -> None:
    client_id, secret = await create_client(harness.app, grant_types=("authorization_code",))
    refused = await harness.client.post(DEVICE, data={"scope": "openid"}, headers=basic(client_id, secret))
    assert (refused.status_code, refused.json()["error"]) == (400, "unauthorized_client")
    allowed_id, allowed_secret = await create_client(harness.app)
    wider = await harness.client.post(
        DEVICE, data={"scope": "admin:users:read"}, headers=basic(allowed_id, allowed_secret)
    )
    assert wider.json()["error"] == "invalid_scope"


def test_user_codes_are_read_back_leniently_and_nothing_else_passes() -> None:
    assert normalise_user_code("bcdf-ghjk") == "BCDFGHJK"
    assert normalise_user_code("BCDF GHJK") == "BCDFGHJK"
    for wrong in ("BCDF-GHJ", "ABCD-EFGH", "BCDF-GHJK1", "12345678", ""):
        assert normalise_user_code(wrong) is None
