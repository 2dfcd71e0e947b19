"""Who is making a request, and what they may do.

A principal is a user (a session, an API key, or an OAuth client acting
for the user: ``client_id`` set), or an OAuth client acting as itself
(client credentials: ``client_id`` set and ``user_id`` None). A client
acting as itself owns no account and no records: it holds exactly the
scopes registered for it, and routes about "my account" refuse it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from bastion.access.errors import PermissionDenied
from bastion.access.permissions import ACCOUNT_PREFIX, OWN_ACCOUNT, grants


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID | None
    roles: frozenset[str]
    permissions: frozenset[str]
    mfa: bool
    session_id: uuid.UUID | None = None
    api_key_id: str | None = None
    # An OAuth access token's client and grant (RFC 9068 ``client_id``, Bastion's ``gid``).
    client_id: str | None = None
    grant_id: uuid.UUID | None = None
    # The OAuth scopes granted to the token (OpenID Connect's among them), as issued.
    scopes: tuple[str, ...] = ()

    def can(self, permission: str) -> bool:
        """Whether this caller holds ``permission`` (``permissions.ACCOUNT_PREFIX`` for the account rules)."""
        if permission.startswith(ACCOUNT_PREFIX) and (self.api_key_id is not None or self.client_id is not None):
            # Named by a scope, never by a wildcard; and only with an account to act on.
            return self.user_id is not None and permission in self.permissions
        if permission in OWN_ACCOUNT:
            return self.user_id is not None
        return grants(self.permissions, permission)

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @property
    def account_id(self) -> uuid.UUID:
        """The id of the caller's own account, for routes about it; a client acting as itself has none."""
        if self.user_id is None:
            raise PermissionDenied
        return self.user_id
