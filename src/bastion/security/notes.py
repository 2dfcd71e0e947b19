"""Signed notes (C2SP signed-note v1.0.0) and transparency-log checkpoints (C2SP tlog-checkpoint).

A *note* is UTF-8 text signed by one or more keys, the format of Go's
checksum database (golang.org/x/mod/sumdb/note) and of every tlog witness::

    example.com/behind-the-sofa          <- text: lines ending in "\\n"
    20852163
    CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=
                                         <- one blank line
    — example.com/behind-the-sofa Az3grlgtzPIC…   <- "— <key name> base64(key ID || signature)"

The spec's rules enforced here, quoted:

- "Signed notes MUST be valid UTF-8 and MUST NOT contain any ASCII control
  characters (those below U+0020) other than newline."
- "The note text includes the final newline but not the separating blank
  line. … the text is separated from the signatures by the last empty line."
- "Key names MUST be non-empty and MUST NOT contain any Unicode spaces or plus."
- "key ID = SHA-256(key name || 0x0A || 0x01 || 32-byte Ed25519 public key)[:4]"
  (signature type 0x01, Ed25519 per RFC 8032 over the note text).
- "Verifiers MUST ignore signatures from unknown keys, even if they share a
  name or ID (but not both) with a known key. If the key name and ID match a
  known key, verifiers MUST verify the signature. If a signature from a known
  key fails to verify, clients SHOULD reject the whole note. If no signature
  from a known key verifies successfully, clients MUST reject the note."
  All three rejections happen here, and a note with more than 100 signature
  lines is refused (the spec asks for a limit of at least 16; Go's is 100).

A verifier key (*vkey*) is written ``<name>+<hex key ID>+<base64(0x01 || public key)>``,
Go's ``note.NewVerifier`` format, which is what ``bastion keys export-public``
publishes.

A *checkpoint* is a note whose text is ``<origin>\\n<tree size>\\n<base64 root>\\n``
plus optional non-empty extension lines; the log's key name "SHOULD match
the origin line".

Every failure of :func:`open_note` / :func:`verify_note` /
:func:`parse_checkpoint` raises the one :class:`InvalidNote`, whatever went
wrong (malformed, unknown key, bad signature): like ``InvalidToken``, the
type tells an attacker nothing. Checked against the Go implementation's test
vectors (tests/unit/security/test_security_notes.py).

:class:`Notary` binds this to the keystore's "notary" keyring (Ed25519 seeds):
it signs with the active key and lists the public keys of the active and
retired ones, so checkpoints signed before a rotation keep verifying.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bastion.security.errors import SecurityError
from bastion.security.keys import Keyring, KeyStatus

__all__ = [
    "NOTARY_PURPOSE",
    "InvalidNote",
    "Notarized",
    "Notary",
    "NotaryKey",
    "NoteKey",
    "OpenedNote",
    "checkpoint_body",
    "open_note",
    "parse_checkpoint",
    "sign_note",
    "verify_note",
]

NOTARY_PURPOSE = "notary"
_ED25519 = b"\x01"  # signature type identifier byte (C2SP signed-note "Signature types")
_SIG_PREFIX = "\u2014 "  # em dash, space
_MAX_SIGNATURES = 100
_KEY_BYTES = 32
_SIG_BYTES = 64
_HASH_BYTES = 4
_ROOT_BYTES = 32
_MAX_NOTE_CHARS = 1 << 20  # a checkpoint is ~200 bytes; a manifest a few kB
_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,19}")
_HEX8_RE = re.compile(r"[0-9a-f]{8}")
_B64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class InvalidNote(SecurityError):
    """A note or checkpoint is not acceptable: malformed, unsigned by a known key, or forged."""


def _valid_name(name: str) -> bool:
    # str.isspace covers Go's unicode.IsSpace (and a few control characters,
    # which a note may not hold anyway).
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def _b64decode(text: str) -> bytes:
    """Strict standard base64 (RFC 4648 §4): padded, no other characters."""
    if not _B64_RE.fullmatch(text) or len(text) % 4:
        raise InvalidNote
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise InvalidNote from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class NoteKey:
    """An Ed25519 note verifier: a key name and a raw 32-byte public key."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        if not _valid_name(self.name):
            raise ValueError("a note key name is non-empty, without spaces or '+'")
        if len(self.public_key) != _KEY_BYTES:
            raise ValueError("an Ed25519 public key is 32 bytes")

    @classmethod
    def from_private(cls, name: str, private_key: bytes) -> NoteKey:
        """The verifier of the Ed25519 private key (32-byte seed, RFC 8032 §5.1.5)."""
        return cls(name, _public_bytes(private_key))

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteKey:
        """Parse ``<name>+<hex key ID>+<base64(0x01 || key)>``; InvalidNote if malformed or inconsistent."""
        name, _, rest = vkey.partition("+")
        hash_hex, _, key_b64 = rest.partition("+")
        if not _valid_name(name) or not _HEX8_RE.fullmatch(hash_hex):
            raise InvalidNote
        encoded = _b64decode(key_b64)
        if len(encoded) != 1 + _KEY_BYTES or encoded[:1] != _ED25519:
            raise InvalidNote
        key = cls(name, encoded[1:])
        if key.key_hash.hex() != hash_hex:
            raise InvalidNote
        return key

    @property
    def key_hash(self) -> bytes:
        """The 4-byte key ID: SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
        return hashlib.sha256(self.name.encode() + b"\n" + _ED25519 + self.public_key).digest()[:_HASH_BYTES]

    def vkey(self) -> str:
        """The verifier key text, as Go's ``note.NewVerifier`` reads it."""
        return f"{self.name}+{self.key_hash.hex()}+{_b64(_ED25519 + self.public_key)}"

    def _verify(self, text: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, text)
        except (InvalidSignature, ValueError):
            return False
        return True


