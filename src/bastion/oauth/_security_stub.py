"""TEMPORARY STUB, DELETE AT MERGE of the keys helper: ``bastion.security.s256``.

Replace ``from bastion.oauth._security_stub import s256`` with
``from bastion.security import s256``.
"""

from __future__ import annotations

import base64

from bastion.security import hash_token


def s256(value: str) -> str:
    """base64url(SHA-256(ASCII(value))) without padding (RFC 7636 §4.2)."""
    return base64.urlsafe_b64encode(bytes.fromhex(hash_token(value))).rstrip(b"=").decode("ascii")
