"""Bastion's CA, IP policy and firewall rendering, without a server.

ASVS 5.0: V12.3.5 (mTLS client certificates), V11.1.1/V13.3.1 (the CA key
is sealed by the master key), V13.1 (least-privilege host firewall).
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from bastion.network.ca import BastionCa, CaError, CaPaths, list_issued
from bastion.network.firewall import render
from bastion.settings import Settings, load_settings

# The root conftest's factory type; `conftest` itself is ambiguous with several test dirs.
SettingsFactory = Callable[..., Settings]

NOW = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)


def test_ca_key_is_sealed_and_certificates_chain_to_the_ca(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    ca = BastionCa.init(settings, now=NOW)
    paths = CaPaths.of(settings)
    sealed = paths.sealed_key.read_bytes()
    assert b"PRIVATE KEY" not in sealed
    assert not any(b"PRIVATE" in p.read_bytes() for p in paths.directory.iterdir() if p.is_file())
    assert paths.sealed_key.stat().st_mode & 0o077 == 0
    with pytest.raises(CaError):
        BastionCa.init(settings, now=NOW)  # never replaced

    bundle = BastionCa.open(settings).issue("alice", days=30, now=NOW)
    cert = x509.load_pem_x509_certificate(bundle.certificate_pem)
    root = x509.load_pem_x509_certificate(paths.certificate.read_bytes())
    cert.verify_directly_issued_by(root)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=30)
    assert ca.paths == paths


def test_ca_key_does_not_open_with_another_master_key(make_settings: SettingsFactory, tmp_path: Path) -> None:
    settings = make_settings()
    BastionCa.init(settings, now=NOW)
    other = load_settings(tmp_path / "other")
    from bastion.instance import initialise

    initialise(other)
    shutil.copytree(settings.data_dir / "ca", other.data_dir / "ca")
    shutil.copy(CaPaths.of(settings).sealed_key, CaPaths.of(other).sealed_key)
    with pytest.raises(CaError, match="does not open"):
        BastionCa.open(other)


def test_revoke_by_name_or_serial_updates_the_crl(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    BastionCa.init(settings, now=NOW)
    ca = BastionCa.open(settings)
    alice = ca.issue("alice", days=30, now=NOW)
    bob = ca.issue("bob", days=30, now=NOW)
    carol = ca.issue("carol", days=30, now=NOW)
    assert [r.name for r in ca.revoke("alice", now=NOW)] == ["alice"]
    assert [r.name for r in ca.revoke(format(bob.serial, "x"), now=NOW)] == ["bob"]
    with pytest.raises(CaError):
        ca.revoke("alice", now=NOW)  # already revoked
    crl = x509.load_pem_x509_crl(CaPaths.of(settings).crl.read_bytes())
    root = x509.load_pem_x509_certificate(CaPaths.of(settings).certificate.read_bytes())
    assert crl.is_signature_valid(root.public_key())  # type: ignore[arg-type]
    revoked = {entry.serial_number for entry in crl}
    assert revoked == {alice.serial, bob.serial}
    assert carol.serial not in revoked
    statuses = {r.name: r.status(NOW) for r in list_issued(settings)}
    assert statuses == {"alice": "revoked", "bob": "revoked", "carol": "valid"}


def test_issue_rejects_names_that_are_not_file_names(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    BastionCa.init(settings, now=NOW)
    for name in ("../evil", "a/b", "", ".hidden", "x" * 65):
        with pytest.raises(CaError):
            BastionCa.open(settings).issue(name, days=1, now=NOW)


def test_pkcs12_needs_its_password(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    BastionCa.init(settings, now=NOW)
    ca = BastionCa.open(settings)
    bundle = ca.issue("alice", days=30, now=NOW)
    blob = ca.pkcs12(bundle, "correct horse")
    with pytest.raises(ValueError, match=r"(?i)password|mac|decrypt"):
        pkcs12.load_key_and_certificates(blob, b"wrong")
    key, cert, extra = pkcs12.load_key_and_certificates(blob, b"correct horse")
    assert key is not None
    assert cert is not None
    assert cert.serial_number == bundle.serial
    assert len(extra) == 1  # the CA certificate travels along


def _nft_check(ruleset: str, tmp_path: Path) -> None:
    nft = shutil.which("nft") or ("/usr/sbin/nft" if Path("/usr/sbin/nft").exists() else None)
    if nft is None:
        pytest.skip("nft is not installed (apt-get install nftables); .ci/run installs it")
    path = tmp_path / "bastion.nft"
    path.write_text(ruleset)
    result = subprocess.run([nft, "-c", "-f", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_firewall_default_ruleset_is_least_privilege(tmp_path: Path) -> None:
    """Policy drop; only the listener ports open; the admin port only to loopback."""
    ruleset = render(load_settings(tmp_path))
    _nft_check(ruleset, tmp_path)
    assert "policy drop;" in ruleset
    assert "tcp dport 8443 accept" in ruleset
    assert "ip saddr @admin_v4 tcp dport 8444 accept" in ruleset
    assert "elements = { 127.0.0.1/32 }" in ruleset
    assert "elements = { ::1/128 }" in ruleset
    assert "tcp dport 8444 accept" not in ruleset.replace("@admin_v4 tcp dport 8444 accept", "").replace(
        "@admin_v6 tcp dport 8444 accept", ""
    )
    assert "tcp dport 22" not in ruleset  # nothing else unless asked


def test_firewall_ruleset_follows_the_settings(tmp_path: Path) -> None:
    settings = load_settings(
        tmp_path,
        server={"port": 443, "redirect_port": 80, "allow": ["10.0.0.0/8"], "deny": ["10.9.0.0/16"]},
        admin={"port": 9000, "allow": ["192.168.1.0/24"], "deny": ["192.168.1.66/32"]},
        network={"firewall_extra_tcp_ports": [22], "firewall_max_connections_per_ip": 50},
    )
    ruleset = render(settings)
    _nft_check(ruleset, tmp_path)
    assert "ip saddr @public_v4 tcp dport { 443, 80 } accept" in ruleset
    assert ruleset.index("ip saddr 10.9.0.0/16 tcp dport { 443, 80 } drop") < ruleset.index("@public_v4 tcp dport")
    assert "ip saddr 192.168.1.66/32 tcp dport 9000 drop" in ruleset
    assert "ip saddr @admin_v4 tcp dport 9000 accept" in ruleset
    assert "admin_v6" not in ruleset  # no IPv6 admin network, no IPv6 admin rule
    assert "ct count over 50" in ruleset
    assert "tcp dport 22 accept" in ruleset
    with pytest.raises(ValueError, match="unknown firewall format"):
        render(settings, "iptables")


# -- the commands ---------------------------------------------------------------------------


def _run(*args: str) -> tuple[int, str, str]:
    from typer.testing import CliRunner

    from bastion.cli import app

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_ca_commands(make_settings: SettingsFactory, tmp_path: Path) -> None:
    settings = make_settings()
    data = str(settings.data_dir)
    out = tmp_path / "out"
    code, _, err = _run("ca", "issue", "alice", "--out", str(out), "--data-dir", data)
    assert code == 2
    assert err.count("\n") == 1
    assert "bastion ca init" in err
    assert _run("ca", "init", "--data-dir", data)[0] == 0
    code, stdout, _ = _run("ca", "issue", "alice", "--out", str(out), "--days", "7", "--data-dir", data)
    assert code == 0
    assert (out / "alice.pem").exists()
    assert (out / "alice.key").stat().st_mode & 0o077 == 0
    code, _, err = _run("ca", "issue", "alice", "--out", str(out), "--data-dir", data)
    assert code == 2
    assert "already exists" in err
    code, stdout, _ = _run("ca", "issue", "bob", "--p12", "--out", str(out), "--data-dir", data)
    assert code == 0
    password = stdout.split("p12 password (shown once): ")[1].split()[0]
    pkcs12.load_key_and_certificates((out / "bob.p12").read_bytes(), password.encode())
    assert not (out / "bob.key").exists()
    code, stdout, _ = _run("ca", "revoke", "bob", "--data-dir", data)
    assert code == 0
    assert "revoked bob" in stdout
    code, _, err = _run("ca", "revoke", "nobody", "--data-dir", data)
    assert code == 2
    assert err.count("\n") == 1
    code, stdout, _ = _run("ca", "list", "--data-dir", data)
    assert code == 0
    assert "alice" in stdout
    assert "revoked" in stdout


def test_firewall_render_command(tmp_path: Path) -> None:
    code, stdout, _ = _run("firewall", "render", "--format", "nftables", "--data-dir", str(tmp_path))
    assert code == 0
    _nft_check(stdout, tmp_path)
    code, _, err = _run("firewall", "render", "--format", "iptables", "--data-dir", str(tmp_path))
    assert code == 2
    assert err.count("\n") == 1
