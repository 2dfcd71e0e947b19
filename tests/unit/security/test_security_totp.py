"""Tests for bastion.security.totp: RFC 6238 vectors, window, replay, recovery codes."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from bastion.security import (
    new_recovery_codes,
    new_totp_secret,
    normalize_recovery_code,
    totp_at,
    totp_uri,
    verify_totp,
)
from bastion.security.totp import RECOVERY_ALPHABET

# RFC 6238 Appendix B: the SHA-1 seed is the ASCII string "12345678901234567890".
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
NOW = 1_700_000_000
STEP = NOW // 30

# Digits of other scripts, which str.isdigit accepts and NFKC may fold to ASCII.
ARABIC_INDIC = {ord("0") + d: 0x0660 + d for d in range(10)}
FULLWIDTH = {ord("0") + d: 0xFF10 + d for d in range(10)}


@pytest.mark.parametrize(
    ("unix_time", "rfc_code"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ],
)
def test_rfc6238_appendix_b_sha1_vectors(unix_time: int, rfc_code: str) -> None:
    """RFC 6238 Appendix B: our 6-digit codes are the last 6 digits of the 8-digit vectors."""
    code = rfc_code[-6:]
    assert totp_at(RFC_SECRET, unix_time // 30) == code
    assert verify_totp(RFC_SECRET, code, now=unix_time) == unix_time // 30


def test_v6_5_3_secrets_are_160_csprng_bits_in_base32() -> None:
    """ASVS V6.5.3: seeds are 20 random bytes (RFC 4226 §4 R6), unpadded base32."""
    secrets = {new_totp_secret() for _ in range(200)}
    assert len(secrets) == 200
    for secret in secrets:
        assert re.fullmatch(r"[A-Z2-7]{32}", secret)
        assert len(base64.b32decode(secret)) == 20
    secret = secrets.pop()
    assert verify_totp(secret, totp_at(secret, STEP), now=NOW) == STEP


def test_uri_follows_the_key_uri_format() -> None:
    secret = new_totp_secret()
    uri = totp_uri(secret, account="alice@example.com", issuer="Bastion Test")
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert unquote(parts.path) == "/Bastion Test:alice@example.com"
    assert parse_qs(parts.query) == {"secret": [secret], "issuer": ["Bastion Test"]}


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_v6_5_5_codes_of_the_adjacent_steps_are_accepted(offset: int) -> None:
    """ASVS V6.5.5 / RFC 6238 §5.2: 30 s steps, one step of drift either way."""
    code = totp_at(RFC_SECRET, STEP + offset)
    assert verify_totp(RFC_SECRET, code, now=NOW) == STEP + offset


@pytest.mark.parametrize("offset", [-2, 2, -10])
def test_v6_5_5_codes_outside_the_window_are_refused(offset: int) -> None:
    code = totp_at(RFC_SECRET, STEP + offset)
    # The test means something only if the code is not also valid inside the window.
    assert code not in {totp_at(RFC_SECRET, STEP + d) for d in (-1, 0, 1)}
    assert verify_totp(RFC_SECRET, code, now=NOW) is None


def test_v6_5_8_the_step_comes_from_the_time_the_caller_passes() -> None:
    """ASVS V6.5.8: the server's clock decides; the same code fails 90 s later."""
    code = totp_at(RFC_SECRET, STEP)
    assert verify_totp(RFC_SECRET, code, now=STEP * 30 + 29) == STEP
    assert verify_totp(RFC_SECRET, code, now=(STEP + 2) * 30) is None


def test_v6_5_1_a_code_is_usable_once() -> None:
    """ASVS V6.5.1: passing back the accepted step refuses the same code again."""
    code = totp_at(RFC_SECRET, STEP)
    accepted = verify_totp(RFC_SECRET, code, now=NOW)
    assert accepted == STEP
    assert verify_totp(RFC_SECRET, code, now=NOW, after_step=accepted) is None
    assert verify_totp(RFC_SECRET, code, now=NOW + 30, after_step=accepted) is None
    # An older code, still inside the window, is refused once a newer one was used.
    older = totp_at(RFC_SECRET, STEP - 1)
    assert verify_totp(RFC_SECRET, older, now=NOW, after_step=STEP) is None
    # The next step's code is still good.
    newer = totp_at(RFC_SECRET, STEP + 1)
    assert verify_totp(RFC_SECRET, newer, now=NOW, after_step=accepted) == STEP + 1


