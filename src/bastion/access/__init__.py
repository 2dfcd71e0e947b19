"""Access control: principals, permissions (default deny), roles and API keys."""

from bastion.access.deps import (
    authenticated,
    by_rule,
    check_routes,
    optional_principal,
    public,
    require,
    require_mfa,
)
from bastion.access.permissions import Permission, grants
from bastion.access.principal import Principal

__all__ = [
    "Permission",
    "Principal",
    "authenticated",
    "by_rule",
    "check_routes",
    "grants",
    "optional_principal",
    "public",
    "require",
    "require_mfa",
]
