"""Bastion's crypto core: the only package that touches cryptographic libraries.

Callers get small, safe recipes and never choose an algorithm, nonce or cost.
"""

from __future__ import annotations

from bastion.security.aead import BlindIndex, Encryptor, aad_for
from bastion.security.datakeys import DataKey, data_key_aad, is_data_key_blob, new_wrapped_data_key
from bastion.security.errors import InvalidCiphertext, InvalidToken, KeyringError, SecurityError
from bastion.security.hashing import DIGEST_SIZE, StreamDigest, digest
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
from bastion.security.keyed import KeyedHashes, keyed_hash, keyed_hash_matches, keyed_hashes_under_every_key
from bastion.security.keys import (
    FileStamp,
    KeyInfo,
    Keyring,
    KeyStatus,
    MasterKey,
    check_key_file_permissions,
    file_stamp,
)
from bastion.security.merkle import (
    EMPTY_ROOT,
    Frontier,
    Tree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)
from bastion.security.notes import (
    NOTARY_PURPOSE,
    InvalidNote,
    Notarized,
    Notary,
    NotaryKey,
    NoteKey,
    OpenedNote,
    checkpoint_body,
    open_note,
    parse_checkpoint,
    sign_note,
    verify_note,
)
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
from bastion.security.webhooks import (
    InvalidWebhook,
    new_webhook_secret,
    parse_webhook_secret,
    signature_headers,
)

__all__ = [
    "ALLOWED_ALGORITHMS",
    "DIGEST_SIZE",
    "EMPTY_ROOT",
    "FOREIGN_ALGORITHMS",
    "KEYRING_PURPOSES",
    "NOTARY_PURPOSE",
    "Argon2Params",
    "BlindIndex",
    "DataKey",
    "Encryptor",
    "FileStamp",
    "Frontier",
    "InvalidCiphertext",
    "InvalidNote",
    "InvalidToken",
    "InvalidWebhook",
    "KeyInfo",
    "KeyStatus",
    "KeyedHashes",
    "Keyring",
    "KeyringError",
    "MasterKey",
    "Notarized",
    "Notary",
    "NotaryKey",
    "NoteKey",
    "OpenedNote",
    "PasswordHasher",
    "SecurityError",
    "StreamDigest",
    "TokenSigner",
    "Tree",
    "aad_for",
    "check_key_file_permissions",
    "checkpoint_body",
    "consistency_proof",
    "constant_time_equals",
    "data_key_aad",
    "digest",
    "file_stamp",
    "half_hash",
    "hash_token",
    "inclusion_proof",
    "is_data_key_blob",
    "jwk_thumbprint",
    "keyed_hash",
    "keyed_hash_matches",
    "keyed_hashes_under_every_key",
    "leaf_hash",
    "new_recovery_codes",
    "new_totp_secret",
    "new_webhook_secret",
    "new_wrapped_data_key",
    "node_hash",
    "normalize_recovery_code",
    "open_note",
    "parse_checkpoint",
    "parse_webhook_secret",
    "public_id",
    "s256",
    "sign_note",
    "signature_headers",
    "token_bytes",
    "token_urlsafe",
    "totp_at",
    "totp_uri",
    "verify_consistency",
    "verify_dpop_proof",
    "verify_inclusion",
    "verify_jwt_with_jwks",
    "verify_note",
    "verify_totp",
]
