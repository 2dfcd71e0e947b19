"""Tests for bastion.security.aead: AES-256-GCM envelopes and blind indexes."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.security import (
    BlindIndex,
    Encryptor,
    InvalidCiphertext,
    Keyring,
    MasterKey,
    aad_for,
    keyed_hash,
    keyed_hash_matches,
)
from bastion.security.aead import _open, _seal

# McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", Appendix B,
# the AES-256 test cases (also in the NIST GCM validation suite).
_K16 = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"
_P16 = (
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
)
GCM_VECTORS = [
    pytest.param(("00" * 32, "00" * 12, "", "", "", "530f8afbc74536b9a963b4f1c4cb738b"), id="test-case-13"),
    pytest.param(
        (
            "00" * 32,
            "00" * 12,
            "00" * 16,
            "",
            "cea7403d4d606b6e074ec5d3baf39d18",
            "d0d1c8a799996bf0265b98b5d48ab919",
        ),
        id="test-case-14",
    ),
    pytest.param(
        (
            _K16,
            "cafebabefacedbaddecaf888",
            _P16,
            "feedfacedeadbeeffeedfacedeadbeefabaddad2",
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
            "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
            "76fc6ece0f4e1768cddf8853bb2d551b",
        ),
        id="test-case-16-with-aad",
    ),
]


@pytest.mark.parametrize("vector", GCM_VECTORS)
def test_v11_3_2_aes256_gcm_published_vectors(vector: tuple[str, ...]) -> None:
    """ASVS V11.3.2, V11.2.1: the seal/open primitives Encryptor and Keyring use
    reproduce the published AES-256-GCM vectors (key, IV, P, A -> C, T)."""
    key, iv, plaintext, aad, ciphertext, tag = (bytes.fromhex(part) for part in vector)
    sealed = _seal(key, iv, plaintext, aad)
    assert sealed == ciphertext + tag
    assert _open(key, iv, sealed, aad) == plaintext
    forged = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(InvalidCiphertext):
        _open(key, iv, forged, aad)


@pytest.fixture
def encryptor(encryption_keyring: Keyring) -> Encryptor:
    return Encryptor(encryption_keyring)


AAD = aad_for("users", "42", "email")


def test_v11_3_3_round_trip(encryptor: Encryptor) -> None:
    """ASVS V11.3.3: what is encrypted with an AAD decrypts with the same AAD."""
    for plaintext in (b"", b"alice@example.com", bytes(range(256)) * 40):
        assert encryptor.decrypt(encryptor.encrypt(plaintext, AAD), AAD) == plaintext


def test_v11_3_2_blob_follows_the_documented_format(encryptor: Encryptor, encryption_keyring: Keyring) -> None:
    """ASVS V11.3.2: version || kid length || kid || 12-byte nonce || ciphertext || tag,
    and the header is part of the GCM associated data; checked with an independent AESGCM."""
    blob = encryptor.encrypt(b"secret", AAD)
    kid = encryption_keyring.active_kid
    assert blob[0] == 0x01
    assert blob[1] == len(kid)
    assert blob[2 : 2 + len(kid)] == kid.encode()
    header = blob[: 2 + len(kid) + 12]
    nonce = header[-12:]
    sealed = blob[len(header) :]
    assert len(sealed) == len(b"secret") + 16
    key = encryption_keyring.secret(kid)
    assert AESGCM(key).decrypt(nonce, sealed, header + AAD) == b"secret"
    assert encryptor.key_id(blob) == kid


def test_v11_3_4_every_encryption_uses_a_fresh_nonce(encryptor: Encryptor, encryption_keyring: Keyring) -> None:
    """ASVS V11.3.4: nonces are random per message, so equal plaintexts never repeat."""
    header_len = 2 + len(encryption_keyring.active_kid) + 12
    blobs = [encryptor.encrypt(b"same", AAD) for _ in range(500)]
    assert len({blob[header_len - 12 : header_len] for blob in blobs}) == 500
    assert len(set(blobs)) == 500


def _flip(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 0x01]) + blob[index + 1 :]


@pytest.mark.parametrize(
    "where",
    ["version", "kid-length", "kid", "nonce-first", "nonce-last", "ciphertext", "tag-first", "tag-last"],
)
def test_v11_3_3_any_flipped_bit_is_invalid_ciphertext(
    encryptor: Encryptor, encryption_keyring: Keyring, where: str
) -> None:
    """ASVS V11.3.3: header, nonce, ciphertext and tag are all authenticated."""
    blob = encryptor.encrypt(b"attack at dawn", AAD)
    kid_end = 2 + len(encryption_keyring.active_kid)
    index = {
        "version": 0,
        "kid-length": 1,
        "kid": 2,
        "nonce-first": kid_end,
        "nonce-last": kid_end + 11,
        "ciphertext": kid_end + 12,
        "tag-first": len(blob) - 16,
        "tag-last": len(blob) - 1,
    }[where]
    with pytest.raises(InvalidCiphertext):
        encryptor.decrypt(_flip(blob, index), AAD)


@pytest.mark.parametrize(
    "other_aad",
    [
        b"",
        aad_for("users", "43", "email"),
        aad_for("users", "42", "phone"),
        aad_for("users", "4", "2email"),
        AAD + b"\x00",
    ],
    ids=["empty", "other-row", "other-column", "shifted-boundary", "extended"],
)
def test_v11_3_3_ciphertext_moved_to_another_aad_fails(encryptor: Encryptor, other_aad: bytes) -> None:
    """ASVS V11.3.3: a blob copied to another row or column does not decrypt."""
    blob = encryptor.encrypt(b"alice@example.com", AAD)
    with pytest.raises(InvalidCiphertext):
        encryptor.decrypt(blob, other_aad)


def test_v11_2_5_truncated_and_malformed_blobs_are_invalid(encryptor: Encryptor) -> None:
    """ASVS V11.2.5: every prefix of a blob, and a malformed header, is
    InvalidCiphertext (never IndexError or UnicodeDecodeError)."""
    blob = encryptor.encrypt(b"x", AAD)
    for length in range(len(blob)):
        with pytest.raises(InvalidCiphertext):
            encryptor.decrypt(blob[:length], AAD)
    malformed = {
        "too-short-for-a-tag": blob[:-2],
        "unknown-version": b"\x02" + blob[1:],
        "kid-longer-than-blob": b"\x01\xff" + blob[2:],
        "non-ascii-kid": blob[:2] + b"\xff" * blob[1] + blob[2 + blob[1] :],
    }
    for bad in malformed.values():
        with pytest.raises(InvalidCiphertext):
            encryptor.key_id(bad)
        with pytest.raises(InvalidCiphertext):
            encryptor.decrypt(bad, AAD)


def test_v11_2_5_unknown_kid_is_invalid_ciphertext(
    encryptor: Encryptor, encryption_keyring: Keyring, keys_dir: Path
) -> None:
    """ASVS V11.2.5: a blob naming a kid the keyring lacks, or from another keyring,
    raises the same InvalidCiphertext."""
    blob = encryptor.encrypt(b"x", AAD)
    kid = encryption_keyring.active_kid
    renamed = blob.replace(kid.encode(), b"A" * len(kid), 1)
    foreign = Encryptor(Keyring.load_or_create(keys_dir / "other", "encryption", MasterKey.generate()))
    failures = []
    for bad in (renamed, foreign.encrypt(b"x", AAD)):
        with pytest.raises(InvalidCiphertext) as caught:
            encryptor.decrypt(bad, AAD)
        failures.append(caught)
    with pytest.raises(InvalidCiphertext) as tampered:
        encryptor.decrypt(_flip(blob, len(blob) - 1), AAD)
    # Unknown key and forged tag are indistinguishable to the caller.
    assert {str(c.value) for c in failures} == {str(tampered.value)}


def test_v11_2_2_rewrap_moves_old_blobs_to_the_active_key(encryptor: Encryptor, encryption_keyring: Keyring) -> None:
    """ASVS V11.2.2: after rotation, rewrap re-encrypts under the new key without a flag day."""
    old_kid = encryption_keyring.active_kid
    old_blob = encryptor.encrypt(b"payload", AAD)
    new_kid = encryption_keyring.rotate()

    rewrapped = encryptor.rewrap(old_blob, AAD)

    assert encryptor.key_id(old_blob) == old_kid
    assert encryptor.key_id(rewrapped) == new_kid
    assert encryptor.decrypt(rewrapped, AAD) == b"payload"
    assert encryptor.rewrap(rewrapped, AAD) is rewrapped
    with pytest.raises(InvalidCiphertext):
        encryptor.rewrap(_flip(rewrapped, len(rewrapped) - 1), AAD)
    with pytest.raises(InvalidCiphertext):
        encryptor.rewrap(old_blob, aad_for("other"))


def test_v11_1_2_encryptor_refuses_keys_of_another_purpose(signing_keyring: Keyring, hmac_keyring: Keyring) -> None:
    """ASVS V11.1.2: keys are used only for their documented purpose."""
    for keyring in (signing_keyring, hmac_keyring):
        with pytest.raises(ValueError, match="encryption"):
            Encryptor(keyring)


def test_aad_for_is_unambiguous() -> None:
    """Length prefixes keep different part lists apart even when they concatenate equally."""
    assert aad_for("ab", "c") != aad_for("a", "bc")
    assert aad_for("a") != aad_for("a", "")
    assert aad_for() != aad_for("")
    assert aad_for("é") == b"\x00\x00\x00\x02" + "é".encode()


def test_blind_index_is_a_deterministic_keyed_hash(hmac_keyring: Keyring, keys_dir: Path) -> None:
    """ASVS V11.4.1, V11.4.3: HMAC-SHA256 (256-bit output) keyed by the hmac keyring:
    equal inputs match, context and key separate them."""
    index = BlindIndex(hmac_keyring)
    digest = index.digest("alice@example.com", "users.email")
    assert digest == index.digest("alice@example.com", "users.email")
    assert len(digest) == 64
    int(digest, 16)
    assert digest != index.digest("bob@example.com", "users.email")
    assert digest != index.digest("alice@example.com", "users.phone")
    assert index.digest("c", "ab") != index.digest("bc", "a")
    other = BlindIndex(Keyring.load_or_create(keys_dir / "other", "hmac", MasterKey.generate()))
    assert other.digest("alice@example.com", "users.email") != digest


def test_v11_1_2_blind_index_refuses_keys_of_another_purpose(encryption_keyring: Keyring) -> None:
    """ASVS V11.1.2: the blind index only accepts the hmac keyring."""
    with pytest.raises(ValueError, match="hmac"):
        BlindIndex(encryption_keyring)


def test_v11_4_1_keyed_hash_of_a_client_secret(hmac_keyring: Keyring, encryption_keyring: Keyring) -> None:
    """ASVS V11.4.1: a high-entropy secret is stored as an HMAC under the "hmac" keyring
    (useless without the keystore), names its kid, depends on the context, and only
    the exact value matches; a forged kid or digest matches nothing."""
    digest = keyed_hash(hmac_keyring, "s3cret-value", "oauth.client_secret")
    kid, _, hexdigest = digest.partition(":")
    assert kid == hmac_keyring.active_kid
    assert len(hexdigest) == 64
    assert keyed_hash_matches(hmac_keyring, "s3cret-value", "oauth.client_secret", digest)
    assert not keyed_hash_matches(hmac_keyring, "s3cret-valuf", "oauth.client_secret", digest)
    assert not keyed_hash_matches(hmac_keyring, "s3cret-value", "other.context", digest)
    assert keyed_hash(hmac_keyring, "s3cret-value", "other.context") != digest
    assert not keyed_hash_matches(hmac_keyring, "s3cret-value", "oauth.client_secret", f"nokid:{hexdigest}")
    assert not keyed_hash_matches(hmac_keyring, "s3cret-value", "oauth.client_secret", f"{kid}:")
    assert not keyed_hash_matches(hmac_keyring, "s3cret-value", "oauth.client_secret", "")
    assert BlindIndex(hmac_keyring).digest("s3cret-value", "oauth.client_secret") != hexdigest  # own label
    with pytest.raises(ValueError, match="hmac"):
        keyed_hash(encryption_keyring, "x", "c")
