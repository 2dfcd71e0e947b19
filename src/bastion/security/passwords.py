"""Password storage with Argon2id (RFC 9106; ASVS V11.4.2).

Hashes are PHC strings (``$argon2id$v=19$m=…,t=…,p=…$salt$hash``): they carry
their own parameters, so raising the cost later only needs a rehash at the next
successful login (:meth:`PasswordHasher.verify_and_update`), never a flag day.
"""

from __future__ import annotations

from dataclasses import dataclass

import argon2
from argon2.exceptions import VerificationError

from bastion.security.random import token_urlsafe

__all__ = ["Argon2Params", "PasswordHasher"]

_SALT_BYTES = 16
_HASH_BYTES = 32


@dataclass(frozen=True)
class Argon2Params:
    """Argon2id cost parameters.

    The defaults are OWASP's first recommendation for Argon2id (Password
    Storage Cheat Sheet): 19 MiB of memory, 2 passes, 1 lane. The floor of
    7 MiB is OWASP's lowest listed memory cost (which OWASP pairs with t=5);
    it only stops gross misconfiguration, tests use it for speed.
    """

    memory_cost_kib: int = 19456
    time_cost: int = 2
    parallelism: int = 1

    def __post_init__(self) -> None:
        if self.memory_cost_kib < 7168:
            raise ValueError("Argon2 memory_cost_kib must be at least 7168 (7 MiB)")
        if self.time_cost < 1:
            raise ValueError("Argon2 time_cost must be at least 1")
        if self.parallelism < 1:
            raise ValueError("Argon2 parallelism must be at least 1")


class PasswordHasher:
    """Hash and verify passwords with Argon2id.

    Passwords are hashed exactly as given (UTF-8, no truncation, no case
    folding; ASVS V6.2.8). Argon2 first compresses the password with BLAKE2b,
    so long passwords cost no more than short ones.
    """

    def __init__(self, params: Argon2Params = Argon2Params()) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_cost_kib,
            parallelism=params.parallelism,
            hash_len=_HASH_BYTES,
            salt_len=_SALT_BYTES,
            type=argon2.Type.ID,
        )
        # Computed now rather than on first use, so even the first unknown
        # user costs the same as a known one.
        self._dummy_hash = self.hash(token_urlsafe())

    def hash(self, password: str) -> str:
        """Return the Argon2id PHC string of ``password`` with a fresh random salt."""
        return self._hasher.hash(password)

    def verify(self, encoded: str, password: str) -> bool:
        """Return whether ``password`` matches ``encoded``.

        False both for a wrong password and for anything that is not a usable
        Argon2 hash, so a corrupt row cannot turn into a 500 or an oracle.
        """
        try:
            return self._hasher.verify(encoded, password)
        except (VerificationError, ValueError):
            # ValueError covers InvalidHashError and non-ASCII hash text.
            return False

    def verify_and_update(self, encoded: str, password: str) -> tuple[bool, str | None]:
        """Verify, and return a new hash when ``encoded`` is outdated.

        The second item is a fresh hash under the current parameters when the
        password is right but ``encoded`` used other parameters or another
        Argon2 variant (argon2i, argon2d); the caller stores it. Like Django's
        ``check_password(..., setter)``.
        """
        if not self.verify(encoded, password):
            return False, None
        if self._hasher.check_needs_rehash(encoded):
            return True, self.hash(password)
        return True, None

    def dummy_verify(self, password: str) -> None:
        """Spend the time of one verification, for a user that does not exist.

        Without it a login for an unknown account returns measurably faster
        and reveals which accounts exist (ASVS V6.3.8).
        """
        self.verify(self._dummy_hash, password)
