"""Development TLS: a local CA and a ``localhost`` leaf certificate.

Keys are ECDSA P-256 (every client speaks it, and rustls and OpenSSL both
prefer it), written as PKCS#8 with mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEV_HOSTS = ("localhost", "127.0.0.1", "::1")


def write_dev_certificates(tls_dir: Path, *, now: dt.datetime | None = None) -> bool:
    """Create ``ca.pem``, ``ca.key``, ``server.pem`` and ``server.key`` unless present.

    Returns whether anything was written; existing files are never replaced.
    """
    paths = [tls_dir / name for name in ("ca.pem", "ca.key", "server.pem", "server.key")]
    if all(path.exists() for path in paths):
        return False
    if any(path.exists() for path in paths):
        missing = ", ".join(p.name for p in paths if not p.exists())
        msg = f"{tls_dir} is incomplete (missing {missing}); move it aside to regenerate"
        raise FileExistsError(msg)
    now = now or dt.datetime.now(dt.UTC)
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bastion development CA")])
    ca = (
        cert_builder(ca_name, ca_name, ca_key.public_key(), now, now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    leaf_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    names += [x509.IPAddress(ipaddress.ip_address(h)) for h in DEV_HOSTS[1:]]
    leaf = (
        cert_builder(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]),
            ca_name,
            leaf_key.public_key(),
            now,
            # Within Mozilla's 366-day cap for leaves, so scanners call it compliant.
            now + dt.timedelta(days=365),
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    _write(tls_dir / "ca.key", _private_pem(ca_key), 0o600)
    _write(tls_dir / "ca.pem", ca.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(tls_dir / "server.key", _private_pem(leaf_key), 0o600)
    _write(tls_dir / "server.pem", leaf.public_bytes(serialization.Encoding.PEM), 0o644)
    return True


def certificate_not_after(path: Path) -> dt.datetime:
    """When the first certificate in a PEM file expires."""
    return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc


def cert_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: dt.datetime,
    not_after: dt.datetime,
) -> x509.CertificateBuilder:
    """A certificate valid from a few minutes ago (clock skew) until ``not_after``."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
    )


def key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
