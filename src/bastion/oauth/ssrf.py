"""Fetching URLs a client registered (its ``jwks_uri``), without becoming a proxy into our network.

A registered URL is an attacker's choice: without a guard, registering
``http://169.254.169.254/…`` or ``https://10.0.0.5/admin`` would make
Bastion request it (server-side request forgery, OWASP ASVS V15.3.2,
RFC 9700 §4.16 on jwks_uri). Every fetch here therefore:

- uses ``https`` (plain ``http`` only in dev, or with
  ``oauth.allow_private_jwks_uri``, for test servers on loopback);
- resolves the host itself and refuses any address that is not globally
  routable: private, loopback, link-local (cloud metadata), shared
  (100.64/10), multicast, reserved, unspecified, and IPv6 forms that carry
  an IPv4 address (IPv4-mapped, NAT64, 6to4, Teredo) when that one is.
  A name that resolves to one forbidden address among good ones is refused;
- connects to the address it checked, not to the name again: the request
  goes to the IP literal, with ``Host`` and the TLS server name (SNI and
  certificate check) set to the registered host, so a DNS answer that
  changes between the check and the connection (rebinding) has no effect;
- follows no redirect, ignores proxy settings of the environment, gives up
  after ``TIMEOUT_SECONDS`` and reads at most ``MAX_BYTES``.

``oauth.allow_private_jwks_uri`` (or ``mode = "dev"``) lifts the address
check, never the others. JWK Sets are cached for ``JWKS_TTL_SECONDS``; a
forced refresh (an assertion signed by a key we do not know yet) is allowed
once per ``REFRESH_SECONDS`` per URL, so unknown kids cannot make Bastion
fetch in a loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from bastion.logging import get_logger
from bastion.security.client_jwt import public_jwks_problem
from bastion.settings import Settings

__all__ = [
    "JWKS_TTL_SECONDS",
    "MAX_BYTES",
    "TIMEOUT_SECONDS",
    "FetchRefused",
    "Fetched",
    "fetch_jwks",
    "forget_jwks",
    "guarded_fetch",
]

log = get_logger("bastion.oauth.ssrf")

TIMEOUT_SECONDS = 3.0
MAX_BYTES = 64 * 1024
JWKS_TTL_SECONDS = 300.0
REFRESH_SECONDS = 30.0
_CACHE_SIZE = 1024
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchRefused(Exception):
    """The URL may not be fetched, or the fetch failed; the message says why (for the log)."""


@dataclass(frozen=True)
class Fetched:
    status: int
    body: bytes


def forbidden_address(address: IPAddress) -> bool:
    """Whether ``address`` is anything but a globally routable unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:a.b.c.d reaches a.b.c.d: only that one counts
            return forbidden_address(address.ipv4_mapped)
        embedded = address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and forbidden_address(embedded):
            return True
    return not address.is_global or address.is_multicast or address.is_reserved or address.is_unspecified


async def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise FetchRefused(f"the host does not resolve ({exc.__class__.__name__})") from None
    found = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos))
    if not found:
        raise FetchRefused("the host does not resolve")
    return found


async def guarded_fetch(
    url: str,
    settings: Settings,
    *,
    method: str = "GET",
    data: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Fetched:
    """``method url`` through the guard above; FetchRefused if refused or failed."""
    relaxed = settings.mode == "dev" or settings.oauth.allow_private_jwks_uri
    split = urlsplit(url)
    if split.scheme != "https" and not (split.scheme == "http" and relaxed):
        raise FetchRefused("only https URLs are fetched")
    host = split.hostname
    if not host or split.username or split.password or "#" in url:
        raise FetchRefused("the URL has no host, or has user information or a fragment")
    try:
        port = split.port or (443 if split.scheme == "https" else 80)
    except ValueError:
        raise FetchRefused("the URL's port is malformed") from None
    addresses = await _resolve(host, port)
    if not relaxed and any(forbidden_address(address) for address in addresses):
        raise FetchRefused("the host resolves to a private, loopback, link-local or reserved address")
    address = addresses[0]
    literal = f"[{address}]" if address.version == 6 else str(address)
    target = split._replace(netloc=f"{literal}:{port}").geturl()
    host_header = split.netloc.rpartition("@")[2]
    extensions = {"sni_hostname": host} if split.scheme == "https" else {}
    try:
        async with (
            httpx.AsyncClient(timeout=TIMEOUT_SECONDS, follow_redirects=False, trust_env=False, verify=True) as client,
            client.stream(
                method,
                target,
                data=data,
                headers={**(headers or {}), "Host": host_header, "User-Agent": "Bastion"},
                extensions=extensions,
            ) as response,
        ):
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_BYTES:
                    raise FetchRefused(f"the response is larger than {MAX_BYTES} bytes")
            return Fetched(response.status_code, bytes(body))
    except httpx.HTTPError as exc:
        raise FetchRefused(f"the fetch failed ({exc.__class__.__name__})") from None


# url -> (fresh until, when a refresh was last forced, JWK Set); monotonic times.
_jwks_cache: dict[str, tuple[float, float, dict[str, Any]]] = {}
# url -> when its last fetch failed.
_failed: dict[str, float] = {}


def forget_jwks() -> None:
    """Empty the JWK Set cache (tests, and after a client changes its jwks_uri)."""
    _jwks_cache.clear()
    _failed.clear()


async def fetch_jwks(url: str, settings: Settings, *, refresh: bool = False) -> dict[str, Any] | None:
    """The JWK Set at a client's ``jwks_uri`` (cached), or None if it cannot be had safely.

    ``refresh`` fetches again before the cache expires, for an assertion
    signed with a key not in the cached set; at most once per
    ``REFRESH_SECONDS`` per URL, so unknown kids cannot make us fetch in a loop.
    """
    now = time.monotonic()
    cached = _jwks_cache.get(url)
    forced = refresh and cached is not None and now >= cached[1] + REFRESH_SECONDS
    if cached is not None and now < cached[0] and not forced:
        return cached[2]
    failed_at = _failed.get(url)
    if failed_at is not None and now < failed_at + REFRESH_SECONDS:
        # A failing jwks_uri is not asked again at every request that names it.
        return cached[2] if cached is not None and now < cached[0] else None
    try:
        fetched = await guarded_fetch(url, settings, headers={"Accept": "application/jwk-set+json, application/json"})
        if fetched.status != 200:
            raise FetchRefused(f"the server answered {fetched.status}")
        jwks: dict[str, Any] = orjson.loads(fetched.body)
        problem = public_jwks_problem(jwks) if isinstance(jwks, dict) else "not a JSON object"
        if problem is not None:
            raise FetchRefused(f"not a usable JWK Set: {problem}")
    except (FetchRefused, orjson.JSONDecodeError) as exc:
        log.warning("jwks_uri refused", reason=str(exc))
        if len(_failed) >= _CACHE_SIZE:
            _failed.clear()
        _failed[url] = now
        return None
    _failed.pop(url, None)
    if len(_jwks_cache) >= _CACHE_SIZE:
        _jwks_cache.clear()
    _jwks_cache[url] = (now + JWKS_TTL_SECONDS, now if forced else -REFRESH_SECONDS, jwks)
    return jwks
