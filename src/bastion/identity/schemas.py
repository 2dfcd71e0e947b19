"""Request and response bodies of the identity routes: strict, bounded."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, EmailStr, Field, TypeAdapter, ValidationError, model_validator

# Bounded well above any policy maximum, so oversized input is refused by
# validation before it reaches the (expensive) hasher.
Password = Field(min_length=1, max_length=1024)
Token = Field(min_length=16, max_length=256, pattern=r"^[A-Za-z0-9_-]+$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=4096)


class Credentials(Strict):
    email: EmailStr = Field(max_length=254)
    password: str = Password


class Login(Strict):
    # A plain string here: see bastion.identity.throttle.sign_in_address.
    email: str = Field(min_length=1, max_length=254)
    password: str = Password


_EMAIL: TypeAdapter[str] = TypeAdapter(EmailStr)


def canonical_email(email: str) -> str | None:
    """The address as registration stores it (before normalisation), or None if it is not one."""
    try:
        return _EMAIL.validate_python(email)
    except ValidationError:
        return None


class EmailOnly(Strict):
    email: EmailStr = Field(max_length=254)


class TokenOnly(Strict):
    token: str = Token


class PasswordReset(Strict):
    token: str = Token
    new_password: str = Password


class PasswordChange(Strict):
    current_password: str = Password
    new_password: str = Password


class SecondFactorBody(Strict):
    code: str | None = Field(None, min_length=6, max_length=10)
    recovery_code: str | None = Field(None, min_length=8, max_length=32)

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.code is None) == (self.recovery_code is None):
            raise ValueError("give exactly one of code or recovery_code")
        return self


class MfaLogin(SecondFactorBody):
    mfa_token: str = Token


class CodeOnly(Strict):
    code: str = Field(min_length=6, max_length=10)


class RefreshBody(Strict):
    refresh_token: str = Token


class Accepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    detail: str


class Tokens(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - RFC 6750 token type
    expires_in: int
    refresh_token: str


class MfaChallenge(BaseModel):
    mfa_required: Literal[True] = True
    mfa_token: str
    methods: list[str]


class Profile(BaseModel):
    id: uuid.UUID
    email: str
    email_verified: bool
    roles: list[str]
    mfa_enabled: bool
    mfa_required: bool
    created_at: dt.datetime


class TotpEnrolment(BaseModel):
    secret: str
    otpauth_uri: str


class RecoveryCodes(BaseModel):
    recovery_codes: list[str]


class SessionInfo(BaseModel):
    id: uuid.UUID
    created_at: dt.datetime
    last_used_at: dt.datetime
    ip: str
    user_agent: str
    mfa: bool
    current: bool
