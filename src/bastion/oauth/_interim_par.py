"""TEMPORARY (authorize branch): ``take_pushed`` until the "tokens" helper's
``bastion.oauth.rfc9126`` lands. DELETE AT MERGE and import
``take_pushed`` from ``bastion.oauth.rfc9126`` instead.

RFC 9126 §4: a ``request_uri`` is used once, by the client that pushed it,
before it expires.
"""

from __future__ import annotations

from sqlalchemy import bindparam

from bastion.db.claims import claim, compare_and_set
from bastion.db.database import Transaction
from bastion.oauth.models import OAuthPushedRequest
from bastion.security import hash_token

_TAKE = compare_and_set(
    OAuthPushedRequest,
    OAuthPushedRequest.uri_hash == bindparam("uri_hash"),
    OAuthPushedRequest.client_id == bindparam("client_id"),
    OAuthPushedRequest.used_at.is_(None),
    OAuthPushedRequest.expires_at > bindparam("now"),
    values={OAuthPushedRequest.used_at: bindparam("now")},
    returning=[OAuthPushedRequest.parameters],
)


REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"


async def take_pushed(tx: Transaction, client_id: str, request_uri: str, *, now: object) -> dict[str, str] | None:
    if not request_uri.startswith(REQUEST_URI_PREFIX) or len(request_uri) > 256:
        return None
    row = await claim(tx, _TAKE, {"uri_hash": hash_token(request_uri), "client_id": client_id, "now": now})
    return None if row is None else dict(row.parameters)