def _private_key(private_key: bytes) -> Ed25519PrivateKey:
    if len(private_key) != _KEY_BYTES:
        raise ValueError("an Ed25519 private key is a 32-byte seed")
    return Ed25519PrivateKey.from_private_bytes(private_key)


def _public_bytes(private_key: bytes) -> bytes:
    return _private_key(private_key).public_key().public_bytes_raw()


def _check_text(text: str) -> None:
    """The note text rules: non-empty, ends in a newline, no control character but newline."""
    if not text.endswith("\n") or len(text) > _MAX_NOTE_CHARS:
        raise InvalidNote
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise InvalidNote
    try:
        text.encode("utf-8")  # lone surrogates are not UTF-8
    except UnicodeEncodeError:
        raise InvalidNote from None


def sign_note(body: str, name: str, private_key: bytes) -> str:
    """Sign ``body`` (the note text, ending in a newline) as key ``name``: ``body + "\\n— name sig\\n"``.

    ``private_key`` is a raw Ed25519 seed (32 bytes). ValueError for a body or
    name the format cannot carry: this is our own input, a bug if wrong.
    """
    try:
        _check_text(body)
    except InvalidNote:
        raise ValueError("a note body is text ending in a newline, without control characters") from None
    key = _private_key(private_key)
    verifier = NoteKey(name, key.public_key().public_bytes_raw())
    signature = key.sign(body.encode("utf-8"))
    return f"{body}\n{_SIG_PREFIX}{name} {_b64(verifier.key_hash + signature)}\n"


@dataclass(frozen=True)
class OpenedNote:
    """A verified note: its text and the known keys whose signatures checked."""

    body: str
    signers: tuple[NoteKey, ...]


def _known_keys(vkeys: Iterable[str | NoteKey]) -> dict[tuple[str, bytes], NoteKey]:
    keys = (v if isinstance(v, NoteKey) else NoteKey.from_vkey(v) for v in vkeys)
    try:
        return {(k.name, k.key_hash): k for k in keys}
    except ValueError:
        raise InvalidNote from None


def _signature_line(line: str) -> tuple[str, bytes, bytes]:
    """``(key name, key ID, signature)`` of one "— <name> <base64>" line; InvalidNote if malformed."""
    if not line.startswith(_SIG_PREFIX):
        raise InvalidNote
    name, space, encoded = line[len(_SIG_PREFIX) :].partition(" ")
    if not space or not _valid_name(name) or not encoded:
        raise InvalidNote
    raw = _b64decode(encoded)
    if len(raw) < _HASH_BYTES + 1:
        raise InvalidNote
    return name, raw[:_HASH_BYTES], raw[_HASH_BYTES:]


def open_note(note: str | bytes, vkeys: Iterable[str | NoteKey]) -> OpenedNote:
    """Verify ``note`` against the trusted verifier keys and return its text and signers.

    Signatures by unknown keys are ignored (another party's cosignature, a
    key rotated out of the list); a known key's bad signature, a malformed
    note or no valid known signature raise :class:`InvalidNote`. Unlike Go,
    a second signature line by the same known key is verified too (Go skips
    it): stricter, and the spec's "SHOULD reject the whole note".
    """
    known = _known_keys(vkeys)
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidNote from None
    _check_text(note)
    split = note.rfind("\n\n")
    if split < 0 or split + 2 == len(note):
        raise InvalidNote
    text, lines = note[: split + 1], note[split + 2 : -1].split("\n")
    if len(lines) > _MAX_SIGNATURES:
        raise InvalidNote
    text_bytes = text.encode("utf-8")
    signers: dict[tuple[str, bytes], NoteKey] = {}
    for line in lines:
        name, key_hash, signature = _signature_line(line)
        key = known.get((name, key_hash))
        if key is None:
            continue  # "Verifiers MUST ignore signatures from unknown keys"
        if len(signature) != _SIG_BYTES or not key._verify(text_bytes, signature):
            raise InvalidNote  # a known key's signature fails: reject the whole note
        signers[(name, key_hash)] = key
    if not signers:
        raise InvalidNote
    return OpenedNote(text, tuple(signers.values()))


