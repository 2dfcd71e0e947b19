"""TEMPORARY (authorize branch): a minimal reader of ``oauth_clients`` rows.

The "clients" helper builds ``bastion.oauth.clients`` (``Client``,
``get_client``, ``redirect_uri_matches``) in parallel; this module has the
same names and behaviour so the authorization side can be built and tested
before it lands. DELETE THIS FILE AT MERGE and import from
``bastion.oauth.clients`` instead (``grep -rn _interim_clients src tests``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import bindparam, select

from bastion.db.database import Queries
from bastion.oauth.models import OAuthClient

__all__ = ["Client", "get_client", "redirect_uri_matches"]

_BY_ID = select(OAuthClient).where(OAuthClient.id == bindparam("client_id"))
_LOOPBACK_HOSTS = ("127.0.0.1", "[::1]")


@dataclass(frozen=True)
class Client:
    id: str
    name: str
    public: bool
    first_party: bool
    token_endpoint_auth_method: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    scopes: tuple[str, ...]
    jwks: Mapping[str, Any] | None
    jwks_uri: str | None
    require_par: bool
    require_dpop: bool
    id_token_alg: str
    access_token_alg: str
    backchannel_logout_uri: str | None
    claims: Mapping[str, str]


async def get_client(db: Queries, client_id: str) -> Client | None:
    if not client_id or len(client_id) > 64:
        return None
    row = await db.one(_BY_ID, {"client_id": client_id})
    if row is None:
        return None
    c = row
    return Client(
        c.id, c.name, c.public, c.first_party, c.token_endpoint_auth_method, tuple(c.redirect_uris),
        tuple(c.post_logout_redirect_uris or ()), tuple(c.grant_types), tuple(c.scopes), c.jwks, c.jwks_uri,
        c.require_par, c.require_dpop, c.id_token_alg, c.access_token_alg, c.backchannel_logout_uri,
        dict(c.claims or {}),
    )  # fmt: skip


def redirect_uri_matches(client: Client, uri: str) -> bool:
    """Exact match; a loopback ``http`` URI on any port (RFC 8252 §7.3)."""
    if uri in client.redirect_uris:
        return True
    asked = _loopback(uri)
    return asked is not None and any(_loopback(registered) == asked for registered in client.redirect_uris)


def _loopback(uri: str) -> tuple[str, str, str] | None:
    try:
        split = urlsplit(uri)
    except ValueError:
        return None
    if split.scheme != "http" or "#" in uri or "@" in split.netloc:
        return None
    for host in _LOOPBACK_HOSTS:
        rest = split.netloc[len(host) :]
        if split.netloc.startswith(host) and (
            rest == "" or (rest[:1] == ":" and rest[1:].isdigit() and len(rest) <= 6)
        ):
            return host, split.path, split.query
    return None
