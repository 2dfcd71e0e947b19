"""Sessions, access tokens and rotating refresh tokens.

A session is one sign-in on one device. Its access tokens are JWTs in the
RFC 9068 profile: ``typ`` "at+jwt", ``iss`` the issuer (``auth.public_url``),
``aud`` ``auth.audience``, ``client_id`` :data:`SESSION_CLIENT_ID`, ``sub`` the
user, plus ``sid`` (the session) and ``amr``. Its refresh tokens form a rotation
family (draft-ietf-oauth-security-topics §4.14.2): each is single-use and
replaced on every refresh, and presenting one that was already used means a
copy is in someone else's hands, so the whole session is revoked.

Every authenticated request checks that its session is still live, so
logout, revocation and password changes take effect on the next request
rather than when the access token expires.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from bastion.audit import EventTag, Outcome, record_event
from bastion.clock import Clock
from bastion.db.claims import claim, compare_and_set
from bastion.db.database import Queries, Transaction
from bastion.http.useragent import agent_family
from bastion.incident.state import Lockdown
from bastion.security import InvalidToken, TokenSigner, hash_token, token_urlsafe
from bastion.sessions.errors import InvalidSession
from bastion.sessions.models import RefreshToken, Session
from bastion.settings import AuthSettings
from bastion.uow import UnitOfWork

# Built once: composing a statement cost more than running it.
_NEW_SESSION = insert(Session)
_TOKEN_AND_SESSION = (
    select(
        RefreshToken.id.label("token_id"),
        Session.id.label("session_id"),
        Session.user_id,
        Session.mfa,
        Session.ip,
        Session.revoked_at,
        Session.expires_at,
    )
    .join(Session, Session.id == RefreshToken.session_id)
    .where(RefreshToken.token_hash == bindparam("token_hash"))
)
_CLAIM = compare_and_set(
    RefreshToken,
    RefreshToken.id == bindparam("token_id"),
    RefreshToken.used_at.is_(None),
    values={RefreshToken.used_at: bindparam("now")},
    returning=[RefreshToken.id],
)
_TOUCH = (
    update(Session)
    .where(Session.id == bindparam("session_id"))
    .values(last_used_at=bindparam("now"), ip=bindparam("ip"))
)
_REVOKE = (
    update(Session)
    .where(Session.id == bindparam("session_id"))
    .values(revoked_at=bindparam("now"), revoke_reason=bindparam("reason"))
)
_NEW_TOKEN = insert(RefreshToken)
_SESSION = select(Session).where(Session.id == bindparam("session_id"))


# RFC 9068 §2.2 makes ``client_id`` required in a JWT access token. A
# session's token was issued to Bastion's own API clients (the sign-in API, the
# hosted pages), not to a registered OAuth client, so it names this reserved
# id; ``bastion.oauth.clients`` never issues it, and a token carrying any other
# client_id is not a session token.
SESSION_CLIENT_ID = "bastion"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"  # noqa: S105 - RFC 6750 token type


class SessionService:
    def __init__(
        self, settings: AuthSettings, *, clock: Clock, signer: TokenSigner, lockdown: Lockdown | None = None
    ) -> None:
        """``lockdown``: during an incident lockdown only admins with MFA open or refresh sessions."""
        self.settings = settings
        self.clock = clock
        self.signer = signer
        self.lockdown = lockdown

    async def open(self, uow: UnitOfWork, user_id: uuid.UUID, *, mfa: bool, user_agent: str) -> TokenPair:
        # Every sign-in (password, MFA step, provider, hosted pages) opens its session here.
        if self.lockdown is not None:
            await self.lockdown.admit_sign_in(uow.db, user_id, mfa=mfa)
        now, session_id = self.clock.now(), uuid.uuid4()
        await uow.db.execute(
            _NEW_SESSION,
            {
                "id": session_id,
                "user_id": user_id,
                "created_at": now,
                "last_used_at": now,
                "expires_at": now + dt.timedelta(seconds=self.settings.refresh_token_ttl),
                "ip": uow.origin.ip or "",
                "user_agent": user_agent[:256],
                "mfa": mfa,
            },
        )
        # The agent's family (not the header) lets the monitor tell a new device (bastion.monitor.devices).
        details = {"mfa": mfa, "agent": agent_family(user_agent)}
        record_event(uow.db, self.clock, EventTag.LOGIN, origin=uow.origin, actor_id=user_id, details=details)
        return await self._issue(uow.db, session_id, user_id, mfa=mfa)

    async def refresh(self, uow: UnitOfWork, refresh_token: str) -> TokenPair:
        """Rotate: claim ``refresh_token`` and issue a new pair; InvalidSession otherwise.

        Statements built once: this runs for every client every few minutes.
        """
        now = self.clock.now()
        found = await uow.db.one(_TOKEN_AND_SESSION, {"token_hash": hash_token(refresh_token)})
        if found is None:
            record_event(uow.db, self.clock, EventTag.REFRESH, origin=uow.origin, outcome=Outcome.FAILURE)
            raise InvalidSession
        # A refresh is a sign-in during lockdown; refused before the claim, so the token stays usable after.
        if self.lockdown is not None:
            await self.lockdown.admit_sign_in(uow.db, found.user_id, mfa=found.mfa)
        # Claim the token atomically: of two racing refreshes, one wins and
        # the other is treated as the reuse it is indistinguishable from.
        if await claim(uow.db, _CLAIM, {"token_id": found.token_id, "now": now}) is None:
            if found.revoked_at is None:
                await uow.db.execute(_REVOKE, {"session_id": found.session_id, "now": now, "reason": "refresh_reuse"})
                record_event(
                    uow.db,
                    self.clock,
                    EventTag.REFRESH_REUSE,
                    origin=uow.origin,
                    outcome=Outcome.DENIED,
                    subject_id=found.user_id,
                    details={"session_id": str(found.session_id)},
                )
            raise InvalidSession
        if found.revoked_at is not None or found.expires_at <= now:
            raise InvalidSession
        await uow.db.execute(_TOUCH, {"session_id": found.session_id, "now": now, "ip": uow.origin.ip or found.ip})
        record_event(uow.db, self.clock, EventTag.REFRESH, origin=uow.origin, actor_id=found.user_id)
        return await self._issue(uow.db, found.session_id, found.user_id, mfa=found.mfa)

    def verify_access_token(self, access_token: str) -> tuple[uuid.UUID, uuid.UUID]:
        """The (user id, session id) of a validly signed, unexpired access token.

        Signature and claims only: whether the session is still live is the
        caller's database question (bastion.access asks it in the same query
        that loads the roles).
        """
        try:
            claims = self.signer.verify(
                access_token, now=int(self.clock.now().timestamp()), typ="at+jwt", audience=self.settings.audience
            )
            if claims.get("client_id") != SESSION_CLIENT_ID:
                raise InvalidSession  # an OAuth client's access token: not a session's
            return uuid.UUID(str(claims["sub"])), uuid.UUID(str(claims["sid"]))
        except (InvalidToken, KeyError, ValueError):
            raise InvalidSession from None

    async def list(self, db: Queries, user_id: uuid.UUID) -> list[Any]:
        """The live sessions of ``user_id``, newest first (rows with Session's columns)."""
        now = self.clock.now()
        return await db.all(
            select(Session)
            .where(Session.user_id == user_id, Session.revoked_at.is_(None), Session.expires_at > now)
            .order_by(Session.created_at.desc())
        )

    async def revoke(self, uow: UnitOfWork, session_id: uuid.UUID, *, user_id: uuid.UUID | None, reason: str) -> bool:
        """Revoke one session (of ``user_id``, when given); False if there is no such live session."""
        session = await uow.db.one(_SESSION, {"session_id": session_id})
        if session is None or session.revoked_at is not None or (user_id is not None and session.user_id != user_id):
            return False
        await uow.db.execute(_REVOKE, {"session_id": session_id, "now": self.clock.now(), "reason": reason})
        record_event(
            uow.db,
            self.clock,
            EventTag.SESSION_REVOKE,
            origin=uow.origin,
            actor_id=user_id,
            subject_id=session.user_id,
            details={"session_id": str(session_id), "reason": reason},
        )
        return True

    async def revoke_all(
        self, uow: UnitOfWork, user_id: uuid.UUID | None, *, reason: str, keep: uuid.UUID | None = None
    ) -> int:
        """Revoke every live session of a user (or of everyone, with None), except ``keep``."""
        query = (
            update(Session)
            .where(Session.revoked_at.is_(None))
            .values(revoked_at=self.clock.now(), revoke_reason=reason)
        )
        if user_id is not None:
            query = query.where(Session.user_id == user_id)
        if keep is not None:
            query = query.where(Session.id != keep)
        count = await uow.db.execute(query)
        record_event(
            uow.db,
            self.clock,
            EventTag.SESSION_REVOKE,
            origin=uow.origin,
            subject_id=user_id,
            details={"reason": reason, "count": count},
        )
        return count

    async def _issue(self, tx: Transaction, session_id: uuid.UUID, user_id: uuid.UUID, *, mfa: bool) -> TokenPair:
        now = self.clock.now()
        refresh = token_urlsafe(32)
        await tx.execute(_NEW_TOKEN, {"session_id": session_id, "token_hash": hash_token(refresh), "created_at": now})
        access = self.signer.sign(
            {
                "sub": str(user_id),
                "client_id": SESSION_CLIENT_ID,
                "sid": str(session_id),
                "amr": ["pwd", "otp"] if mfa else ["pwd"],
            },
            now=int(now.timestamp()),
            ttl_seconds=self.settings.access_token_ttl,
            typ="at+jwt",
            audience=self.settings.audience,
        )
        return TokenPair(access_token=access, refresh_token=refresh, expires_in=self.settings.access_token_ttl)