def test_v6_5_1_when_two_steps_share_a_code_the_later_one_is_recorded() -> None:
    """Recording the later step refuses the code for both; the earlier would leave one replay."""
    # Found by search: with the RFC secret these adjacent steps give the same code.
    assert totp_at(RFC_SECRET, 910737) == totp_at(RFC_SECRET, 910738) == "911617"
    accepted = verify_totp(RFC_SECRET, "911617", now=910737 * 30)
    assert accepted == 910738
    assert verify_totp(RFC_SECRET, "911617", now=910738 * 30, after_step=accepted) is None


def test_whitespace_a_user_types_is_ignored() -> None:
    code = totp_at(RFC_SECRET, STEP)
    assert verify_totp(RFC_SECRET, f" {code[:3]} {code[3:]}\n", now=NOW) == STEP


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda c: "", id="empty"),
        pytest.param(lambda c: "      ", id="blank"),
        pytest.param(lambda c: c[:5], id="5-digits"),
        pytest.param(lambda c: c + "0", id="7-digits"),
        pytest.param(lambda c: c[:5] + "a", id="letter"),
        pytest.param(lambda c: "abcdef", id="letters"),
        pytest.param(lambda c: c.translate(ARABIC_INDIC), id="arabic-indic-digits"),
        pytest.param(lambda c: c.translate(FULLWIDTH), id="fullwidth-digits"),
        pytest.param(lambda c: f"+{c[1:]}", id="sign"),
        pytest.param(lambda c: c + "\x00", id="nul"),
    ],
)
def test_malformed_codes_return_none(mangle: Callable[[str], str]) -> None:
    code = totp_at(RFC_SECRET, STEP)
    assert verify_totp(RFC_SECRET, mangle(code), now=NOW) is None


def test_the_window_does_not_reach_before_the_epoch() -> None:
    # Step -1 does not exist; checking it must not raise.
    assert verify_totp(RFC_SECRET, totp_at(RFC_SECRET, 0), now=0) == 0
    assert verify_totp(RFC_SECRET, totp_at(RFC_SECRET, 1), now=0) == 1


def test_v6_5_4_recovery_codes_are_distinct_and_well_formed() -> None:
    """ASVS V6.5.4: each code carries 50 bits, well above the 20 required."""
    codes = new_recovery_codes()
    assert len(codes) == 10
    assert len(set(codes)) == 10
    assert len(new_recovery_codes(3)) == 3
    symbol = f"[{re.escape(RECOVERY_ALPHABET)}]"
    for code in codes:
        assert re.fullmatch(f"{symbol}{{5}}-{symbol}{{5}}", code)
    assert not set(codes) & set(new_recovery_codes())


def test_v6_5_3_recovery_codes_use_the_whole_unambiguous_alphabet() -> None:
    """ASVS V6.5.3: 32 symbols (5 bits) without look-alikes, all of them drawn."""
    assert len(set(RECOVERY_ALPHABET)) == 32
    assert not set(RECOVERY_ALPHABET) & set("ilou")
    assert RECOVERY_ALPHABET.islower()
    assert math.log2(len(RECOVERY_ALPHABET)) * 10 >= 50
    drawn = {c for code in new_recovery_codes(400) for c in code.replace("-", "")}
    assert drawn == set(RECOVERY_ALPHABET)


@pytest.mark.parametrize(
    "typed",
    ["7k2mq-x9d41", "7K2MQ-X9D41", " 7k2mq x9d41 ", "7k2mqx9d41", "7k-2mq-x9d-41", "7K2MQX9D4I", "7k2mq-x9d4l"],
)
def test_recovery_codes_may_be_typed_loosely(typed: str) -> None:
    assert normalize_recovery_code(typed) == "7k2mqx9d41"


def test_normalize_keeps_codes_distinct_and_is_idempotent() -> None:
    codes = new_recovery_codes(50)
    normalized = [normalize_recovery_code(c) for c in codes]
    assert normalized == [c.replace("-", "") for c in codes]
    assert [normalize_recovery_code(n) for n in normalized] == normalized
    assert normalize_recovery_code("0o0o0-o0o0o") == "0000000000"
    assert normalize_recovery_code("7k2mq-x9d41") != normalize_recovery_code("7k2mq-x9d42")
