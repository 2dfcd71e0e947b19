"""Network and transport: TLS profiles, the mTLS admin plane with Bastion's own
CA, IP policy, connection hygiene and host firewall rules."""

from __future__ import annotations

from bastion.network.ipfilter import IpPolicy, NetworkGuard
from bastion.network.listener import AdminIdentity

__all__ = ["AdminIdentity", "IpPolicy", "NetworkGuard"]
