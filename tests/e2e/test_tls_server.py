"""A real `bastion serve` process over real TLS sockets (V12.1.1, V12.1.2, V12.2.1)."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from e2e.serving import missing_peer

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    data = tmp_path_factory.mktemp("e2e") / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    subprocess.run([sys.executable, "-m", "bastion", "init", "--data-dir", str(data)], env=env, check=True)
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bastion",
            "serve",
            "--data-dir",
            str(data),
            "--port",
            str(port),
            "--admin-port",
            str(free_port()),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
                time.sleep(0.1)
        else:
            pytest.fail("server did not start")
        yield port, data
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_serves_https_with_the_dev_certificate(server: tuple[int, Path]) -> None:
    port, data = server
    context = ssl.create_default_context(cafile=str(data / "tls" / "ca.pem"))
    response = httpx.get(f"https://localhost:{port}/healthz", verify=context)
    assert response.status_code == 200
    assert response.headers["strict-transport-security"].startswith("max-age=31536000")
    # V13.4.6: the server may name itself (granian cannot be told not to) but
    # never its version.
    assert not any(ch.isdigit() for ch in response.headers.get("server", ""))


def test_plain_http_is_not_served_on_the_tls_port(server: tuple[int, Path]) -> None:
    port, _ = server
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=3)


def _handshake(port: int, *flags: str) -> bool:
    openssl = shutil.which("openssl")
    if openssl is None:
        missing_peer("the openssl client is not installed (apt-get install openssl)")
    result = subprocess.run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", *flags],
        input=b"",
        capture_output=True,
        timeout=20,
        check=False,
    )
    return result.returncode == 0 and b"Cipher is (NONE)" not in result.stdout


@pytest.mark.parametrize(
    ("flags", "accepted"),
    [
        (("-tls1_3",), True),
        (("-tls1_2",), True),
        (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"), True),
        (("-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"), False),
        (("-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"), False),
        (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA"), False),  # CBC
        (("-tls1_2", "-cipher", "AES128-GCM-SHA256"), False),  # no forward secrecy
    ],
)
def test_tls_versions_and_suites(server: tuple[int, Path], flags: tuple[str, ...], accepted: bool) -> None:
    port, _ = server
    assert _handshake(port, *flags) is accepted
