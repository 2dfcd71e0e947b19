"""Scopes (RFC 6749 §3.3): OpenID Connect's, and Bastion's permission names.

A permission scope (``records:notes:read``, ``records:*``) lets an access
token call Bastion's API with what was granted *and* what the user still
holds: the token's scopes narrow the user's permissions, never widen them.
"""

from __future__ import annotations

import re
from typing import get_args

from bastion.access.permissions import Permission
from bastion.oauth.errors import OAuthError
from bastion.settings import RecordOp, Settings

__all__ = ["GRANTABLE_PERMISSIONS", "OPENID_SCOPES", "parse_scopes", "scopes_supported"]

# OpenID Connect Core §5.4 and §11.
OPENID_SCOPES = ("openid", "profile", "email", "offline_access")
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")
_MAX_SCOPES = 32
# The permissions a client may be granted. The account's credentials
# (password, second factor, API keys, sessions) and the admin plane are never
# a third party's to hold: those stay with the user's own sign-in.
GRANTABLE_PERMISSIONS = (Permission.ME_READ, Permission.RECORDS)


def scopes_supported(settings: Settings) -> list[str]:
    """Every scope a client may ask for here, as discovery lists them."""
    permissions = [str(permission) for permission in GRANTABLE_PERMISSIONS]
    for collection in settings.collections:
        permissions += [f"records:{collection}:{op}" for op in get_args(RecordOp)]
    return [*OPENID_SCOPES, *sorted(set(permissions))]


def parse_scopes(text: str | None) -> list[str]:
    """The scopes of a ``scope`` parameter, in order, each once; ``invalid_scope`` if malformed."""
    if not text:
        return []
    found: list[str] = []
    for token in text.split(" "):
        if not _SCOPE_TOKEN.fullmatch(token) or len(found) >= _MAX_SCOPES:
            raise OAuthError("invalid_scope", "The scope parameter is malformed.")
        if token not in found:
            found.append(token)
    return found
