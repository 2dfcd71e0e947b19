"""What the audit log needs of the notary keyring: sign a checkpoint note with
the active Ed25519 key, and the note verifier keys (``vkey``) of the active
and retired keys, so checkpoints signed before a rotation keep verifying.

Checkpoints are signed under the log's origin (``audit.origin``): the key
name in every note and vkey is that origin, as C2SP tlog-checkpoint logs do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from bastion.security.notes import Notary as RingNotary

if TYPE_CHECKING:
    from bastion.secrets import Keyrings


class Notary(Protocol):
    def sign(self, body: str) -> tuple[str, str]:
        """``(key id, signed note)`` of the note ``body`` under the active notary key."""

    def vkeys(self) -> list[str]:
        """The C2SP note verifier keys of every notary key still kept (active and retired)."""


class KeystoreNotary:
    """The keystore's notary ring, signing under one name (the log's origin)."""

    def __init__(self, keys: Keyrings, name: str) -> None:
        self._keys = keys
        self.name = name

    def _ring(self) -> RingNotary:
        # Looked up when first used, not when the services are built.
        return self._keys.notary_signer()

    def sign(self, body: str) -> tuple[str, str]:
        signed = self._ring().sign(body, self.name)
        return signed.kid, signed.note

    def vkeys(self) -> list[str]:
        return self._ring().vkeys(self.name)


def notary_of(keys: Keyrings, name: str) -> Notary:
    return KeystoreNotary(keys, name)
