"""The texts of the mails identity sends: plain text, short, no tracking.

Each says what happened and what to do if it was not the reader. The caller
builds the links; these functions only place them.
"""

from __future__ import annotations

from bastion.mail import Mail

__all__ = [
    "already_registered_mail",
    "lockout_mail",
    "mfa_changed_mail",
    "password_changed_mail",
    "password_reset_mail",
    "password_reset_required_mail",
    "sign_in_code_mail",
    "verification_mail",
]

_NOT_YOU = "If this was not you, reset your password now and tell the administrator of {service}."


def verification_mail(to: str, link: str, service: str) -> Mail:
    return Mail(
        to=to,
        subject=f"Confirm your email address for {service}",
        text=(
            f"Someone, probably you, created a {service} account with this email address.\n\n"
            f"To confirm the address, open this link:\n\n{link}\n\n"
            "If this was not you, ignore this message: the account stays unconfirmed.\n"
        ),
    )


def already_registered_mail(to: str, service: str, reset_link: str) -> Mail:
    # Sent instead of a second verification mail, so the sign-up form never
    # tells a stranger whether an address has an account.
    return Mail(
        to=to,
        subject=f"Someone tried to register with your address at {service}",
        text=(
            f"Someone tried to create a {service} account with this email address, "
            "but you already have one. Nothing was changed.\n\n"
            f"If it was you and you forgot your password, you can choose a new one here:\n\n{reset_link}\n\n"
            "If it was not you, you can ignore this message.\n"
        ),
    )


def password_reset_mail(to: str, link: str, service: str, ttl_minutes: int) -> Mail:
    return Mail(
        to=to,
        subject=f"Reset your {service} password",
        text=(
            f"Someone asked to reset the password of your {service} account.\n\n"
            f"To choose a new password, open this link within {ttl_minutes} minutes:\n\n{link}\n\n"
            "If you did not ask for this, ignore this message: your password has not changed.\n"
        ),
    )


def lockout_mail(to: str, service: str, until_text: str) -> Mail:
    return Mail(
        to=to,
        subject=f"Your {service} account is temporarily locked",
        text=(
            f"After too many failed sign-in attempts, your {service} account is locked until {until_text}.\n\n"
            "If these attempts were not yours, someone may be guessing your password: "
            "once the lock ends, consider changing it and turning on two-factor authentication.\n"
        ),
    )


def password_changed_mail(to: str, service: str) -> Mail:
    return Mail(
        to=to,
        subject=f"Your {service} password was changed",
        text=(
            f"The password of your {service} account was just changed.\n\n" + _NOT_YOU.format(service=service) + "\n"
        ),
    )


def mfa_changed_mail(to: str, service: str, enabled: bool) -> Mail:
    state = "turned on" if enabled else "turned off"
    return Mail(
        to=to,
        subject=f"Two-factor authentication was {state} for your {service} account",
        text=(
            f"Two-factor authentication was just {state} for your {service} account.\n\n"
            + _NOT_YOU.format(service=service)
            + "\n"
        ),
    )


def sign_in_code_mail(to: str, service: str, code: str, ttl_minutes: int) -> Mail:
    # The code is in the body only: subjects show up in notifications and logs.
    return Mail(
        to=to,
        subject=f"Your {service} sign-in code",
        text=(
            f"Someone signed in to your {service} account with the right password. Because of recent "
            "suspicious activity, the sign-in also needs this code:\n\n"
            f"    {code}\n\n"
            f"It works once, within {ttl_minutes} minutes.\n\n"
            "If this was not you, do not share the code: your password is known to someone else. "
            "Reset it now and tell the administrator of " + service + ".\n"
        ),
    )


def password_reset_required_mail(to: str, link: str, service: str, ttl_minutes: int) -> Mail:
    return Mail(
        to=to,
        subject=f"Choose a new {service} password",
        text=(
            f"Your {service} account must choose a new password before it can sign in again "
            "(your administrator or an automatic protection asked for it).\n\n"
            f"To choose one, open this link within {ttl_minutes} minutes:\n\n{link}\n\n"
            "If you did not just try to sign in, someone else knows your password: choose a new one now.\n"
        ),
    )
