"""Bastion's CA as a service: where its files live and what ``bastion ca`` does.

Layout in the data directory::

    ca/ca.pem          the CA certificate (public; the admin listener trusts it)
    ca/crl.pem         the current revocation list (public; the admin listener loads it)
    ca/issued.json     every certificate issued: serial, name, validity, revocation
    keys/bastion-ca.key  the CA private key, sealed with the "encryption" keyring

The CA key is never on disk in the clear: it is AES-256-GCM encrypted under the
master key's keystore and bound (associated data) to the CA certificate's
fingerprint, so a sealed key swapped in from another CA fails to open.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.secrets import open_keyrings
from bastion.security import Encryptor, InvalidCiphertext, aad_for
from bastion.security.x509 import CertificateAuthority, ClientBundle, certificate_facts
from bastion.settings import ConfigError, Settings

CA_NAME = "Bastion admin CA"
# Names become file names (NAME.pem) and certificate CNs.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SERIAL_RE = re.compile(r"(?:0x)?([0-9a-fA-F:]{1,64})")
_FORMAT = "bastion-ca-registry/v1"


class CaError(ConfigError):
    """A CA operation that cannot be done, in one line a user can act on."""


@dataclass(frozen=True)
class IssuedRecord:
    serial: int
    name: str
    issued_at: dt.datetime
    not_after: dt.datetime
    revoked_at: dt.datetime | None = None

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")

    def status(self, now: dt.datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.not_after <= now else "valid"


@dataclass(frozen=True)
class CaPaths:
    directory: Path
    certificate: Path
    crl: Path
    registry: Path
    sealed_key: Path

    @classmethod
    def of(cls, settings: Settings) -> CaPaths:
        directory = settings.data_dir / "ca"
        return cls(
            directory=directory,
            certificate=directory / "ca.pem",
            crl=directory / "crl.pem",
            registry=directory / "issued.json",
            sealed_key=settings.keys_dir / "bastion-ca.key",
        )

    def initialised(self) -> bool:
        return self.certificate.is_file() and self.sealed_key.is_file()


class BastionCa:
    """The opened CA: issue, revoke, list; every change persisted before it returns."""

    def __init__(self, paths: CaPaths, authority: CertificateAuthority) -> None:
        self.paths = paths
        self._authority = authority

    @classmethod
    def init(cls, settings: Settings, *, now: dt.datetime) -> BastionCa:
        """Create the CA; refuses to replace an existing one (its certificates would all break)."""
        paths = CaPaths.of(settings)
        if paths.certificate.exists() or paths.sealed_key.exists():
            raise CaError(f"a CA already exists in {paths.directory}; move it aside to create a new one")
        encryptor = _encryptor(settings)
        authority = CertificateAuthority.create(CA_NAME, now=now)
        paths.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fingerprint = certificate_facts(authority.certificate_pem).sha256
        _write_new(paths.sealed_key, encryptor.encrypt(authority.key_der(), _key_aad(fingerprint)), 0o600)
        _write_new(paths.certificate, authority.certificate_pem, 0o644)
        ca = cls(paths, authority)
        with ca._locked_registry() as registry:
            ca._write_crl(registry, now)
        return ca

    @classmethod
    def open(cls, settings: Settings) -> BastionCa:
        """Unseal the CA key with the master key's keystore."""
        paths = CaPaths.of(settings)
        if not paths.initialised():
            raise CaError("the CA is not initialised; run `bastion ca init`")
        certificate_pem = paths.certificate.read_bytes()
        fingerprint = certificate_facts(certificate_pem).sha256
        try:
            key_der = _encryptor(settings).decrypt(paths.sealed_key.read_bytes(), _key_aad(fingerprint))
        except InvalidCiphertext:
            raise CaError(f"{paths.sealed_key} does not open with this master key and CA certificate") from None
        return cls(paths, CertificateAuthority(certificate_pem, key_der))

    def issue(self, name: str, *, days: int, now: dt.datetime) -> ClientBundle:
        if not NAME_RE.fullmatch(name):
            raise CaError("a certificate name is 1-64 letters, digits, '.', '_' or '-', starting alphanumeric")
        bundle = self._authority.issue_client(name, days=days, now=now)
        with self._locked_registry() as registry:
            registry["issued"].append(
                _record_json(IssuedRecord(bundle.serial, name, now.replace(microsecond=0), bundle.not_after))
            )
        return bundle

    def pkcs12(self, bundle: ClientBundle, password: str) -> bytes:
        return self._authority.pkcs12(bundle, password)

    def revoke(self, serial_or_name: str, *, now: dt.datetime) -> list[IssuedRecord]:
        """Revoke every unrevoked certificate named ``serial_or_name`` or with that serial.

        The CRL is rewritten before this returns; the admin listener watches it
        and reloads its TLS workers.
        """
        with self._locked_registry() as registry:
            records = [_record(item) for item in registry["issued"]]
            serial = _parse_serial(serial_or_name)
            hits = [
                r
                for r in records
                if r.revoked_at is None and (r.name == serial_or_name or (serial is not None and r.serial == serial))
            ]
            if not hits:
                raise CaError(f"no unrevoked certificate has the name or serial {serial_or_name}")
            revoked_at = now.replace(microsecond=0)
            chosen = {r.serial for r in hits}
            registry["issued"] = [
                _record_json(
                    IssuedRecord(r.serial, r.name, r.issued_at, r.not_after, revoked_at) if r.serial in chosen else r
                )
                for r in records
            ]
            self._write_crl(registry, now)
        return [IssuedRecord(r.serial, r.name, r.issued_at, r.not_after, revoked_at) for r in hits]

    def refresh_crl(self, *, now: dt.datetime) -> None:
        """Re-sign the CRL (``serve`` does this at start so it never goes stale)."""
        with self._locked_registry() as registry:
            self._write_crl(registry, now)

    def _write_crl(self, registry: dict[str, Any], now: dt.datetime) -> None:
        registry["crl_number"] = int(registry.get("crl_number", 0)) + 1
        revoked = [(r.serial, r.revoked_at) for r in map(_record, registry["issued"]) if r.revoked_at is not None]
        pem = self._authority.crl(revoked, number=registry["crl_number"], now=now)
        _write_replace(self.paths.crl, pem, 0o644)

    @contextlib.contextmanager
    def _locked_registry(self) -> Iterator[dict[str, Any]]:
        """The registry under an exclusive lock, written back atomically on success."""
        lock_path = self.paths.directory / ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            registry = _read_registry(self.paths.registry)
            yield registry
            _write_replace(self.paths.registry, json.dumps(registry, indent=2).encode(), 0o600)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class SealedKeyFile:
    """The sealed CA key as one more sealed value, for ``bastion keys`` to count and rewrap."""

    path: Path
    aad: bytes

    def read(self) -> bytes:
        return self.path.read_bytes()

    def replace(self, blob: bytes) -> None:
        _write_replace(self.path, blob, 0o600)


