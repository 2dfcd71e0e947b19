"""The SSRF guard on a client's jwks_uri (RFC 9700 §4.16, ASVS V15.3.2 / V1.3.6), against real loopback servers.

In prod settings a URL that resolves to a private, loopback, link-local or
reserved address is never requested; ``oauth.allow_private_jwks_uri`` lets a
test server on loopback through; redirects are not followed; bodies are
capped; and the connection goes to the address that was checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bastion.oauth import ssrf
from bastion.oauth.ssrf import FetchRefused, fetch_jwks, forbidden_address, guarded_fetch
from bastion.settings import Settings
from factories.oauth_clients import (
    ASSERTION_TYPE,
    CLIENT_AUTH_ROUTE,
    WEB_APP,
    assertion,
    client_auth_endpoint,
    public_jwks,
    register_client,
    signing_key,
)


class KeyServer:
    """An HTTP server on 127.0.0.1 that answers ``routes[path] = (status, headers, body)`` and counts requests."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append((self.path, self.headers.get("host")))
                status, headers, body = server.routes.get(self.path, (404, {}, b""))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve_jwks(self, path: str, jwks: dict[str, Any]) -> None:
        self.routes[path] = (200, {"Content-Type": "application/json"}, json.dumps(jwks).encode())


@pytest.fixture
def keys_server() -> Iterator[KeyServer]:
    server = KeyServer()
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    ssrf.forget_jwks()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        ssrf.forget_jwks()


def prod(settings: Settings, *, allow_private: bool = False) -> Settings:
    oauth = settings.oauth.model_copy(update={"allow_private_jwks_uri": allow_private})
    return settings.model_copy(update={"mode": "prod", "oauth": oauth})


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
        "224.0.0.1", "240.0.0.1", "255.255.255.255", "192.0.2.1", "198.18.0.1",
        "::1", "::", "fe80::1", "fc00::1", "ff02::1", "2001:db8::1",
        "::ffff:127.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a00:1", "2002:a00:1::1",
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",
    ],
)  # fmt: skip
def test_forbidden_addresses(address: str) -> None:
    assert forbidden_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_global_addresses_are_allowed(address: str) -> None:
    assert not forbidden_address(ipaddress.ip_address(address))


async def test_prod_refuses_loopback_private_and_plain_http(settings: Settings, keys_server: KeyServer) -> None:
    keys_server.serve_jwks("/jwks", public_jwks(signing_key("ES256")))
    strict = prod(settings)
    for url in (
        keys_server.url("/jwks"),  # http
        f"https://127.0.0.1:{keys_server.port}/jwks",
        f"https://[::1]:{keys_server.port}/jwks",
        f"https://[::ffff:127.0.0.1]:{keys_server.port}/jwks",
        "https://169.254.169.254/latest/meta-data/",
        f"https://localhost:{keys_server.port}/jwks",
        "https://10.0.0.1/jwks",
    ):
        with pytest.raises(FetchRefused):
            await guarded_fetch(url, strict)
        assert await fetch_jwks(url, strict) is None
    assert keys_server.requests == []  # nothing reached the server


async def test_allowed_with_the_flag(settings: Settings, keys_server: KeyServer) -> None:
    jwks = public_jwks(signing_key("ES256"))
    keys_server.serve_jwks("/jwks", jwks)
    assert await fetch_jwks(keys_server.url("/jwks"), prod(settings, allow_private=True)) == jwks
    # Cached: a second call does not fetch again.
    assert await fetch_jwks(keys_server.url("/jwks"), prod(settings, allow_private=True)) == jwks
    assert len(keys_server.requests) == 1


async def test_no_redirect_no_oversized_body_no_private_key(settings: Settings, keys_server: KeyServer) -> None:
    relaxed = prod(settings, allow_private=True)
    keys_server.routes["/moved"] = (302, {"Location": keys_server.url("/jwks")}, b"")
    keys_server.serve_jwks("/jwks", public_jwks(signing_key("ES256")))
    assert await fetch_jwks(keys_server.url("/moved"), relaxed) is None
    assert [path for path, _ in keys_server.requests] == ["/moved"]
    # A failing URL is not fetched again at once, forced or not.
    assert await fetch_jwks(keys_server.url("/moved"), relaxed, refresh=True) is None
    assert len(keys_server.requests) == 1
    keys_server.routes["/big"] = (200, {}, b'{"keys": [' + b" " * (ssrf.MAX_BYTES + 1) + b"]}")
    with pytest.raises(FetchRefused, match="larger"):
        await guarded_fetch(keys_server.url("/big"), relaxed)
    keys_server.serve_jwks("/private", {"keys": [signing_key("ES256").as_dict(private=True)]})
    assert await fetch_jwks(keys_server.url("/private"), relaxed) is None
    keys_server.routes["/html"] = (200, {}, b"<html>")
    assert await fetch_jwks(keys_server.url("/html"), relaxed) is None


async def test_connects_to_the_address_it_resolved_once(
    settings: Settings, keys_server: KeyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No DNS rebinding: the name is resolved once, and the request goes to that address with the name as Host."""
    loop = asyncio.get_running_loop()
    answers: list[str] = []

    async def resolve_once(host: str, port: int, **kwargs: Any) -> list[Any]:
        answers.append(host)
        if len(answers) > 1:
            raise socket.gaierror("resolved twice")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(loop, "getaddrinfo", resolve_once)
    jwks = public_jwks(signing_key("EdDSA"))
    keys_server.serve_jwks("/jwks", jwks)
    url = f"http://keys.rebind.test:{keys_server.port}/jwks"
    assert await fetch_jwks(url, prod(settings, allow_private=True)) == jwks
    assert answers == ["keys.rebind.test"]
    assert keys_server.requests == [("/jwks", f"keys.rebind.test:{keys_server.port}")]


async def test_private_key_jwt_with_a_jwks_uri_and_a_key_rotation(
    make_settings: Any, clock: Any, keys_server: KeyServer
) -> None:
    """A client that publishes its keys: an assertion verifies against them, and one signed
    with a key it added since is accepted after one refetch."""
    from harness import CHEAP_ARGON2, open_harness

    settings = make_settings(passwords=CHEAP_ARGON2, oauth={"allow_private_jwks_uri": True})
    old, new = signing_key("RS256"), signing_key("ES256")
    keys_server.serve_jwks("/jwks", public_jwks(old))
    async with open_harness(settings, clock) as h, client_auth_endpoint(h.app, h.address) as endpoint:
        client, _ = await register_client(h.app, WEB_APP, jwks_uri=keys_server.url("/jwks"))
        issuer, now = settings.auth.public_url, int(clock.now().timestamp())

        async def authenticate(key: Any) -> int:
            form = {
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion(key, client.id, issuer, now=now),
            }
            return (
                await endpoint.post(CLIENT_AUTH_ROUTE, data={"grant_type": "client_credentials", **form})
            ).status_code

        assert await authenticate(old) == 200
        keys_server.serve_jwks("/jwks", public_jwks(old, new))
        assert await authenticate(new) == 200
        assert len(keys_server.requests) == 2
        assert await authenticate(signing_key("ES256")) == 401  # an unknown key: refetch throttled, refused
        assert len(keys_server.requests) == 2
