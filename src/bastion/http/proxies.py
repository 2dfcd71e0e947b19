"""The real client address behind trusted proxies.

``X-Forwarded-For`` is a list each proxy appends to, so only the hops added by
proxies we trust are believable: walk it from the right and stop at the first
address that is not a trusted proxy. A client can prepend anything it likes;
it cannot forge what our own proxy appended.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_address


class TrustedProxies:
    def __init__(self, networks: Sequence[IPv4Network | IPv6Network]) -> None:
        self.networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def client_ip(self, peer: str, forwarded_for: str | None) -> str:
        """The address to attribute a request to."""
        if not self.networks or not forwarded_for or not self._trusted(peer):
            return peer
        hops = [hop.strip() for hop in forwarded_for.split(",")]
        for hop in reversed(hops):
            if not _valid_ip(hop):
                # A malformed hop cannot be attributed; the proxy that passed
                # it on is the last address we know to be real.
                return peer
            if not self._trusted(hop):
                return hop
            peer = hop
        return peer

    def _trusted(self, address: str) -> bool:
        return _is_in(address, self.networks)


@lru_cache(maxsize=4096)
def _is_in(address: str, networks: tuple[IPv4Network | IPv6Network, ...]) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _valid_ip(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return False
    return True
