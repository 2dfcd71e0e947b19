"""Master key and keyrings (ASVS V11.1.1, V13.3.1).

The master key never encrypts data itself. HKDF-SHA256 (RFC 5869) derives a
wrap key from it, and the wrap key encrypts the keys of each keyring at rest.
A keyring serves one purpose ("encryption", "hmac", "signing", …) and lives in
``<keys_dir>/<purpose>.json``::

    {"format": "bastion-keyring/v1", "purpose": "encryption", "keys": [
      {"kid": "…", "created_at": "2025-01-01T00:00:00+00:00",
       "status": "active", "wrapped": "<base64url(nonce || ciphertext || tag)>"}]}

Each key is wrapped with AES-256-GCM and associated data binding the purpose
and kid, so a wrapped key copied to another entry or file fails to unwrap.
Exactly one key is active (used for new work); retired keys stay to decrypt
and verify what they produced before a rotation. A revoked key (a leaked
one) stays only as a tombstone: its kid, dates and status, its material
erased, so it opens and verifies nothing and the order of keys, which the
signing schedule reads (``bastion.security.jose``), is kept.

What a key is depends on the purpose (``_MATERIAL``): 32 random bytes for
"encryption" and "hmac", an Ed25519 seed for "signing" (EdDSA) and "notary"
(signed notes: audit checkpoints, manifests), and a private
key in PKCS#8 DER for "signing-rs256" (RSA 2048) and "signing-es256" (P-256).
Material of the wrong kind for its purpose is refused at load.

A running server sees a rotation made by another process (``bastion keys
rotate``) at once: the keyring re-reads its file whenever the file has been
replaced, which costs one ``stat`` per use.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bastion.security.aead import _open, _seal, aad_for
from bastion.security.errors import InvalidCiphertext, KeyringError
from bastion.security.random import public_id, token_bytes

__all__ = ["KeyInfo", "KeyStatus", "Keyring", "MasterKey", "check_key_file_permissions"]

KeyStatus = Literal["active", "retired", "revoked"]

_MIN_MASTER_BYTES = 32
_KEY_BYTES = 32
_NONCE_BYTES = 12
_FORMAT = "bastion-keyring/v1"
_WRAP_INFO = b"bastion/keyring-wrap/v1"
_WRAP_AAD_LABEL = "bastion/keyring/v1"
_MASTER_KEY_ERROR = "master key must be at least 256 bits (32 bytes), encoded as base64 or hex"
# Purposes become file names, so they are kept to a safe alphabet.
_PURPOSE_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
# Kids travel in blob headers and JWT headers, so they stay short and URL-safe.
_KID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HEX_RE = re.compile(r"(?:[0-9a-fA-F]{2})+")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")


class MasterKey:
    """The root secret that protects every keyring. Its bytes never leave this module."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        # 256 bits keeps a 128-bit margin even against Grover-style search (ASVS V11.2.3).
        if len(key) < _MIN_MASTER_BYTES:
            raise KeyringError(_MASTER_KEY_ERROR)
        self._key = key

    @classmethod
    def from_text(cls, text: str) -> MasterKey:
        """Parse a master key given as hex or base64 (standard or URL-safe, padding optional).

        Hex is tried first: ``openssl rand -hex 32`` prints text that is also
        valid base64 and would otherwise be read as 48 bytes.
        """
        text = text.strip()
        if _HEX_RE.fullmatch(text):
            return cls(bytes.fromhex(text))
        if not _BASE64_RE.fullmatch(text):
            raise KeyringError(_MASTER_KEY_ERROR)
        body = text.rstrip("=").replace("-", "+").replace("_", "/")
        try:
            return cls(base64.b64decode(body + "=" * (-len(body) % 4), validate=True))
        except binascii.Error:
            raise KeyringError(_MASTER_KEY_ERROR) from None

    @classmethod
    def generate(cls) -> MasterKey:
        """Return a new random 256-bit master key."""
        return cls(token_bytes(_MIN_MASTER_BYTES))

    def to_text(self) -> str:
        """Return the key as unpadded URL-safe base64, for writing to a key file."""
        return base64.urlsafe_b64encode(self._key).rstrip(b"=").decode("ascii")

    def __repr__(self) -> str:
        return "MasterKey('**********')"

    def _derive(self, info: bytes) -> bytes:
        # The master key is uniformly random, so HKDF needs no salt (RFC 5869 §3.1);
        # ``info`` separates the sub-keys.
        return HKDF(algorithm=hashes.SHA256(), length=_KEY_BYTES, salt=None, info=info).derive(self._key)


