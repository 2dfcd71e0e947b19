"""Who is making a request, and what they may do."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from bastion.access.permissions import ACCOUNT_PREFIX, OWN_ACCOUNT, grants


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID
    roles: frozenset[str]
    permissions: frozenset[str]
    mfa: bool
    session_id: uuid.UUID | None = None
    api_key_id: str | None = None

    def can(self, permission: str) -> bool:
        """Whether this caller holds ``permission`` (``permissions.ACCOUNT_PREFIX`` for the account rules)."""
        if self.api_key_id is not None and permission.startswith(ACCOUNT_PREFIX):
            return permission in self.permissions  # named by a scope, never by a wildcard
        if permission in OWN_ACCOUNT:
            return True
        return grants(self.permissions, permission)

    def has_role(self, role: str) -> bool:
        return role in self.roles
