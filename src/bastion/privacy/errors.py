"""Privacy's errors: why an export was refused."""

from __future__ import annotations

from bastion.http.problems import Forbidden


class SignInAgain(Forbidden):
    """The session's sign-in is older than ``[privacy] export_max_auth_age``: the
    export hands over everything at once, so a token left in a browser for
    hours must not be enough (re-authentication, ASVS V7.5.3)."""

    detail = "Exporting your data needs a recent sign-in: sign in again, then ask for the export within 5 minutes."


class SessionOnly(Forbidden):
    """An API key or an OAuth client's token: the export is for the account's owner, signed in themselves."""

    detail = "Only a session of the account's owner can export the account: API keys and OAuth tokens cannot."
