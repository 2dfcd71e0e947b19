"""Sessions: sign-in sessions, access and refresh tokens, revocation.

Public API: ``SessionService`` (issue, rotate and revoke; a reused refresh
token revokes its whole family), ``TokenPair``, ``InvalidSession`` and
``SESSION_CLIENT_ID`` (the ``client_id`` claim of a session's access token).
"""

from bastion.sessions.errors import InvalidSession
from bastion.sessions.service import SESSION_CLIENT_ID, SessionService, TokenPair

__all__ = ["SESSION_CLIENT_ID", "InvalidSession", "SessionService", "TokenPair"]
