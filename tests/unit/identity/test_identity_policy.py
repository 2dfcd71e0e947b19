"""Tests for bastion.identity.policy (NIST SP 800-63B §5.1.1.2, ASVS V6.2)."""

from __future__ import annotations

import pytest
from zxcvbn import matching

from bastion.identity.policy import L33T_MAX_SUBSTITUTIONS, PasswordPolicy

EMAIL = "alice.smith@example.com"
TOO_SHORT = "Use at least 12 characters."
TOO_LONG = "Use at most 256 characters."
GUESSABLE = "This password is too common or too easy to guess."
CONTEXT = "Do not build the password from your email address or the name of this service."

# 20 random symbols from a 52-letter alphabet (~114 bits), as a generator would make.
RANDOM_20 = "qTbZmRwKxVnJpLsHdFgY"
PASSPHRASE_64 = "quartz lantern ripple mosaic ember quilt saffron drizzle orbit x"


@pytest.fixture
def policy() -> PasswordPolicy:
    return PasswordPolicy()


@pytest.mark.parametrize(
    "password",
    [
        "password123456",
        "p@ssw0rd1234",
        "P@$$w0rd!2024",
        "qwertyuiop123",
        "abcdefghijklmn",
        "hunter2hunter2",
        "111111111111",
        "iloveyou12345",
    ],
)
def test_v6_2_4_common_and_guessable_passwords_are_refused(policy: PasswordPolicy, password: str) -> None:
    """ASVS V6.2.4 / V6.2.12: common, l33t-spelled and patterned passwords are refused."""
    assert policy.problems(password) == [GUESSABLE]


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery staple",
        "Correct Horse Battery Staple",
        "correct-horse-battery-staple",
        "correcthorsebatterystaple",
    ],
)
def test_v6_2_1_passphrases_are_accepted(policy: PasswordPolicy, password: str) -> None:
    assert policy.problems(password, email=EMAIL) == []


def test_v6_2_1_minimum_length(policy: PasswordPolicy) -> None:
    """ASVS V6.2.1: at least 8, and Bastion's default is 12."""
    assert policy.problems(RANDOM_20[:11]) == [TOO_SHORT]
    assert policy.problems(RANDOM_20[:12]) == []
    assert PasswordPolicy(min_length=15).problems(RANDOM_20[:14]) == ["Use at least 15 characters."]


def test_v6_2_9_passwords_of_64_characters_and_more_are_accepted(policy: PasswordPolicy) -> None:
    """ASVS V6.2.9: at least 64 characters are permitted; the default cap is 256."""
    assert len(PASSPHRASE_64) == 64
    assert policy.problems(PASSPHRASE_64, email=EMAIL) == []
    long_password = (PASSPHRASE_64 * 4)[:256]
    assert policy.problems(long_password) == []
    assert policy.problems(long_password + "z") == [TOO_LONG]


def test_v6_2_5_no_composition_rules(policy: PasswordPolicy) -> None:
    """ASVS V6.2.5: lowercase only, digits only or no spaces at all are all fine if unguessable."""
    assert policy.problems("quartz lantern ripple mosaic") == []
    assert policy.problems("mqzvkwtrpxnfgh") == []
    assert policy.problems("83920174659201837465") == []
    assert policy.problems("ЖёлтыйКитПлывётДомой") == []


def test_nfkc_normalisation_makes_equivalent_spellings_equal(policy: PasswordPolicy) -> None:
    """SP 800-63B §5.1.1.2: NFKC before hashing and before checking."""
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in "password123456")
    assert policy.normalize(fullwidth) == "password123456"
    assert policy.problems(fullwidth) == policy.problems("password123456") == [GUESSABLE]
    composed, decomposed = "caf\u00e9 ol\u00e9 fi\u00e8vre x", "cafe\u0301 ole\u0301 fie\u0300vre x"
    assert composed != decomposed
    assert policy.normalize(composed) == policy.normalize(decomposed)


