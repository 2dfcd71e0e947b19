"""Access errors."""

from __future__ import annotations

from bastion.http.problems import Forbidden, NotFound, Unauthorized, ValidationFailed


class InvalidCredential(Unauthorized):
    detail = "The credential is invalid, expired or revoked."


class NoCredential(Unauthorized):
    """Nothing was sent: saying it was invalid would send a newcomer hunting for a fault in a token."""

    title = "Authentication Required"
    detail = "This route needs a credential: send Authorization: Bearer <access token or API key>."


class PermissionDenied(Forbidden):
    detail = "You are not allowed to do this."


class MfaRequired(Forbidden):
    detail = "This action needs a session signed in with two factors."


class ScopeNotHeld(ValidationFailed):
    detail = "An API key cannot carry permissions its owner does not hold."


class UnknownRole(NotFound):
    """A role named in an assignment that no ``PUT /admin/api/v1/roles/NAME`` has defined."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(f"No such role: {', '.join(names)}.")
