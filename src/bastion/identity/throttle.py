"""The sign-in throttle's key: one per account, however its address is spelled."""

from __future__ import annotations

import re

from bastion.identity.schemas import canonical_email
from bastion.identity.service import normalize_email
from bastion.security import hash_token

LOGIN_ACCOUNT_SCOPE = "auth:login:account"
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


def sign_in_address(raw: str) -> str | None:
    """The address as sign-in looks it up, or None if it cannot be one.

    The address parser folds display names ("x <a@b>"), case and IDNA into
    the stored form, and every spelling of an account must share one
    throttle. A plain ASCII address already is that form (up to case), so
    only other spellings pay for the parser.
    """
    return raw if _PLAIN_ADDRESS.fullmatch(raw) else canonical_email(raw)


def account_key(address: str) -> str:
    """A hash of the address, existing or not: the throttle reveals nothing and stores no email."""
    return hash_token(normalize_email(address))
