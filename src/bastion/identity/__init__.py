"""Identity: users, password policy, email verification, password reset, MFA.

Public API: ``IdentityService`` (accounts, sign-in and second factors; each
method joins the caller's unit of work and records its audit event there),
``SecondFactor``, ``normalize_email`` and the errors its routes answer with.
The mails it sends are ``mail_texts``; ``bastion.mail`` delivers them.
"""

from bastion.identity.errors import (
    EmailNotVerified,
    InvalidMfa,
    InvalidToken,
    LoginFailed,
    MfaStateError,
    RegistrationClosed,
    WeakPassword,
)
from bastion.identity.service import IdentityService, SecondFactor, normalize_email

__all__ = [
    "EmailNotVerified",
    "IdentityService",
    "InvalidMfa",
    "InvalidToken",
    "LoginFailed",
    "MfaStateError",
    "RegistrationClosed",
    "SecondFactor",
    "WeakPassword",
    "normalize_email",
]
