"""The device authorization endpoint (RFC 8628 §3.1 to §3.3).

A device that cannot show a browser (a TV, a command line) asks
``/oauth2/device`` for a ``device_code`` (its own, secret, polled at the
token endpoint, ``token.DEVICE_CODE``) and a ``user_code`` the user types
at ``verification_uri`` (the hosted page ``/oauth2/device/verify``) on
another device, where they sign in and approve or deny.

The user code (§6.1) is 8 characters of ``BCDFGHJKLMNPQRSTVWXZ``: no
vowels (no words), no digits or letters that look alike, shown as
``XXXX-XXXX`` and read back case- and dash-insensitively
(``normalise_user_code``). 20⁸ ≈ 2.6·10¹⁰ codes, of which a handful are
live at a time for ``oauth.device_code_ttl`` seconds, behind the page's
throttle: guessing one is not a practical attack. Stored as typed, without
the dash; the device code only as its hash.
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, Request
from sqlalchemy import insert
from starlette.responses import Response

from bastion.access import public
from bastion.audit import EventTag, record_event
from bastion.http.throttle import Throttle
from bastion.oauth.errors import OAuthError, json_response
from bastion.oauth.forms import read_form
from bastion.oauth.models import OAuthDeviceCode
from bastion.oauth.rfc7523 import authenticate_client
from bastion.oauth.scopes import parse_scopes
from bastion.oauth.service import OAuthService
from bastion.oauth.token import DEVICE_CODE
from bastion.security import hash_token, token_bytes, token_urlsafe
from bastion.uow import unit_of_work

__all__ = ["USER_CODE_ALPHABET", "VERIFICATION_PATH", "display_user_code", "normalise_user_code", "router"]

USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
# The hosted page where the user enters the code (the "authorize" helper's, bastion.pages).
VERIFICATION_PATH = "/oauth2/device/verify"
DEVICE_THROTTLE = Throttle("oauth-device", lambda s: s.oauth.token_rate_per_ip)
# Bytes at or above this would make some letters likelier than others (rejection sampling).
_UNBIASED = 256 - 256 % len(USER_CODE_ALPHABET)

router = APIRouter(tags=["oauth"])
_NEW = insert(OAuthDeviceCode)


def new_user_code() -> str:
    """A uniformly random user code, without its dash."""
    found: list[str] = []
    while len(found) < USER_CODE_LENGTH:
        found += [USER_CODE_ALPHABET[b % len(USER_CODE_ALPHABET)] for b in token_bytes(16) if b < _UNBIASED]
    return "".join(found[:USER_CODE_LENGTH])


def display_user_code(code: str) -> str:
    """``BCDFGHJK`` as the user reads it: ``BCDF-GHJK``."""
    return f"{code[:4]}-{code[4:]}"


def normalise_user_code(text: str) -> str | None:
    """What the user typed, as stored (upper case, no dash or spaces); None if it cannot be a code."""
    code = text.replace("-", "").replace(" ", "").upper()
    if len(code) != USER_CODE_LENGTH or not set(code) <= set(USER_CODE_ALPHABET):
        return None
    return code


@router.post("/oauth2/device", dependencies=[Depends(public), Depends(DEVICE_THROTTLE)], include_in_schema=False)
async def device_authorization(request: Request) -> Response:
    """The device authorization response (§3.2)."""
    oauth: OAuthService = request.app.state.oauth
    params = await read_form(request)
    async with unit_of_work(request) as uow:
        client = await authenticate_client(request, params, uow.db, oauth)
        if DEVICE_CODE not in client.grant_types:
            raise OAuthError("unauthorized_client", "This client may not use the device grant.")
        scopes = parse_scopes(params.get("scope")) or list(client.scopes)
        if not set(scopes) <= set(client.scopes):
            raise OAuthError("invalid_scope", "This client is not registered for that scope.")
        device_code, user_code = token_urlsafe(32), new_user_code()
        now, ttl = oauth.clock.now(), oauth.config.device_code_ttl
        await uow.db.execute(
            _NEW,
            {
                "device_code_hash": hash_token(device_code),
                "user_code": user_code,
                "client_id": client.id,
                "scopes": scopes,
                "created_at": now,
                "expires_at": now + dt.timedelta(seconds=ttl),
            },
        )
        record_event(
            uow.db, oauth.clock, EventTag.OAUTH_DEVICE_AUTHORIZE, origin=uow.origin, details={"client_id": client.id}
        )
    shown = display_user_code(user_code)
    verification_uri = oauth.url(VERIFICATION_PATH)
    return json_response(
        {
            "device_code": device_code,
            "user_code": shown,
            "verification_uri": verification_uri,
            "verification_uri_complete": f"{verification_uri}?user_code={shown}",
            "expires_in": ttl,
            "interval": oauth.config.device_poll_interval,
        }
    )
