"""The block list's integer matching agrees with ``ipaddress`` on every case,
including IPv4-mapped IPv6, scoped IPv6 and text that is no address."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from bastion.network.blocks import _address_value, _Snapshot, parse_network
from bastion.security import token_bytes


def _bits(n: int) -> int:
    return int.from_bytes(token_bytes(n // 8), "big")


def _expected(networks: list[str], address: str) -> bool:
    try:
        ip = ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == n.version and ip in n for n in map(parse_network, networks))


def test_matching_agrees_with_ipaddress() -> None:
    networks = ["203.0.113.0/24", "198.51.100.7", "10.0.0.0/8", "2001:db8:1:2::/64", "2001:db8::1", "128.0.0.0/1"]
    snapshot = _Snapshot.of([(n, None) for n in networks], 0.0)
    probes = ["203.0.113.255", "203.0.114.0", "198.51.100.7", "198.51.100.8", "::ffff:10.1.2.3",
              "2001:db8:1:2::99", "2001:db8:1:3::", "2001:db8::1", "2001:db8::2", "fe80::1%eth0", "not an ip",
              "", "1.2.3", "::"]  # fmt: skip
    probes += [str(IPv4Address(_bits(32))) for _ in range(500)]
    probes += [str(IPv6Address(_bits(128))) for _ in range(200)]
    probes += [str(IPv6Address((0xFFFF << 32) | _bits(32))) for _ in range(100)]
    for probe in probes:
        parsed = _address_value(probe)
        got = parsed is not None and snapshot.covers(*parsed)
        assert got == _expected(networks, probe), probe


def test_a_row_that_is_not_a_network_is_skipped() -> None:
    snapshot = _Snapshot.of([("garbage", None), ("203.0.113.7/24", None), ("192.0.2.1", None)], 0.0)
    assert snapshot.by_prefix.keys() == {(4, 32)}
    assert ip_network("192.0.2.1/32")
