"""Helpers of the security tier: attack tools from outside against a real ``bastion serve``.

Each tool runs from its own venv (scripts/setup-tools), against a server
started once for the tier, time-boxed, and its own result line is parsed:
an exit code alone proves nothing (sqlmap exits 0 having tested nothing).
The times each tool took are printed at the end of the run.

The target is configured as a scanner needs it, and says why:
- throttles raised: at the default 10-60 requests a minute a scanner tests
  the 429 page, not the logic behind it (throttling has its own tests);
- the monitor off: it would block the scanner's address after a few hundred
  refused requests, which is what it is for, and the rest of the scan would
  test the block page;
- cheap password hashing: schemathesis signs in again for each logout it
  sends, and Argon2's cost is not what the tier is about;
- an account lockout of one second: schemathesis learns the user's address
  from GET /api/v1/me and sends wrong passwords with it; a lockout of a
  minute would sign the run out (lockout has its own tests);
- no minimum body rate: its two-second grace for a body's first byte is
  shorter than a fuzzer's pause on a loaded two-core machine (a 408 for a
  four-byte body), and slow bodies have their own tests.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from e2e.serving import Served, clean_env, missing_peer

ROOT = Path(__file__).parents[2]
TOOLS = ROOT / ".venv-tools"
EMAIL = "scanner@example.com"
PASSWORD = "tangerine-orbit-cascade-91"
REDIRECT_URI = "https://127.0.0.1:9/callback"
UNLIMITED = "1000000/minute"
THROTTLES = [
    "AUTH__LOGIN_RATE_PER_IP", "AUTH__LOGIN_RATE_PER_ACCOUNT", "AUTH__MFA_RATE_PER_IP", "AUTH__REFRESH_RATE_PER_IP",
    "AUTH__REGISTER_RATE_PER_IP", "AUTH__VERIFY_RATE_PER_IP", "AUTH__FORGOT_RATE_PER_IP", "AUTH__RESET_RATE_PER_IP",
    "AUTH__MAIL_RATE_PER_ACCOUNT", "AUTH__API_KEY_RATE", "OAUTH__TOKEN_RATE_PER_IP", "OAUTH__AUTHORIZE_RATE_PER_IP",
    "OAUTH__PROVIDER_RATE_PER_IP",
]  # fmt: skip
SCANNED: dict[str, str] = {
    **{f"BASTION_{name}": UNLIMITED for name in THROTTLES},
    "BASTION_MONITOR__ENABLED": "false",
    "BASTION_AUTH__LOCKOUT_SECONDS": "1",
    "BASTION_HTTP__BODY_MIN_RATE": "0",
    "BASTION_PASSWORDS__MEMORY_COST_KIB": "7168",
    "BASTION_PASSWORDS__TIME_COST": "1",
    # Thousands of requests: the access log would only fill the pipe.
    "BASTION_LOG__ACCESS": "false",
    "BASTION_LOG__LEVEL": "warning",
}

# Seconds each tool took, printed by pytest_terminal_summary.
TIMES: dict[str, float] = {}


def tool(venv: str, command: str | None = None) -> Path:
    path = TOOLS / venv / "bin" / (command or venv)
    if not path.exists():
        missing_peer(f"{venv} is not installed: scripts/setup-tools {venv} (scripts/test runs it)")
    return path


def run_tool(label: str, argv: list[str | Path], *, seconds: float, **kwargs: object) -> str:
    """Run a tool to its end within ``seconds`` (its own options keep it well inside) and return its output."""
    started = time.monotonic()
    try:
        result = subprocess.run(
            [str(arg) for arg in argv],
            capture_output=True,
            text=True,
            timeout=seconds,
            check=False,
            **kwargs,  # type: ignore[arg-type]
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{label} ran past its {seconds:.0f} s box:\n{str(exc.stdout or '')[-3000:]}")
    finally:
        TIMES[label] = TIMES.get(label, 0.0) + time.monotonic() - started
    return result.stdout + result.stderr


@dataclass
class Target:
    served: Served
    token: str
    client_id: str
    note_ids: list[str]
    # The address the server listens on, when not 127.0.0.1 (it is still called localhost).
    address: str = "127.0.0.1"
    # Settings the CLI needs besides the data dir (the database, when not SQLite).
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.served.url

    @property
    def reach(self) -> str:
        """The URL a tool on this host uses (the listening address, when not loopback)."""
        return self.url if self.address == "127.0.0.1" else f"https://{self.address}:{self.served.port}"

    @property
    def database(self) -> str:
        return "PostgreSQL" if "BASTION_DATABASE_URL" in self.settings else "SQLite"

    def client(self) -> httpx.Client:
        if self.address == "127.0.0.1":
            return self.served.client()

        def as_localhost(request: httpx.Request) -> None:
            request.extensions["sni_hostname"] = "localhost"

        return httpx.Client(
            base_url=f"https://{self.address}:{self.served.port}",
            headers={"host": f"localhost:{self.served.port}"},
            verify=self.served.tls(),
            event_hooks={"request": [as_localhost]},
            timeout=10,
        )

    @property
    def ca(self) -> Path:
        return self.served.data / "tls" / "ca.pem"

    def bastion(self, *args: str, stdin: bytes | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "bastion", *args],
            input=stdin,
            env=clean_env(BASTION_DATA_DIR=str(self.served.data), **self.settings),
            capture_output=True,
            timeout=120,
            check=True,
        )
        return done.stdout.decode()

    def sign_in(self) -> str:
        """A new session (retried over the tier's one-second lockout, see SCANNED)."""
        with self.client() as client:
            for _ in range(5):
                answer = client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
                if answer.status_code == 200:
                    return str(answer.json()["access_token"])
                time.sleep(1.1)
            raise AssertionError(answer.text)


def prepare(served: Served, address: str = "127.0.0.1", settings: dict[str, str] | None = None) -> Target:
    """A verified user with three notes, and an OAuth client whose authorize requests are valid."""
    blank = Target(served, "", "", [], address, settings or {})
    blank.bastion("user", "create", "--email", EMAIL, "--password-stdin", "--verified", stdin=PASSWORD.encode())
    made = blank.bastion(
        "oauth", "client", "create", "--name", "Scanned", "--redirect-uri", REDIRECT_URI,
        "--grant", "authorization_code", "--scope", "openid", "--scope", "profile",
    )  # fmt: skip
    client_id = json.loads(made.strip().splitlines()[-1])["client_id"]
    token = blank.sign_in()
    ids = []
    with blank.client() as client:
        for n in (1, 2, 3):
            answer = client.post(
                "/api/v1/collections/notes/records",
                json={"title": f"note {n}", "priority": n},
                headers={"authorization": f"Bearer {token}"},
            )
            assert answer.status_code == 201, answer.text
            ids.append(str(answer.json()["id"]))
    return Target(served, token, client_id, ids, address, settings or {})


# -- a network namespace of its own, for the scanner that phones home ----------------------------


@dataclass
class Namespace:
    """``ip netns`` with one veth pair to the host and nothing else: no default route, so
    a tool inside reaches the one address the server listens on and no other (wapiti looks
    for updates and fingerprint databases on the internet at start)."""

    name: str
    host_address: str
    inner_address: str

    def run(self, argv: list[str]) -> list[str]:
        return [shutil.which("ip") or "ip", "netns", "exec", self.name, *argv]


@contextmanager
def namespace() -> Iterator[Namespace]:
    ip = shutil.which("ip")
    if os.geteuid() != 0 or ip is None:
        missing_peer("a network namespace needs root and iproute2 (ip netns)")
    tag = f"{os.getpid() % 100000}"
    octet = os.getpid() % 250 + 2
    # Addresses of this pair only (RFC 1918, on a link no other host is on).
    made = Namespace(f"bastion-scan-{tag}", f"10.213.{octet}.1", f"10.213.{octet}.2")
    outer, inner = f"bsh{tag}", f"bsn{tag}"
    hosts = Path("/etc/netns") / made.name
    steps = [
        [ip, "netns", "add", made.name],
        [ip, "link", "add", outer, "type", "veth", "peer", "name", inner],
        [ip, "link", "set", inner, "netns", made.name],
        [ip, "addr", "add", f"{made.host_address}/30", "dev", outer],
        [ip, "link", "set", outer, "up"],
        made.run([ip, "addr", "add", f"{made.inner_address}/30", "dev", inner]),
        made.run([ip, "link", "set", inner, "up"]),
        made.run([ip, "link", "set", "lo", "up"]),
    ]
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True, timeout=30)
        # `ip netns exec` mounts this over /etc/hosts: inside, "localhost" is the server (its
        # certificate names localhost), so the scanner sends the Host a browser would.
        hosts.mkdir(parents=True, exist_ok=True)
        (hosts / "hosts").write_text(f"{made.host_address} localhost\n")
        yield made
    finally:
        subprocess.run([ip, "link", "del", outer], capture_output=True, timeout=30, check=False)
        subprocess.run([ip, "netns", "del", made.name], capture_output=True, timeout=30, check=False)
        shutil.rmtree(hosts, ignore_errors=True)