@dataclass(frozen=True)
class KeyInfo:
    """Public facts about one key of a keyring (no material)."""

    kid: str
    created_at: datetime
    status: KeyStatus


class Keyring:
    """The keys of one purpose, loaded from and saved to an encrypted JSON file.

    Build one with :meth:`load_or_create` or :meth:`load`. Rotation is
    persisted before it takes effect in memory.
    """

    def __init__(self, path: Path, purpose: str, wrap_key: bytes, entries: list[tuple[KeyInfo, bytes]]) -> None:
        self._path = path
        self._purpose = purpose
        self._wrap_key = wrap_key
        self._entries = entries
        self._stamp = file_stamp(path)
        self._generation = 0

    @classmethod
    def load_or_create(cls, keys_dir: Path, purpose: str, master: MasterKey) -> Keyring:
        """Load the keyring, or create it with one active key if its file is absent.

        An existing file is never overwritten, even if another process creates
        it at the same moment.
        """
        path = _keyring_path(keys_dir, purpose)
        if path.exists():
            return cls.load(keys_dir, purpose, master)
        keyring = cls(path, purpose, master._derive(_WRAP_INFO), [_new_entry(purpose, [])])
        try:
            keys_dir.mkdir(mode=0o700, exist_ok=True)
            keyring._save(keyring._entries, replace=False)
            keyring._stamp = file_stamp(path)  # the file now holds exactly these keys
        except FileExistsError:
            return cls.load(keys_dir, purpose, master)
        except OSError as exc:
            raise KeyringError(f"{path} cannot be written ({exc.strerror})") from None
        return keyring

    @classmethod
    def load(cls, keys_dir: Path, purpose: str, master: MasterKey) -> Keyring:
        """Load and unwrap every key of the keyring; KeyringError if that is impossible."""
        path = _keyring_path(keys_dir, purpose)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise KeyringError(f"{path} does not exist") from None
        except OSError as exc:
            raise KeyringError(f"{path} cannot be read ({exc.strerror})") from None
        wrap_key = master._derive(_WRAP_INFO)
        try:
            document = json.loads(raw)
            entries = _parse_document(document, purpose, wrap_key)
        except InvalidCiphertext:
            raise KeyringError(f"{path} cannot be decrypted with this master key") from None
        except (ValueError, TypeError, KeyError):
            raise KeyringError(f"{path} is corrupt") from None
        return cls(path, purpose, wrap_key, entries)

    @property
    def purpose(self) -> str:
        """What this keyring's keys are for, e.g. "encryption"."""
        return self._purpose

    @property
    def active_kid(self) -> str:
        """The kid of the key used for new ciphertexts, MACs and signatures."""
        self._reload_if_replaced()
        return next(info.kid for info, _ in self._entries if info.status == "active")

    def kids(self) -> list[KeyInfo]:
        """Every key, oldest first."""
        return [info for info, _ in self._entries]

    def rotate(self, *, at: datetime | None = None) -> str:
        """Make a new active key, retire the previous one, persist, and return the new kid.

        ``at`` (default now) is the new key's ``created_at``, which the signing
        schedule counts from; tests pass it instead of waiting.
        """
        self._reload_if_replaced()  # never drop a key another process added
        retired = [(_retire(info), secret) for info, secret in self._entries]  # tombstones stay revoked
        entries = [*retired, _new_entry(self._purpose, retired, at)]
        try:
            self._save(entries, replace=True)
        except OSError as exc:
            raise KeyringError(f"{self._path} cannot be written ({exc.strerror})") from None
        self._use(entries, file_stamp(self._path))
        return self.active_kid

    def revoke(self, kid: str, *, at: datetime | None = None) -> str | None:
        """Erase ``kid``'s material for good, keeping its entry as a "revoked" tombstone.

        For a leaked key: whatever it protects or signed stops opening or
        verifying, here at once and in other processes when they next look
        at the file. The active key is first replaced by a new one, in the
        same write (created ``at``, default now); the new kid is returned
        then, else None.
        """
        self._reload_if_replaced()  # never drop a key another process added
        found = [info for info, _ in self._entries if info.kid == kid]
        if not found:
            raise KeyringError(f"{self._path} has no key {kid}")
        if found[0].status == "revoked":
            raise KeyringError(f"{kid} is already revoked")
        entries = [
            (KeyInfo(kid=info.kid, created_at=info.created_at, status="revoked"), b"")
            if info.kid == kid
            else (info, secret)
            for info, secret in self._entries
        ]
        new_kid = None
        if found[0].status == "active":
            entries.append(_new_entry(self._purpose, entries, at))
            new_kid = entries[-1][0].kid
        try:
            self._save(entries, replace=True)
        except OSError as exc:
            raise KeyringError(f"{self._path} cannot be written ({exc.strerror})") from None
        self._use(entries, file_stamp(self._path))
        return new_kid

    def remove(self, kid: str) -> None:
        """Delete a retired key for good: whatever it still protects stops opening.

        The caller first makes sure nothing depends on it (``bastion keys
        remove`` counts the values still under it). The active key is never
        removed: rotate first.
        """
        self._reload_if_replaced()  # never drop a key another process added
        found = [info for info, _ in self._entries if info.kid == kid]
        if not found:
            raise KeyringError(f"{self._path} has no key {kid}")
        if found[0].status == "active":
            raise KeyringError(f"{kid} is the active {self._purpose} key; rotate first")
        entries = [(info, secret) for info, secret in self._entries if info.kid != kid]
        try:
            self._save(entries, replace=True)
        except OSError as exc:
            raise KeyringError(f"{self._path} cannot be written ({exc.strerror})") from None
        self._use(entries, file_stamp(self._path))

    @property
    def generation(self) -> int:
        """A number that changes whenever this keyring's keys change (rotation,
        removal, or a reload of a file another process replaced): whatever a
        caller derived from the keys (parsed keys, verified tokens) is stale
        once it differs from the value seen when deriving."""
        return self._generation

    def refresh(self) -> None:
        """Pick up a keyring file another process replaced (``bastion keys rotate|remove``)."""
        self._reload_if_replaced()

    def _use(self, entries: list[tuple[KeyInfo, bytes]], stamp: tuple[int, int, int] | None) -> None:
        self._entries = entries
        self._stamp = stamp
        self._generation += 1

    def _reload_if_replaced(self) -> bool:
        """Re-read the file if another process replaced it since we read it; True if reloaded.

        Rotation replaces the file by rename, so a new inode or mtime means a
        new version. A file that cannot be read or parsed now keeps the keys
        we have: refusing service over a transient read error would be worse.
        """
        stamp = file_stamp(self._path)
        if stamp == self._stamp:
            return False
        try:
            entries = _parse_document(json.loads(self._path.read_bytes()), self._purpose, self._wrap_key)
        except (OSError, InvalidCiphertext, ValueError, TypeError, KeyError):
            return False
        self._use(entries, stamp)
        return True

    def secret(self, kid: str) -> bytes:
        """Return the key material of ``kid``; KeyringError if the keyring has no such key.

        For "signing" and "notary" this is a raw Ed25519 private key (32-byte
        seed, RFC 8032 §5.1.5); for "signing-rs256" and "signing-es256" a PKCS#8 DER
        private key (RFC 5958); for every other purpose, 32 random bytes.
        """
        for _ in range(2):
            for info, secret in self._entries:
                if info.kid == kid and info.status != "revoked":
                    return secret
            # Perhaps another process rotated: look again after a reload.
            if not self._reload_if_replaced():
                break
        # The kid often comes from an attacker (a token header), so it is not echoed.
        raise KeyringError(f"{self._path} has no key with that id")

    def _save(self, entries: list[tuple[KeyInfo, bytes]], *, replace: bool) -> None:
        """Write the keyring atomically: temp file, fsync, then rename or link.

        ``replace=False`` links the temp file into place, which, unlike a
        rename, fails if the target already exists.
        """
        document = {
            "format": _FORMAT,
            "purpose": self._purpose,
            "keys": [self._wrap(info, secret) for info, secret in entries],
        }
        # mkstemp creates the file with mode 0600, so the key file is never readable by others.
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=f".{self._purpose}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(json.dumps(document, indent=2).encode())
                file.flush()
                os.fsync(file.fileno())
            if replace:
                os.replace(tmp, self._path)
            else:
                os.link(tmp, self._path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        # Make the new directory entry durable too, not just the file's bytes.
        dir_fd = os.open(self._path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _wrap(self, info: KeyInfo, secret: bytes) -> dict[str, str]:
        nonce = token_bytes(_NONCE_BYTES)
        sealed = _seal(self._wrap_key, nonce, secret, _wrap_aad(self._purpose, info.kid))
        return {
            "kid": info.kid,
            "created_at": info.created_at.isoformat(),
            "status": info.status,
            "wrapped": base64.urlsafe_b64encode(nonce + sealed).decode("ascii"),
        }


def check_key_file_permissions(path: Path) -> str | None:
    """Return a one-line problem if ``path`` is open to group or others, else None."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        return f"{path} cannot be checked ({exc.strerror})"
    if mode & 0o077:
        return f"{path} is accessible by group or others (mode {mode:04o}); run: chmod 600 {path}"
    return None


FileStamp = tuple[int, int, int] | None  # (inode, mtime_ns, size); None when absent


def file_stamp(path: Path) -> FileStamp:
    """What tells a replaced or edited file from the one seen before (the keyrings, the rotation's file watch)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _keyring_path(keys_dir: Path, purpose: str) -> Path:
    if not _PURPOSE_RE.fullmatch(purpose):
        raise ValueError(f"invalid keyring purpose {purpose!r}")
    return keys_dir / f"{purpose}.json"


def _wrap_aad(purpose: str, kid: str) -> bytes:
    return aad_for(_WRAP_AAD_LABEL, purpose, kid)


def _new_entry(
    purpose: str, existing: list[tuple[KeyInfo, bytes]], at: datetime | None = None
) -> tuple[KeyInfo, bytes]:
    taken = {info.kid for info, _ in existing}
    kid = public_id(8)
    while kid in taken:
        kid = public_id(8)
    secret = _material(purpose).generate()
    created_at = (at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    return KeyInfo(kid=kid, created_at=created_at, status="active"), secret


def _retire(info: KeyInfo) -> KeyInfo:
    if info.status == "revoked":
        return info
    return KeyInfo(kid=info.kid, created_at=info.created_at, status="retired")


def _parse_document(document: Any, purpose: str, wrap_key: bytes) -> list[tuple[KeyInfo, bytes]]:
    """Validate a keyring document and unwrap its keys.

    Raises ValueError, TypeError or KeyError for a malformed document and
    InvalidCiphertext when a key does not unwrap (wrong master key or tampering).
    """
    if document["format"] != _FORMAT or document["purpose"] != purpose:
        raise ValueError("not a keyring of this purpose")
    entries = []
    for item in document["keys"]:
        status = item["status"]
        if status not in ("active", "retired", "revoked"):
            raise ValueError("unknown key status")
        created_at = datetime.fromisoformat(item["created_at"])
        if created_at.utcoffset() is None:
            raise ValueError("created_at has no time zone")
        kid = item["kid"]
        if not isinstance(kid, str) or not _KID_RE.fullmatch(kid):
            raise ValueError("malformed kid")
        wrapped = base64.urlsafe_b64decode(item["wrapped"])
        secret = _open(wrap_key, wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], _wrap_aad(purpose, kid))
        if status == "revoked":
            if secret:
                raise ValueError("a revoked key keeps no material")
        else:
            _material(purpose).check(secret)
        entries.append((KeyInfo(kid=kid, created_at=created_at, status=status), secret))
    kids = [info.kid for info, _ in entries]
    if len(set(kids)) != len(kids) or [info.status for info, _ in entries].count("active") != 1:
        raise ValueError("keyring needs unique kids and exactly one active key")
    return entries


@dataclass(frozen=True)
class _Material:
    """How keys of one purpose are made and what their stored bytes must be."""

    generate: Callable[[], bytes]
    check: Callable[[bytes], None]  # ValueError if the bytes are not such a key


def _random_bytes() -> bytes:
    return token_bytes(_KEY_BYTES)


def _check_random_bytes(secret: bytes) -> None:
    if len(secret) != _KEY_BYTES:
        raise ValueError("key material has the wrong length")


def _pkcs8(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _check_rsa(secret: bytes) -> None:
    key = serialization.load_der_private_key(secret, password=None)
    # RFC 7518 §3.3: 2048 bits at least.
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < _RSA_BITS:
        raise ValueError("not an RSA key of 2048 bits or more")


def _check_p256(secret: bytes) -> None:
    key = serialization.load_der_private_key(secret, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not a P-256 key")


_RSA_BITS = 2048
_RANDOM = _Material(_random_bytes, _check_random_bytes)
_ED25519 = _Material(lambda: Ed25519PrivateKey.generate().private_bytes_raw(), _check_random_bytes)
_MATERIAL: dict[str, _Material] = {
    "signing": _ED25519,
    # Signs notes: audit checkpoints, backup manifests (bastion.security.notes).
    "notary": _ED25519,
    # 65537 is the only public exponent worth using (RFC 8017 §A.1.1 leaves it open; everyone uses F4).
    "signing-rs256": _Material(
        lambda: _pkcs8(rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)), _check_rsa
    ),
    "signing-es256": _Material(lambda: _pkcs8(ec.generate_private_key(ec.SECP256R1())), _check_p256),
}


def _material(purpose: str) -> _Material:
    return _MATERIAL.get(purpose, _RANDOM)