def verify_note(note: str | bytes, vkeys: Iterable[str | NoteKey]) -> str:
    """The text of ``note`` if a trusted key signed it (see :func:`open_note`); else InvalidNote."""
    return open_note(note, vkeys).body


def checkpoint_body(origin: str, size: int, root: bytes, extensions: Sequence[str] = ()) -> str:
    """The tlog-checkpoint note text: ``<origin>\\n<size>\\n<base64 root>\\n`` (+ extension lines)."""
    if not origin or "\n" in origin or size < 0 or len(root) != _ROOT_BYTES:
        raise ValueError("a checkpoint needs an origin line, a size >= 0 and a 32-byte root")
    if any(not line or "\n" in line for line in extensions):
        raise ValueError("extension lines are non-empty single lines")
    body = "".join(f"{line}\n" for line in (origin, str(size), _b64(root), *extensions))
    try:
        _check_text(body)
    except InvalidNote:
        raise ValueError("a checkpoint holds no control characters") from None
    return body


def parse_checkpoint(body: str) -> tuple[str, int, bytes]:
    """``(origin, size, root)`` of a checkpoint's note text; InvalidNote if it is not one.

    Extension lines are allowed (and ignored) but must be non-empty. The size
    is "the ASCII decimal representation … with no leading zeroes".
    """
    _check_text(body)
    lines = body[:-1].split("\n")
    if len(lines) < 3 or any(not line for line in lines):
        raise InvalidNote
    origin, size_text, root_text = lines[:3]
    if not _SIZE_RE.fullmatch(size_text):
        raise InvalidNote
    root = _b64decode(root_text)
    if len(root) != _ROOT_BYTES:
        raise InvalidNote
    return origin, int(size_text), root


# --- the keystore's notary keys ------------------------------------------------


@dataclass(frozen=True)
class NotaryKey:
    """The public side of one notary key: what a verifier off the box needs."""

    kid: str
    status: KeyStatus
    created_at: datetime
    public_key: bytes  # raw Ed25519, 32 bytes

    def note_key(self, name: str) -> NoteKey:
        """This key as the verifier of notes signed under ``name``."""
        return NoteKey(name, self.public_key)

    def public_pem(self) -> str:
        """SubjectPublicKeyInfo PEM (RFC 8410), for tools that read keys that way."""
        key = Ed25519PublicKey.from_public_bytes(self.public_key)
        return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass(frozen=True)
class Notarized:
    """A signed note and the keystore kid of the key that signed it."""

    note: str
    kid: str


class Notary:
    """Signs notes (checkpoints, manifests) with the active key of the "notary" keyring.

    Key names are the caller's (a checkpoint is signed under its origin, so the
    vkey reads ``<origin>+…``); the key material never leaves this class.
    Rotation (``bastion keys rotate notary``) retires the old key, which stays
    listed by :meth:`public_keys` so what it signed keeps verifying; a revoked
    key is gone from the list.
    """

    def __init__(self, keyring: Keyring) -> None:
        """Wrap the "notary" keyring; ValueError for any other."""
        if keyring.purpose != NOTARY_PURPOSE:
            raise ValueError("Notary needs the 'notary' keyring")
        self._keyring = keyring

    @property
    def active_kid(self) -> str:
        """The kid of the key new notes are signed with."""
        return self._keyring.active_kid

    def sign(self, body: str, name: str) -> Notarized:
        """Sign ``body`` as ``name`` with the active key; the kid returned is the one used."""
        kid = self._keyring.active_kid
        return Notarized(sign_note(body, name, self._keyring.secret(kid)), kid)

    def public_keys(self) -> list[NotaryKey]:
        """The active and retired keys (oldest first), public halves only."""
        self._keyring.refresh()
        return [
            NotaryKey(info.kid, info.status, info.created_at, _public_bytes(self._keyring.secret(info.kid)))
            for info in self._keyring.kids()
            if info.status != "revoked"
        ]

    def vkeys(self, name: str) -> list[str]:
        """The verifier keys of :meth:`public_keys` under ``name``."""
        return [key.note_key(name).vkey() for key in self.public_keys()]

    def verify(self, note: str | bytes, name: str) -> str:
        """The text of ``note`` if one of our current or retired keys signed it as ``name``."""
        return verify_note(note, self.vkeys(name))
