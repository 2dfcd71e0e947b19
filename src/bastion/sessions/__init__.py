"""Sessions: sign-in sessions, access and refresh tokens, revocation.

Public API: ``SessionService`` (issue, rotate and revoke; a reused refresh
token revokes its whole family), ``TokenPair`` and ``InvalidSession``.
"""

from bastion.sessions.errors import InvalidSession
from bastion.sessions.service import SessionService, TokenPair

__all__ = ["InvalidSession", "SessionService", "TokenPair"]
