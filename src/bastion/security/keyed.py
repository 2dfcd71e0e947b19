"""Keyed hashes of high-entropy secrets (client secrets), under the "hmac" keyring.

A client secret is 256 random bits, so it needs no slow password hash (the
issue's performance section: a grant must not cost an Argon2 run), but a
plain SHA-256 would let anyone holding a copy of the database test a guessed
or leaked secret offline. HMAC-SHA256 (RFC 2104) under a key the database
does not hold closes that: the digest is useless without the keystore.

The digest names its key (``<kid>:<hex>``), so it keeps verifying if the
"hmac" keyring ever gains a key, and the label keeps these MACs apart from
the blind indexes made with the same keyring.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from bastion.security.aead import aad_for
from bastion.security.errors import KeyringError
from bastion.security.keys import Keyring

__all__ = ["KeyedHashes", "keyed_hash", "keyed_hash_matches", "keyed_hashes_under_every_key"]

_LABEL = "bastion/keyed-hash/v1"


def _mac(keyring: Keyring, kid: str, value: str, context: str) -> str:
    key = keyring.secret(kid)
    return hmac.new(key, aad_for(_LABEL, context, value), hashlib.sha256).hexdigest()


def keyed_hash(keyring: Keyring, value: str, context: str) -> str:
    """``<kid>:<hex HMAC-SHA256>`` of ``value`` in ``context`` (e.g. "oauth.client_secret")."""
    if keyring.purpose != "hmac":
        raise ValueError("keyed_hash needs the 'hmac' keyring")
    kid = keyring.active_kid
    return f"{kid}:{_mac(keyring, kid, value, context)}"


def keyed_hash_matches(keyring: Keyring, value: str, context: str, digest: str) -> bool:
    """Whether ``digest`` (from :func:`keyed_hash`) is that of ``value``, compared in constant time."""
    if keyring.purpose != "hmac":
        raise ValueError("keyed_hash needs the 'hmac' keyring")
    kid, _, expected = digest.partition(":")
    try:
        actual = _mac(keyring, kid, value, context)
    except KeyringError:
        actual = ""  # an unknown kid matches nothing; still compare, same path
    return hmac.compare_digest(actual.encode(), expected.encode()) and bool(actual)


class KeyedHashes:
    """:func:`keyed_hash` and :func:`keyed_hash_matches` for many values of one
    context (the audit log's seals: one per event, 100,000 checked in one run).

    The digests are the same bytes; the key of each kid and the HMAC state
    after the label and context are computed once, not per value.
    """

    def __init__(self, keyring: Keyring, context: str) -> None:
        if keyring.purpose != "hmac":
            raise ValueError("keyed_hash needs the 'hmac' keyring")
        self._keyring = keyring
        self._prefix = aad_for(_LABEL, context)
        self._bases: dict[str, hmac.HMAC | None] = {}

    def _base(self, kid: str) -> hmac.HMAC | None:
        if kid not in self._bases:
            try:
                self._bases[kid] = hmac.new(self._keyring.secret(kid), self._prefix, hashlib.sha256)
            except KeyringError:
                self._bases[kid] = None
        return self._bases[kid]

    def _mac(self, base: hmac.HMAC, value: str) -> str:
        mac = base.copy()
        data = value.encode()
        mac.update(len(data).to_bytes(4, "big") + data)
        return mac.hexdigest()

    def make(self, value: str) -> str:
        return self.maker()(value)

    def maker(self) -> Callable[[str], str]:
        """``make`` under the key active now, for a batch (the active kid is looked up once)."""
        kid = self._keyring.active_kid
        base = self._base(kid)
        if base is None:
            raise KeyringError(f"no hmac key {kid}")
        return lambda value: f"{kid}:{self._mac(base, value)}"

    def under(self, kid: str) -> Callable[[str], str] | None:
        """The bare hex digest under key ``kid`` (no ``kid:`` prefix), or None if the keyring lacks it."""
        base = self._base(kid)
        if base is None:
            return None
        return lambda value: self._mac(base, value)

    def matches(self, value: str, digest: str) -> bool:
        kid, _, expected = digest.partition(":")
        base = self._base(kid)
        actual = self._mac(base, value) if base is not None else ""
        return hmac.compare_digest(actual.encode(), expected.encode()) and bool(actual)


def keyed_hashes_under_every_key(keyring: Keyring, value: str, context: str) -> dict[str, str]:
    """kid -> hex HMAC of ``value`` under every key the keyring holds (active and retired).

    For a pseudonym that must still be recognised by a copy of the keystore
    older than the active key (an old backup's, for the erasure ledger). The
    digests are :meth:`KeyedHashes.under`'s, which is what recognises them.
    """
    hashes = KeyedHashes(keyring, context)
    found: dict[str, str] = {}
    for info in keyring.kids():
        under = hashes.under(info.kid) if info.status != "revoked" else None
        if under is not None:
            found[info.kid] = under(value)
    return found
