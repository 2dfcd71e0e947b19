"""Network and transport: TLS profiles, the mTLS admin plane with Bastion's own
CA, IP policy, connection hygiene and host firewall rules.

The names below load on first use: ``bastion serve`` and its listeners'
server processes import ``bastion.network.serve``, which must not pull in
the application (the IP policy imports the HTTP stack).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion.network.ipfilter import IpPolicy, NetworkGuard
    from bastion.network.listener import AdminIdentity

__all__ = ["AdminIdentity", "IpPolicy", "NetworkGuard"]

_HOMES = {
    "AdminIdentity": "bastion.network.listener",
    "IpPolicy": "bastion.network.ipfilter",
    "NetworkGuard": "bastion.network.ipfilter",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
