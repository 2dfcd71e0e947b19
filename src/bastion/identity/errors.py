"""Identity errors: each maps to one public problem, with no detail that
would tell an attacker which check failed."""

from __future__ import annotations

from bastion.http.problems import Forbidden, Unauthorized, ValidationFailed


class LoginFailed(Unauthorized):
    """Unknown user, wrong password, locked or disabled account: all alike."""

    detail = "The email address or password is incorrect."


class InvalidMfa(Unauthorized):
    detail = "The verification code is incorrect or the sign-in attempt has expired."


class InvalidToken(ValidationFailed):
    """A verification or reset token that is unknown, used or expired."""

    detail = "The link is invalid or has expired."


class EmailNotVerified(Forbidden):
    # Only someone who knows the password ever sees this.
    detail = "Verify your email address before signing in."


class RegistrationClosed(Forbidden):
    detail = "Registration is closed."


class InvalidEmail(ValidationFailed):
    detail = "The email address is not valid."


class WeakPassword(ValidationFailed):
    detail = "The password does not meet the policy."


class MfaStateError(ValidationFailed):
    detail = "Two-factor authentication is not in a state that allows this."


class PasswordResetRequired(Forbidden):
    """The right password, on an account that must choose a new one first
    (a detection rule or an admin asked for it); a reset link is mailed.
    Only someone who knows the password ever sees this."""

    detail = "This account must choose a new password: a link to do so has been sent to its email address."

    @property
    def type_uri(self) -> str:
        return "https://bastion.dev/problems/password-reset-required"
