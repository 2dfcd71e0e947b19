"""IP policy decisions (ASVS V4.1.3 context: the address comes from the spine)."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from bastion.network.ipfilter import IpPolicy, RouteGroup


@pytest.mark.parametrize(
    ("allow", "deny", "address", "permitted"),
    [
        ([], [], "203.0.113.1", True),
        (["127.0.0.1/32", "::1/128"], [], "::1", True),
        (["127.0.0.1/32", "::1/128"], [], "10.0.0.1", False),
        ([], ["10.0.0.0/8"], "::ffff:10.1.1.1", False),
        (["10.0.0.0/8"], ["10.0.0.5/32"], "10.0.0.5", False),
        (["10.0.0.0/8"], [], "not-an-ip", False),
        ([], [], "testclient", True),  # no policy: nothing to check
        ([], ["10.0.0.0/8"], "testclient", False),  # a policy cannot clear what it cannot parse
    ],
)
def test_ip_policy(allow: list[str], deny: list[str], address: str, permitted: bool) -> None:
    policy = IpPolicy.of([ip_network(a) for a in allow], [ip_network(d) for d in deny])
    assert policy.permits(address) is permitted


def test_route_group_prefix_matches_whole_segments() -> None:
    group = RouteGroup("/api/v1/admin", IpPolicy())
    assert group.matches("/api/v1/admin")
    assert group.matches("/api/v1/admin/users")
    assert not group.matches("/api/v1/administrators")
    assert RouteGroup("/", IpPolicy()).matches("/anything")
