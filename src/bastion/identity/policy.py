"""Password policy after NIST SP 800-63B §5.1.1.2 (memorized secret verifiers).

Length is the only shape rule: no composition rules, no rotation. Passwords
are NFKC-normalised, then refused when too short, too long, guessable (zxcvbn,
which covers common-password lists, keyboard patterns, dates and l33t
spellings) or built from the user's email address or the service's name.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Callable
from typing import Any

__all__ = ["PasswordPolicy"]

# zxcvbn 3 = "safely unguessable": at least 10^8 guesses, which a rate-limited
# online attacker cannot reach and argon2id makes slow offline.
MIN_SCORE = 3
# zxcvbn's matching grows faster than the square of the length (every
# substring is looked up in every dictionary), so only a prefix is scored:
# 100 characters is the cut dropbox/zxcvbn recommends, and a password whose
# first 100 characters are weak is refused, which errs on the safe side.
SCORED_PREFIX = 100
# zxcvbn tries every combination of the l33t substitutions present, each a
# full dictionary pass: a crafted 100-character input makes 736 passes and
# about 3.5 s of CPU per call, a denial of service on the sign-up route
# (dropbox/zxcvbn#326). zxcvbn-ts caps the combinations (l33tMaxSubstitutions);
# zxcvbn-python cannot, so we cap here. Real passwords use a handful.
L33T_MAX_SUBSTITUTIONS = 16
# Shorter names or local parts would refuse passwords for ordinary syllables.
MIN_CONTEXT_WORD = 3

# zxcvbn keeps each call's user inputs in a module-global dictionary; calls
# from several threads at once would score against each other's inputs.
_zxcvbn_lock = threading.Lock()
_scorer: Callable[..., dict[str, Any]] | None = None


def _zxcvbn() -> Callable[..., dict[str, Any]]:
    """zxcvbn, imported on first use (under ``_zxcvbn_lock``) with its l33t pass capped.

    Its dictionaries hold ~14 MiB, which only sign-up and password changes
    need: a worker that serves neither never loads them.
    """
    global _scorer  # noqa: PLW0603 - one import per process
    if _scorer is None:
        from zxcvbn import matching, zxcvbn  # type: ignore[import-untyped]

        enumerate_l33t_subs = matching.enumerate_l33t_subs

        def capped_l33t_subs(table: dict[str, list[str]]) -> list[dict[str, str]]:
            subs: list[dict[str, str]] = enumerate_l33t_subs(table)
            return subs[:L33T_MAX_SUBSTITUTIONS]

        # l33t_match looks this name up in its module on every call, so
        # replacing it there (once, before the first score) is the one way in.
        matching.enumerate_l33t_subs = capped_l33t_subs
        _scorer = zxcvbn
    return _scorer


class PasswordPolicy:
    """Which passwords users may choose (ASVS V6.2, NIST SP 800-63B §5.1.1.2)."""

    def __init__(self, *, min_length: int = 12, max_length: int = 256, service_name: str = "Bastion") -> None:
        self.min_length = min_length
        self.max_length = max_length
        self.service_name = service_name

    def normalize(self, password: str) -> str:
        """NFKC, as §5.1.1.2 recommends, so every way of typing a character hashes alike.

        Hash and verify ``normalize(password)``; nothing else is changed
        (no trimming, no case folding: ASVS V6.2.8).
        """
        return unicodedata.normalize("NFKC", password)

    def problems(self, password: str, *, email: str | None = None) -> list[str]:
        """Why ``password`` is refused, as generic sentences; empty when acceptable.

        The sentences never quote the password. Scoring costs milliseconds for
        typical passwords and up to about 0.15 s of CPU for crafted ones, so
        request handlers may run it in a thread (it is thread-safe).
        """
        password = self.normalize(password)
        problems: list[str] = []
        if len(password) < self.min_length:
            problems.append(f"Use at least {self.min_length} characters.")
        if len(password) > self.max_length:
            problems.append(f"Use at most {self.max_length} characters.")
        local, domain_parts = _email_words(email)
        folded = password.casefold()
        contained = [local, self.normalize(self.service_name).casefold()]
        if any(len(word) >= MIN_CONTEXT_WORD and word in folded for word in contained):
            problems.append("Do not build the password from your email address or the name of this service.")
        if _score(password, [local, *re.split(r"[._+-]", local), *domain_parts, self.service_name]) < MIN_SCORE:
            problems.append("This password is too common or too easy to guess.")
        return problems


def _email_words(email: str | None) -> tuple[str, list[str]]:
    """The casefolded local part and the domain labels of ``email``."""
    if not email:
        return "", []
    local, _, domain = unicodedata.normalize("NFKC", email).casefold().rpartition("@")
    return local, [label for label in domain.split(".") if label]


def _score(password: str, user_inputs: list[str]) -> int:
    if not password:
        return 0  # zxcvbn fails on the empty string
    prefix = password[:SCORED_PREFIX]
    with _zxcvbn_lock:
        result = _zxcvbn()(prefix, user_inputs=[w for w in user_inputs if w], max_length=SCORED_PREFIX)
    return int(result["score"])