def short_lived_certificate(data: Path, days: int = 89) -> dict[str, str]:
    """A leaf for localhost from the data dir's dev CA, living ``days``: the certificate an
    operator brings (ACME issues 90-day ones). Mozilla's modern profile caps a leaf's life at
    90 days; the dev certificate ``init`` writes lives 365 (intermediate's cap is 366) so that a
    development instance does not stop working after three months. Returns the settings."""
    tls = data / "tls"
    ca = x509.load_pem_x509_certificate((tls / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((tls / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = tls / "short.pem", tls / "short.key"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    return {"BASTION_SERVER__CERT_FILE": str(cert_file), "BASTION_SERVER__KEY_FILE": str(key_file)}


@contextmanager
def scratch_database() -> Iterator[dict[str, str]]:
    """A PostgreSQL database of its own when BASTION_TEST_DATABASE_URL names a server (CI does),
    dropped after; else nothing (SQLite). Yields the settings that point Bastion at it."""
    base = os.environ.get("BASTION_TEST_DATABASE_URL")
    if not base:
        yield {}
        return
    name = f"bastion_scan_{uuid.uuid4().hex[:12]}"
    admin = base.replace("postgresql+asyncpg", "postgresql")
    asyncio.run(_execute(admin, f'CREATE DATABASE "{name}"'))
    try:
        yield {"BASTION_DATABASE_URL": base.rsplit("/", 1)[0] + "/" + name}
    finally:
        asyncio.run(_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _execute(url: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()