def sealed_key_file(settings: Settings) -> SealedKeyFile | None:
    """The CA's sealed key, or None when there is no CA."""
    paths = CaPaths.of(settings)
    if not paths.initialised():
        return None
    fingerprint = certificate_facts(paths.certificate.read_bytes()).sha256
    return SealedKeyFile(paths.sealed_key, _key_aad(fingerprint))


def list_issued(settings: Settings) -> list[IssuedRecord]:
    """Every issued certificate, oldest first (no master key needed)."""
    paths = CaPaths.of(settings)
    if not paths.initialised():
        raise CaError("the CA is not initialised; run `bastion ca init`")
    return [_record(item) for item in _read_registry(paths.registry)["issued"]]


def _encryptor(settings: Settings) -> Encryptor:
    return Encryptor(open_keyrings(settings).encryption)


def _key_aad(fingerprint: str) -> bytes:
    return aad_for("bastion-ca", "ca-key", fingerprint)


def _parse_serial(text: str) -> int | None:
    match = _SERIAL_RE.fullmatch(text)
    if not match:
        return None
    return int(match.group(1).replace(":", ""), 16)


def _read_registry(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {"format": _FORMAT, "crl_number": 0, "issued": []}
    except ValueError:
        raise CaError(f"{path} is corrupt") from None
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise CaError(f"{path} is not a Bastion CA registry")
    return document


def _record(item: dict[str, Any]) -> IssuedRecord:
    revoked = item.get("revoked_at")
    return IssuedRecord(
        serial=int(item["serial"], 16),
        name=str(item["name"]),
        issued_at=dt.datetime.fromisoformat(item["issued_at"]),
        not_after=dt.datetime.fromisoformat(item["not_after"]),
        revoked_at=dt.datetime.fromisoformat(revoked) if revoked else None,
    )


def _record_json(record: IssuedRecord) -> dict[str, Any]:
    return {
        "serial": record.serial_hex,
        "name": record.name,
        "issued_at": record.issued_at.isoformat(),
        "not_after": record.not_after.isoformat(),
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
    }


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _write_replace(path: Path, data: bytes, mode: int) -> None:
    """Atomic replace, so the admin listener never loads half a CRL."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
