"""Tests for bastion.security.random."""

from __future__ import annotations

import base64
import hashlib

import pytest

from bastion.security import constant_time_equals, hash_token, public_id, token_bytes, token_urlsafe


def test_v11_5_1_tokens_carry_at_least_256_bits_by_default_and_never_repeat() -> None:
    """ASVS V11.5.1: default tokens are 32 CSPRNG bytes (256 bits) and unique."""
    tokens = {token_urlsafe() for _ in range(1000)}
    assert len(tokens) == 1000
    for token in tokens:
        assert len(base64.urlsafe_b64decode(token + "=")) == 32
        assert "=" not in token
    assert len(token_bytes()) == 32
    assert len(token_bytes(16)) == 16
    assert token_bytes(32) != token_bytes(32)


def test_v11_5_1_token_length_follows_the_requested_bytes() -> None:
    """ASVS V11.5.1: callers asking for more entropy get it."""
    assert len(base64.urlsafe_b64decode(token_urlsafe(48))) == 48


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("secret", "secret", True),
        ("secret", "secreT", False),
        ("secret", "secret2", False),
        (b"secret", "secret", True),
        ("pässwörd", "pässwörd".encode(), True),
        ("pässwörd", "passwörd", False),
        ("", "", True),
    ],
)
def test_v11_2_4_constant_time_equals(a: str | bytes, b: str | bytes, expected: bool) -> None:
    """ASVS V11.2.4: comparison via hmac.compare_digest, also for non-ASCII text."""
    assert constant_time_equals(a, b) is expected


def test_v11_4_1_hash_token_is_sha256_hex() -> None:
    """ASVS V11.4.1: stored tokens use an approved hash (SHA-256, FIPS 180-4 vector "abc")."""
    assert hash_token("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    token = token_urlsafe()
    assert hash_token(token) == hashlib.sha256(token.encode()).hexdigest()
    assert hash_token(token) != hash_token(token_urlsafe())


def test_public_ids_never_look_like_a_command_line_option(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key or client id starting with "-" is read as an option by `bastion keys revoke signing KID`
    (it failed CI once, one kid in 64): ids are drawn again until they do not."""
    import bastion.security.random as random_module

    drawn = iter(["-leading", "--double", "fine-id_"])
    monkeypatch.setattr(random_module.secrets, "token_urlsafe", lambda nbytes: next(drawn))
    assert public_id(8) == "fine-id_"
    monkeypatch.undo()
    ids = {public_id(8) for _ in range(2000)}
    assert len(ids) == 2000
    assert not any(value.startswith("-") for value in ids)


def test_digest_is_sha256_of_the_concatenation() -> None:
    """FIPS 180-4 "abc" vector, split or whole."""
    from bastion.security import DIGEST_SIZE, digest

    abc = bytes.fromhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    assert digest(b"abc") == digest(b"a", b"bc") == abc
    assert len(digest()) == DIGEST_SIZE
