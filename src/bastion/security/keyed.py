"""Keyed digests of high-entropy secrets (OAuth client secrets), for storage.

HMAC-SHA256 (RFC 2104) under a key of the "hmac" keyring, over
``aad_for(label, context, value)``. A client secret is 256 random bits, so
unlike a password it needs no slow hash (nothing can be guessed); the key
means a leaked table alone does not even let anyone test a candidate.

Unlike :class:`BlindIndex` (a lookup key, which must be the same for every
row), each digest carries the kid of the key it was made with
(``<kid>$<hex>``), so rotating the "hmac" keyring leaves every stored digest
verifiable: it is checked with the key it names, which stays in the keyring
as a retired key. A digest under a removed key no longer verifies.
"""

from __future__ import annotations

import hashlib
import hmac

from bastion.security.aead import aad_for
from bastion.security.errors import KeyringError
from bastion.security.keys import Keyring

__all__ = ["keyed_digest", "keyed_digest_matches"]

_LABEL = "bastion/keyed-digest/v1"


def _mac(key: bytes, value: str, context: str) -> str:
    return hmac.new(key, aad_for(_LABEL, context, value), hashlib.sha256).hexdigest()


def keyed_digest(keyring: Keyring, value: str, context: str) -> str:
    """``<kid>$<hex HMAC>`` of ``value`` in ``context`` under the active "hmac" key."""
    if keyring.purpose != "hmac":
        raise ValueError("keyed_digest needs the 'hmac' keyring")
    kid = keyring.active_kid
    return f"{kid}${_mac(keyring.secret(kid), value, context)}"


def keyed_digest_matches(keyring: Keyring, value: str, context: str, stored: str) -> bool:
    """Whether ``value`` is what ``stored`` digests, compared in constant time.

    The key is the one ``stored`` names, active or retired; a malformed digest
    or an unknown kid is simply no match.
    """
    if keyring.purpose != "hmac":
        raise ValueError("keyed_digest_matches needs the 'hmac' keyring")
    kid, separator, digest = stored.partition("$")
    if not separator or not digest:
        return False
    try:
        key = keyring.secret(kid)
    except KeyringError:
        return False
    return hmac.compare_digest(_mac(key, value, context).encode(), digest.encode())
