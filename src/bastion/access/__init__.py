"""Access control: principals, permissions (default deny), roles and API keys."""

from bastion.access.deps import (
    authenticated,
    by_rule,
    optional_principal,
    public,
    require,
    require_mfa,
)
from bastion.access.guard import Guard, UnguardedRoutes, check_routes, guard, guard_app, guard_of, requirement_of
from bastion.access.permissions import Permission, grants
from bastion.access.principal import Principal

__all__ = [
    "Guard",
    "Permission",
    "Principal",
    "UnguardedRoutes",
    "authenticated",
    "by_rule",
    "check_routes",
    "grants",
    "guard",
    "guard_app",
    "guard_of",
    "optional_principal",
    "public",
    "require",
    "require_mfa",
    "requirement_of",
]
