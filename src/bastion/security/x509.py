"""X.509 for Bastion: the development TLS certificates and the admin CA.

Keys are ECDSA P-256 (every client speaks it, and rustls and OpenSSL both
prefer it), written as PKCS#8 with mode 0600.

Development TLS: a local CA and a ``localhost`` leaf certificate
(:func:`write_dev_certificates`).

The admin CA: Bastion's own certificate authority for the mTLS admin plane (ASVS V12.3.5).

The CA signs client certificates only (``clientAuth``), so a leaf it issues
cannot pose as a server, and nothing signed by the development TLS CA or any
public CA is accepted where a Bastion client certificate is required. Keys are
ECDSA P-256, which rustls, OpenSSL and every browser keystore accept.

The CA private key leaves this module only as PKCS#8 DER for the caller to
encrypt under the keystore (never as a file in the clear); client keys are
handed to their owner once and not kept.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateAuthority",
    "CertificateFacts",
    "ClientBundle",
    "cert_builder",
    "certificate_facts",
    "certificate_facts_der",
    "certificate_not_after",
    "key_usage",
    "revoked_serials",
    "write_dev_certificates",
]

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


# --- the admin CA ------------------------------------------------------------

# Comfortably past any admin's tenure; the CA key is rotated by `ca init --force` in a new data dir.
_CA_DAYS = 3650
# nextUpdate of the CRL: rustls ignores it by default, and `serve` and `revoke`
# re-issue the CRL anyway, so a long window cannot lock admins out.
_CRL_DAYS = 365
# PBKDF2 rounds protecting a .p12 (OWASP: at least 600 000 for PBKDF2-SHA256).
_P12_ROUNDS = 600_000


@dataclass(frozen=True)
class ClientBundle:
    """A freshly issued client certificate and its private key (PEM)."""

    serial: int
    name: str
    not_after: dt.datetime
    certificate_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class CertificateFacts:
    """Public facts read from a certificate."""

    common_name: str
    subject: str  # RFC 4514, e.g. "CN=alice"
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    issuer: str
    sha256: str


class CertificateAuthority:
    """A CA certificate and its key, able to issue client certificates and CRLs."""

    def __init__(self, certificate_pem: bytes, key_der: bytes) -> None:
        self._certificate = x509.load_pem_x509_certificate(certificate_pem)
        key = serialization.load_der_private_key(key_der, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the CA key is not an EC key")
        if key.public_key() != self._certificate.public_key():
            raise ValueError("the CA key does not match the CA certificate")
        self._key = key

    @classmethod
    def create(cls, common_name: str, *, now: dt.datetime) -> CertificateAuthority:
        """A new self-signed CA that may sign leaves only (pathLen 0)."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        certificate = (
            cert_builder(name, name, key.public_key(), now, now + dt.timedelta(days=_CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cls(certificate.public_bytes(serialization.Encoding.PEM), der)

    @property
    def certificate_pem(self) -> bytes:
        return self._certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def not_after(self) -> dt.datetime:
        return self._certificate.not_valid_after_utc

    def key_der(self) -> bytes:
        """The CA private key as unencrypted PKCS#8 DER, for sealing into the keystore only."""
        return self._key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def issue_client(self, name: str, *, days: int, now: dt.datetime) -> ClientBundle:
        """A client certificate for ``name`` valid ``days`` days (capped at the CA's own expiry)."""
        key = ec.generate_private_key(ec.SECP256R1())
        not_after = min(now + dt.timedelta(days=days), self.not_after)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        certificate = (
            cert_builder(subject, self._certificate.subject, key.public_key(), now, not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return ClientBundle(
            serial=certificate.serial_number,
            name=name,
            not_after=certificate.not_valid_after_utc,
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM),
            key_pem=key_pem,
        )

    def crl(self, revoked: list[tuple[int, dt.datetime]], *, number: int, now: dt.datetime) -> bytes:
        """A signed CRL (RFC 5280 §5) listing ``(serial, revoked_at)`` pairs, as PEM."""
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._certificate.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=_CRL_DAYS))
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        for serial, when in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
            )
        return builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def pkcs12(self, bundle: ClientBundle, password: str) -> bytes:
        """The bundle as a PKCS#12 file (with the CA certificate) under ``password``.

        PBES2 with AES-256-CBC and PBKDF2-SHA256, not the legacy RC2/3DES that
        some tools still default to.
        """
        key = serialization.load_pem_private_key(bundle.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the client key is not an EC key")
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(_P12_ROUNDS)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
            .build(password.encode())
        )
        return pkcs12.serialize_key_and_certificates(
            bundle.name.encode(),
            key,
            x509.load_pem_x509_certificate(bundle.certificate_pem),
            [self._certificate],
            encryption,
        )


def certificate_facts(pem: bytes) -> CertificateFacts:
    """Subject CN, serial, validity and fingerprint of the first certificate in ``pem``."""
    return _facts(x509.load_pem_x509_certificate(pem))


def certificate_facts_der(der: bytes) -> CertificateFacts:
    """The same facts from a DER certificate (what a TLS peer presented).

    It reads the certificate and nothing more: trust is the handshake's job.
    """
    return _facts(x509.load_der_x509_certificate(der))


def revoked_serials(crl_pem: bytes) -> frozenset[int]:
    """The serial numbers a PEM CRL lists.

    The signature is not checked here: callers use the set only to refuse
    more (a connection opened before the CRL changed), never to accept; the
    handshake verifies the CRL against the CA.
    """
    return frozenset(entry.serial_number for entry in x509.load_pem_x509_crl(crl_pem))


def _facts(certificate: x509.Certificate) -> CertificateFacts:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = names[0].value if names else ""
    return CertificateFacts(
        common_name=common_name if isinstance(common_name, str) else common_name.decode(),
        subject=certificate.subject.rfc4514_string(),
        serial=certificate.serial_number,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        issuer=certificate.issuer.rfc4514_string(),
        sha256=certificate.fingerprint(hashes.SHA256()).hex(),
    )
