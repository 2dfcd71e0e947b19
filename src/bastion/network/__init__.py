"""Network and transport: TLS profiles, the mTLS admin plane with Bastion's own
CA, IP policy, connection hygiene and host firewall rules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["AdminIdentity", "IpPolicy", "NetworkGuard"]

if TYPE_CHECKING:
    from bastion.network.admin import AdminIdentity
    from bastion.network.ipfilter import IpPolicy, NetworkGuard

# Imported on first use, so `bastion ca --help` (bastion.network.cli) stays light.
_EXPORTS = {"AdminIdentity": "bastion.network.admin", "IpPolicy": "bastion.network.ipfilter"}
_EXPORTS["NetworkGuard"] = _EXPORTS["IpPolicy"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bastion.network' has no attribute {name!r}")
