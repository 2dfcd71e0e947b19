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

from bastion.security.aead import aad_for
from bastion.security.errors import KeyringError
from bastion.security.keys import Keyring

__all__ = ["keyed_hash", "keyed_hash_matches"]

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
