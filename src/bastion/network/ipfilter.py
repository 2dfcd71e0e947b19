"""IP policy and listener separation, as one pure-ASGI middleware.

It runs inside the request spine, so ``scope["client"]`` already holds the
real client address: ``X-Forwarded-For`` was honoured only from a trusted
proxy, taking the rightmost untrusted hop (ASVS V4.1.3). A spoofed header
from anyone else changes nothing here.

In order, for every HTTP request:

1. too many header lines: 431 (hyper already refuses more than 100);
2. the listener's own allow/deny lists (``server.*`` or ``admin.*``): 403;
3. on the public listener, the blocked addresses and networks
   (``bastion.network.blocks``: ``bastion block add``, automatic responses): 403;
4. every route group whose prefix matches the path: 403;
5. listener separation: ``/admin`` and below, and ``/metrics``, answer 404
   on the public listener, and everything else answers 404 on the admin
   listener.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from bastion.http.problems import BadRequest, Forbidden, NotFound, Problem
from bastion.logging import get_logger
from bastion.network.listener import attributed, listener_of
from bastion.settings import Settings

if TYPE_CHECKING:
    from bastion.network.blocks import BlockList

log = get_logger("bastion.network")

Network = IPv4Network | IPv6Network
ADMIN_PREFIX = "/admin"
# Admin-plane paths outside /admin: the Prometheus scrape (bastion.admin.metrics),
# where scrapers look for it.
ADMIN_PATHS = frozenset({"/metrics"})


class HeaderFieldsTooLarge(Problem):
    status = 431
    title = "Request Header Fields Too Large"
    detail = "The request has too many header fields."


@dataclass(frozen=True)
class IpPolicy:
    """Deny wins; an empty allow list allows every address not denied."""

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()

    @classmethod
    def of(cls, allow: Sequence[Network], deny: Sequence[Network]) -> IpPolicy:
        return cls(tuple(allow), tuple(deny))

    def permits(self, address: str) -> bool:
        if not self:
            return True
        try:
            ip = ip_address(address)
        except ValueError:
            # An address we cannot parse cannot be shown to be allowed.
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            # ::ffff:10.0.0.1 is 10.0.0.1; a v4 deny list must not be sidestepped.
            ip = ip.ipv4_mapped
        if any(ip in network for network in self.deny):
            return False
        return not self.allow or any(ip in network for network in self.allow)

    def __bool__(self) -> bool:
        return bool(self.allow or self.deny)


@dataclass(frozen=True)
class RouteGroup:
    prefix: str
    policy: IpPolicy

    def matches(self, path: str) -> bool:
        prefix = self.prefix.rstrip("/")
        return path == prefix or path.startswith(prefix + "/") or prefix == ""


class NetworkGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        public: IpPolicy,
        admin: IpPolicy,
        route_groups: Sequence[RouteGroup],
        max_header_count: int,
        public_hosts: Sequence[str] | None = None,
    ) -> None:
        """``public_hosts``: the Host names the public listener answers (lower case, no port); None: any."""
        self.app = app
        self.policies = {"public": public, "admin": admin}
        self.route_groups = tuple(route_groups)
        self.max_header_count = max_header_count
        self.public_hosts = None if public_hosts is None else frozenset(public_hosts)

    @classmethod
    def options(cls, settings: Settings) -> dict[str, object]:
        """Keyword arguments for ``app.add_middleware(NetworkGuard, **...)``."""
        return {
            "public": IpPolicy.of(settings.server.allow, settings.server.deny),
            "admin": IpPolicy.of(settings.admin.allow, settings.admin.deny),
            "route_groups": [
                RouteGroup(group.prefix, IpPolicy.of(group.allow, group.deny))
                for group in settings.network.route_groups
            ],
            "max_header_count": settings.server.max_header_count,
            "public_hosts": public_hosts(settings),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if len(scope["headers"]) > self.max_header_count:
            raise HeaderFieldsTooLarge
        listener = listener_of(scope)
        if listener == "public" and self.public_hosts is not None:
            self._check_host(scope)
        path: str = scope["path"]
        client = scope.get("client")
        address = str(client[0]) if client else ""
        if not self.policies[listener].permits(address):
            log.warning("ip policy denied", listener=listener, client_ip=address, path=path)
            raise Forbidden
        # Blocks guard the public side only: the admin plane (mTLS and its own
        # allowlist) stays reachable, so an operator can lift a mistaken block.
        blocks: BlockList | None = getattr(scope["app"].state, "blocks", None) if "app" in scope else None
        if listener == "public" and blocks is not None and await blocks.is_blocked(address):
            log.debug("blocked address refused", client_ip=address)
            raise Forbidden
        for group in self.route_groups:
            if group.matches(path) and not group.policy.permits(address):
                log.warning("ip policy denied", route_group=group.prefix, client_ip=address, path=path)
                raise Forbidden
        on_admin_path = path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/") or path in ADMIN_PATHS
        # The same 404 as any unknown path: the public side does not even
        # reveal that an admin plane exists.
        if on_admin_path != (listener == "admin"):
            raise NotFound
        if listener == "admin":
            with attributed(scope):
                await self.app(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check_host(self, scope: Scope) -> None:
        """Answer only the configured names on the public listener.

        Starlette builds absolute URLs (the trailing-slash redirect) from the
        Host header, so a stranger's Host would make us point clients at it.
        The admin listener keeps its own names (often localhost through a
        tunnel); mTLS and admin.allow guard it.
        """
        host = next((value for name, value in scope["headers"] if name == b"host"), None)
        if host is not None and self.public_hosts is not None and _host_name(host) not in self.public_hosts:
            raise BadRequest("This host is not served here.")


def public_hosts(settings: Settings) -> list[str] | None:
    """``http.allowed_hosts``; if empty, the host of ``auth.public_url`` in prod and any host (None) in dev."""
    configured = [host.lower() for host in settings.http.allowed_hosts]
    if configured:
        return configured
    published = urlsplit(settings.auth.public_url).hostname
    return [published] if settings.mode == "prod" and published else None


def _host_name(host: bytes) -> str:
    """``host`` without its port, lower case (``[::1]:8443`` -> ``::1``)."""
    name = host.decode("latin-1").lower()
    if name.startswith("["):
        return name[1 : name.find("]")] if "]" in name else name
    return name.rsplit(":", 1)[0] if name.count(":") == 1 else name
