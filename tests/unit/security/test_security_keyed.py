"""Keyed digests of client secrets: verifiable across an "hmac" keyring rotation, not after a removal."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.security import Keyring, MasterKey
from bastion.security.keyed import KeyedHashes, keyed_hash, keyed_hash_matches, keyed_hashes_under_every_key


@pytest.fixture
def hmac_keyring(tmp_path: Path) -> Keyring:
    return Keyring.load_or_create(tmp_path, "hmac", MasterKey.generate())


def test_digest_names_its_key_and_survives_rotation(hmac_keyring: Keyring) -> None:
    stored = keyed_hash(hmac_keyring, "s3cret", "ctx")
    assert stored.startswith(hmac_keyring.active_kid + ":")
    assert "s3cret" not in stored
    old = hmac_keyring.active_kid
    hmac_keyring.rotate()
    assert keyed_hash_matches(hmac_keyring, "s3cret", "ctx", stored)
    assert not keyed_hash_matches(hmac_keyring, "s3cret", "other-ctx", stored)
    assert not keyed_hash_matches(hmac_keyring, "s3cret!", "ctx", stored)
    assert keyed_hash(hmac_keyring, "s3cret", "ctx") != stored  # new digests use the new key
    hmac_keyring.remove(old)
    assert not keyed_hash_matches(hmac_keyring, "s3cret", "ctx", stored)


@pytest.mark.parametrize("stored", ["", "no-separator", "kid$00", "unknownkid:00", ":00", "kid:"])
def test_malformed_digests_match_nothing(hmac_keyring: Keyring, stored: str) -> None:
    assert not keyed_hash_matches(hmac_keyring, "s3cret", "ctx", stored)


def test_only_the_hmac_keyring(tmp_path: Path) -> None:
    encryption = Keyring.load_or_create(tmp_path, "encryption", MasterKey.generate())
    with pytest.raises(ValueError, match="hmac"):
        keyed_hash(encryption, "s3cret", "ctx")


def test_the_ledgers_digests_are_those_the_restore_recomputes(hmac_keyring: Keyring) -> None:
    """The erasure ledger writes ``keyed_hashes_under_every_key`` and a restore matches with
    ``KeyedHashes.under``: one implementation, the same digest under every kid, and the
    active one is ``keyed_hash``'s."""
    first = hmac_keyring.active_kid
    hmac_keyring.rotate()
    digests = keyed_hashes_under_every_key(hmac_keyring, "user-id", "ctx")
    assert set(digests) == {first, hmac_keyring.active_kid}
    hashes = KeyedHashes(hmac_keyring, "ctx")
    for kid, digest in digests.items():
        under = hashes.under(kid)
        assert under is not None
        assert under("user-id") == digest
    assert keyed_hash(hmac_keyring, "user-id", "ctx") == f"{hmac_keyring.active_kid}:{digests[hmac_keyring.active_kid]}"
