"""Permissions: ``resource:action`` strings, denied unless granted.

The built-in ones are a StrEnum; collections add ``records:<name>:<op>``.
A grant may end in ``:*`` to cover a whole subtree (``records:*``), and the
single grant ``*`` covers everything (the admin role).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Permission(StrEnum):
    # The caller's own account (``ACCOUNT_PREFIX``).
    ME_READ = "me:read"  # profile and sessions
    ME_SESSIONS = "me:sessions"  # revoke a session
    ME_PASSWORD = "me:password"  # noqa: S105 - a permission name: change the password
    ME_MFA = "me:mfa"  # enrol, confirm or remove TOTP
    API_KEYS = "me:api-keys"
    RECORDS = "records:*"
    ADMIN_USERS_READ = "admin:users:read"
    ADMIN_USERS_WRITE = "admin:users:write"
    # Every record of any user, decrypted: more than reading the user list, so its own grant.
    ADMIN_USERS_EXPORT = "admin:users:export"
    ADMIN_ROLES_READ = "admin:roles:read"
    ADMIN_ROLES_WRITE = "admin:roles:write"
    ADMIN_API_KEYS_READ = "admin:api-keys:read"
    ADMIN_API_KEYS_WRITE = "admin:api-keys:write"
    ADMIN_SESSIONS_READ = "admin:sessions:read"
    ADMIN_SESSIONS_WRITE = "admin:sessions:write"
    ADMIN_COLLECTIONS_READ = "admin:collections:read"
    ADMIN_COLLECTIONS_WRITE = "admin:collections:write"
    # The admin plane is never an OAuth scope (bastion.oauth.scopes.GRANTABLE_PERMISSIONS).
    ADMIN_OAUTH_CLIENTS_READ = "admin:oauth-clients:read"
    ADMIN_OAUTH_CLIENTS_WRITE = "admin:oauth-clients:write"
    ADMIN_AUDIT_READ = "admin:audit:read"
    ADMIN_ALERTS_READ = "admin:alerts:read"
    ADMIN_ALERTS_WRITE = "admin:alerts:write"
    ADMIN_BLOCKS_READ = "admin:blocks:read"
    ADMIN_BLOCKS_WRITE = "admin:blocks:write"


ALL = "*"

# Permissions on the caller's own account. An API key holds one only when one
# of its scopes names it exactly: a wildcard (``*``, ``me:*``) never reaches
# the account, so a key made for records cannot read the profile, revoke
# sessions, change the password or enrol TOTP and lock its owner out.
ACCOUNT_PREFIX = "me:"
# Of those, what every signed-in owner may do to their own account, whatever
# their roles; ``me:api-keys`` stays a grant of the ``user`` role.
OWN_ACCOUNT: frozenset[str] = frozenset(
    {Permission.ME_READ, Permission.ME_SESSIONS, Permission.ME_PASSWORD, Permission.ME_MFA}
)

# Built-in roles. They exist in every instance (the migration seeds them) and
# cannot be deleted; their grants can be widened through the admin API.
BUILTIN_ROLES: dict[str, frozenset[str]] = {
    "admin": frozenset({ALL}),
    "user": frozenset({Permission.API_KEYS, Permission.RECORDS}),
}


def grants(granted: Iterable[str], permission: str) -> bool:
    """Whether any grant in ``granted`` covers ``permission``."""
    for grant in granted:
        if grant in (ALL, permission):
            return True
        if grant.endswith(":*") and permission.startswith(grant[:-1]):
            return True
    return False