def test_v6_2_1_length_is_counted_in_code_points_after_nfkc(policy: PasswordPolicy) -> None:
    # 12 code points as typed, 6 once each e + combining acute is composed.
    decomposed = "e\u0301" * 6
    assert len(decomposed) == 12
    assert TOO_SHORT in policy.problems(decomposed)
    # Multi-byte characters count once each, not per UTF-8 byte.
    assert policy.problems("ЖёлтыйКитПл") == [TOO_SHORT]


def test_v6_2_8_normalize_changes_nothing_else(policy: PasswordPolicy) -> None:
    """ASVS V6.2.8: no trimming, no case change, no truncation."""
    password = "  MiXeD case\twith spaces  " + "x" * 300
    assert policy.normalize(password) == password


@pytest.mark.parametrize(
    "password",
    ["alice.smith-likes-tea", "ALICE.SMITH quartz lantern", "Xq9!alice.smithZp4"],
)
def test_v6_2_11_passwords_built_from_the_email_are_refused(policy: PasswordPolicy, password: str) -> None:
    """ASVS V6.2.11: context-specific words (the user's own address) are refused."""
    assert CONTEXT in policy.problems(password, email=EMAIL)
    assert CONTEXT not in policy.problems(password, email="bob.jones@example.org")


def test_short_local_parts_are_not_treated_as_words(policy: PasswordPolicy) -> None:
    assert policy.problems("quartz al lantern ripple", email="al@example.com") == []


@pytest.mark.parametrize("password", ["MyBastion2024!#Zq", "bastion quartz lantern", "xx-BASTION-kqzvwm"])
def test_v6_2_11_passwords_built_from_the_service_name_are_refused(policy: PasswordPolicy, password: str) -> None:
    assert CONTEXT in policy.problems(password)
    assert CONTEXT not in PasswordPolicy(service_name="Acme Vault").problems(password)


def test_v6_2_11_the_configured_service_name_counts(policy: PasswordPolicy) -> None:
    acme = PasswordPolicy(service_name="Acme Vault")
    assert CONTEXT in acme.problems("my acme vault key 2024 zq")
    assert policy.problems("my acme vault key 2024 zq") == []


def test_email_words_feed_the_guessability_score(policy: PasswordPolicy) -> None:
    """Words of the address (local part pieces, domain labels) count as known words."""
    email = "zorbulon.quaxter@vendetrix.io"
    for password in ["quaxterzorbulon", "vendetrixquaxter"]:
        assert policy.problems(password) == []
        assert policy.problems(password, email=email) == [GUESSABLE]


def test_problems_never_echo_the_password(policy: PasswordPolicy) -> None:
    for password in ["", "short", "password123456", "alice.smith-likes-tea", "Bastion123456", "x" * 300]:
        problems = policy.problems(password, email=EMAIL)
        assert problems
        for problem in problems:
            assert password not in problem or password == ""
            assert "alice" not in problem


def test_the_empty_password_is_refused_without_error(policy: PasswordPolicy) -> None:
    assert policy.problems("") == [TOO_SHORT, GUESSABLE]


def test_only_the_first_100_characters_are_scored(policy: PasswordPolicy) -> None:
    """A weak 100-character start is refused whatever follows (the conservative side)."""
    assert policy.problems("a" * 100 + RANDOM_20) == [GUESSABLE]
    assert policy.problems(RANDOM_20 + "a" * 100) == []


def test_l33t_combinations_are_capped_against_denial_of_service() -> None:
    """Every l33t character at once would make zxcvbn try 736 combinations (dropbox/zxcvbn#326)."""
    every_l33t_character = "".join({c for subs in matching.L33T_TABLE.values() for c in subs})
    table = matching.relevant_l33t_subtable(every_l33t_character, matching.L33T_TABLE)
    assert len(matching.enumerate_l33t_subs(table)) == L33T_MAX_SUBSTITUTIONS
    assert PasswordPolicy().problems(every_l33t_character * 5) == []
