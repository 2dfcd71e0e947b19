"""Bastion's crypto core: the only package that touches cryptographic libraries.

Callers get small, safe recipes and never choose an algorithm, nonce or cost.
"""

from __future__ import annotations

from bastion.security.aead import BlindIndex, Encryptor, aad_for
from bastion.security.errors import InvalidCiphertext, InvalidToken, KeyringError, SecurityError
from bastion.security.jose import (
    ALLOWED_ALGORITHMS,
    FOREIGN_ALGORITHMS,
    KEYRING_PURPOSES,
    TokenSigner,
    half_hash,
    jwk_thumbprint,
    s256,
    verify_dpop_proof,
    verify_jwt_with_jwks,
)
from bastion.security.keyed import keyed_hash, keyed_hash_matches
from bastion.security.keys import KeyInfo, Keyring, KeyStatus, MasterKey, check_key_file_permissions
from bastion.security.passwords import Argon2Params, PasswordHasher
from bastion.security.random import constant_time_equals, hash_token, public_id, token_bytes, token_urlsafe
from bastion.security.totp import (
    new_recovery_codes,
    new_totp_secret,
    normalize_recovery_code,
    totp_at,
    totp_uri,
    verify_totp,
)

__all__ = [
    "ALLOWED_ALGORITHMS",
    "FOREIGN_ALGORITHMS",
    "KEYRING_PURPOSES",
    "Argon2Params",
    "BlindIndex",
    "Encryptor",
    "InvalidCiphertext",
    "InvalidToken",
    "KeyInfo",
    "KeyStatus",
    "Keyring",
    "KeyringError",
    "MasterKey",
    "PasswordHasher",
    "SecurityError",
    "TokenSigner",
    "aad_for",
    "check_key_file_permissions",
    "constant_time_equals",
    "half_hash",
    "hash_token",
    "jwk_thumbprint",
    "keyed_hash",
    "keyed_hash_matches",
    "new_recovery_codes",
    "new_totp_secret",
    "normalize_recovery_code",
    "public_id",
    "s256",
    "token_bytes",
    "token_urlsafe",
    "totp_at",
    "totp_uri",
    "verify_dpop_proof",
    "verify_jwt_with_jwks",
    "verify_totp",
]
