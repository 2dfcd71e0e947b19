"""The sign-in throttles, and their key: one per account, however its address is spelled.

Declared once here, used by the routes and by ``SignInGate`` (which applies
the login route's per-account throttle before routing), and cleared when an
account is unlocked or its password reset.
"""

from __future__ import annotations

import re

from bastion.http.ratelimit import RateLimiter
from bastion.http.throttle import Throttle
from bastion.identity.schemas import canonical_email
from bastion.identity.service import normalize_email
from bastion.security import hash_token
from bastion.settings import Settings

_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")

# Per client address (``by_address``: an IPv6 client counts as its network).
LOGIN_BY_ADDRESS = Throttle("auth:login:ip", lambda s: s.auth.login_rate_per_ip)
MFA_BY_ADDRESS = Throttle("auth:mfa:ip", lambda s: s.auth.mfa_rate_per_ip)
REFRESH_BY_ADDRESS = Throttle("auth:refresh:ip", lambda s: s.auth.refresh_rate_per_ip)
REGISTER_BY_ADDRESS = Throttle("auth:register:ip", lambda s: s.auth.register_rate_per_ip)
VERIFY_BY_ADDRESS = Throttle("auth:verify:ip", lambda s: s.auth.verify_rate_per_ip)
FORGOT_BY_ADDRESS = Throttle("auth:forgot:ip", lambda s: s.auth.forgot_rate_per_ip)
RESET_BY_ADDRESS = Throttle("auth:reset:ip", lambda s: s.auth.reset_rate_per_ip)

# Per account (``account_key``), hit by the handler once it has the address.
# Sign-in and re-authentication (current password, TOTP removal) share one
# budget: a stolen session buys no extra guesses.
LOGIN_BY_ACCOUNT = Throttle("auth:login:account", lambda s: s.auth.login_rate_per_account, key=None)
REGISTER_BY_ACCOUNT = Throttle("auth:register:account", lambda s: s.auth.mail_rate_per_account, key=None)
FORGOT_BY_ACCOUNT = Throttle("auth:forgot:account", lambda s: s.auth.mail_rate_per_account, key=None)


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


async def restore_sign_in(limiter: RateLimiter, settings: Settings, email: str) -> None:
    """Give an account its sign-in budget back at once, after an unlock or a password reset.

    Lifting the lockout alone left the owner refused (429) until the
    per-account window passed. The counters of the limiter given are
    cleared: the server's own, or, from the command line, the shared ones in
    Redis (an in-memory counter lives in the server process only).
    """
    await LOGIN_BY_ACCOUNT.clear(limiter, settings, account_key(email))
