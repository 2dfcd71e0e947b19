"""Sessions errors."""

from __future__ import annotations

from bastion.http.problems import Unauthorized


class InvalidSession(Unauthorized):
    detail = "The session is invalid or has ended."
