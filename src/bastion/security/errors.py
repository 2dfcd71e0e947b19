"""Opaque exceptions of the crypto core, one per failure kind.

Like pyca/cryptography's ``InvalidToken``, each class stands for every way an
input can be bad, so neither a message nor a type tells an attacker which check
failed (a padding-oracle style side channel, ASVS V11.2.5).
"""

from __future__ import annotations

__all__ = ["InvalidCiphertext", "InvalidToken", "KeyringError", "SecurityError"]


class SecurityError(Exception):
    """Base class of every error raised by ``bastion.security``."""


class InvalidCiphertext(SecurityError):
    """A blob cannot be decrypted: tampered, wrong AAD, wrong or unknown key, bad header."""


class InvalidToken(SecurityError):
    """A JWT is not acceptable, for whatever reason."""


class KeyringError(SecurityError):
    """A keyring or master key cannot be used.

    The message is one line, safe to print in the CLI: it names the file and
    the problem, never key material.
    """
