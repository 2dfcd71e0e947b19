"""Accounts: registration, verification, passwords, sign-in and TOTP.

Every method takes the caller's unit of work and joins its transaction; the
audit event for a change is written in that same transaction. Mail goes to
the unit of work's outbox and is delivered only after commit, off the
response path, so neither delivery time nor failure tells a client anything.

A user is an ``Account`` (one row, never changed in place): a change is an
UPDATE (``_UPDATE_ACCOUNT``) that returns the new row. Argon2 runs before a
transaction's first write wherever the logic allows, because on SQLite the
first write takes the one writer and holds it until the unit of work ends.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import anyio.to_thread
from pydantic import ValidationError
from sqlalchemy import ColumnElement, Insert, String, Update, bindparam, delete, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bastion.access.models import UserRole
from bastion.audit import EventTag, Outcome, record_event
from bastion.clock import Clock
from bastion.db import Database, Transaction, UTCDateTime
from bastion.db.claims import claim, compare_and_set
from bastion.identity.errors import (
    EmailNotVerified,
    InvalidEmail,
    InvalidMfa,
    InvalidToken,
    LoginFailed,
    MfaStateError,
    PasswordResetRequired,
    RegistrationClosed,
    WeakPassword,
)
from bastion.identity.hashing import AsyncHasher
from bastion.identity.mail_texts import (
    already_registered_mail,
    lockout_mail,
    mfa_changed_mail,
    password_changed_mail,
    password_reset_mail,
    password_reset_required_mail,
    sign_in_code_mail,
    verification_mail,
)
from bastion.identity.models import ACCOUNT, Account, OneTimeToken, RecoveryCode, User, totp_secret_aad
from bastion.identity.policy import PasswordPolicy
from bastion.identity.schemas import EmailOnly
from bastion.security import (
    BlindIndex,
    Encryptor,
    InvalidCiphertext,
    hash_token,
    new_recovery_codes,
    new_totp_secret,
    normalize_recovery_code,
    token_bytes,
    token_urlsafe,
    totp_uri,
    verify_totp,
)
from bastion.settings import AuthSettings
from bastion.uow import UnitOfWork

VERIFY_EMAIL = "verify_email"
RESET_PASSWORD = "reset_password"  # noqa: S105 - a token purpose, not a password
MFA_STEP = "mfa"
# A code mailed for a step-up sign-in (an account without TOTP that a
# detection rule asked for more than a password). Stored as the hash of the
# MFA step token and the code together: the six digits alone would fall to a
# table of a million hashes, the step token's 256 bits do not.
MFA_EMAIL_CODE = "mfa_email"
EMAIL_CODE_MAX_TTL = 600
# An MFA step token allows this many wrong codes before it is burnt, so one
# password cannot buy an unlimited guess at a 6-digit code.
MFA_ATTEMPTS = 5

# A one-time token is usable while unused, unexpired and under its attempt
# cap (only MFA steps ever count attempts). Every claim below repeats this
# in its WHERE clause (bastion.db.claims).
_USABLE: tuple[ColumnElement[bool], ...] = (
    OneTimeToken.used_at.is_(None),
    OneTimeToken.attempts < MFA_ATTEMPTS,
    OneTimeToken.expires_at > bindparam("now"),
)
_SPEND_TOKEN = compare_and_set(
    OneTimeToken,
    OneTimeToken.token_hash == bindparam("hashed"),
    OneTimeToken.purpose == bindparam("for_purpose"),
    *_USABLE,
    values={OneTimeToken.used_at: bindparam("now")},
    returning=[OneTimeToken.user_id],
)
_SPEND_MFA_STEP = compare_and_set(
    OneTimeToken,
    OneTimeToken.id == bindparam("token_id"),
    *_USABLE,
    values={OneTimeToken.used_at: bindparam("now")},
    returning=[OneTimeToken.id],
)
# A wrong code spends one attempt; at the cap the step is burnt (no longer _USABLE).
_COUNT_MFA_ATTEMPT = compare_and_set(
    OneTimeToken,
    OneTimeToken.id == bindparam("token_id"),
    *_USABLE,
    values={OneTimeToken.attempts: OneTimeToken.attempts + 1},
    returning=[OneTimeToken.attempts],
)


def _issue_token_where(*account: ColumnElement[bool]) -> Insert:
    """A token for the account matching ``account``, if one does: the same
    statement whether or not one does, so that branches which must not tell
    whether an address has an account do the same work."""
    return (
        insert(OneTimeToken)
        .from_select(
            ["token_hash", "purpose", "user_id", "created_at", "expires_at"],
            select(
                bindparam("hashed", type_=String),
                bindparam("for_purpose", type_=String),
                User.id,
                bindparam("now", type_=UTCDateTime),
                bindparam("expires", type_=UTCDateTime),
            ).where(*account),
        )
        .returning(OneTimeToken.user_id)
    )


_ISSUE_RESET_TOKEN = _issue_token_where(User.email == bindparam("email"), User.disabled.is_(False))
_ISSUE_TOKEN_IF_NEW = _issue_token_where(User.id == bindparam("account"))
_ISSUE_TOKEN = insert(OneTimeToken)
_LIVE_TOKEN = select(
    OneTimeToken.id, OneTimeToken.user_id, OneTimeToken.used_at, OneTimeToken.attempts, OneTimeToken.expires_at
).where(OneTimeToken.token_hash == bindparam("hashed"), OneTimeToken.purpose == bindparam("for_purpose"))
_ADD_ROLE = insert(UserRole).from_select(
    ["user_id", "role"], select(User.id, bindparam("role_name", type_=String)).where(User.id == bindparam("account"))
)
_ROLES_OF = select(UserRole.role).where(UserRole.user_id == bindparam("account")).order_by(UserRole.role)
_ALL_ROLES = select(UserRole.user_id, UserRole.role).order_by(UserRole.user_id, UserRole.role)

# The hot reads: sign-in looks the account up by address, signed-in routes by id.
_ACCOUNT_BY_EMAIL = select(*ACCOUNT).where(User.email == bindparam("email"))
_ACCOUNT_BY_ID = select(*ACCOUNT).where(User.id == bindparam("account"))
_ID_BY_EMAIL = select(User.id).where(User.email == bindparam("email"))
_ALL_ACCOUNTS = select(*ACCOUNT).order_by(User.created_at, User.email)
# SET takes its columns from the names given (bastion.db.statements); "account" is the WHERE's.
_UPDATE_ACCOUNT = update(User).where(User.id == bindparam("account")).returning(*ACCOUNT)

# INSERT … ON CONFLICT DO NOTHING: a taken address is not an error, and costs the same.
_ADD_ACCOUNT = {
    "postgresql": postgresql_insert(User).on_conflict_do_nothing(),
    "sqlite": sqlite_insert(User).on_conflict_do_nothing(),
}

_UNUSED_RECOVERY_CODES = select(RecoveryCode.id, RecoveryCode.code_hash).where(
    RecoveryCode.user_id == bindparam("account"), RecoveryCode.used_at.is_(None)
)
_DROP_RECOVERY_CODES = delete(RecoveryCode).where(RecoveryCode.user_id == bindparam("account"))
_ADD_RECOVERY_CODE = insert(RecoveryCode)


# A TOTP code is good once: its time step must be later than the last one accepted.
_SPEND_TOTP_STEP = compare_and_set(
    User,
    User.id == bindparam("account"),
    or_(User.totp_last_step.is_(None), User.totp_last_step < bindparam("step")),
    values={User.totp_last_step: bindparam("step")},
    returning=[User.id],
)
_SPEND_RECOVERY_CODE = compare_and_set(
    RecoveryCode,
    RecoveryCode.id == bindparam("code_id"),
    RecoveryCode.used_at.is_(None),
    values={RecoveryCode.used_at: bindparam("now")},
    returning=[RecoveryCode.id],
)
# TOTP goes on once: of two confirmations racing, the second changes nothing.
_TURN_TOTP_ON = compare_and_set(
    User,
    User.id == bindparam("account"),
    User.totp_enabled.is_(False),
    User.totp_secret.is_not(None),
    values={User.totp_enabled: True},
    returning=[User.id],
)


@dataclass(frozen=True)
class _Counter:
    """One of the two failure counts (wrong passwords, wrong second factors) and its statements.

    Counted in SQL (``count + 1``), not on the row read before: guesses
    racing each other must not overwrite each other's count. On PostgreSQL
    the UPDATE also locks the row until the transaction ends, so of two
    racing guesses the second counts on top of the first, lockout included.
    """

    count: Update
    lock: Update

    @classmethod
    def of(cls, name: Literal["failed_logins", "failed_mfa"]) -> _Counter:
        counter = User.__table__.c[name]
        account = User.id == bindparam("account")
        return cls(
            count=update(User).where(account).values({counter: counter + 1}).returning(counter, User.lockouts),
            lock=update(User)
            .where(account)
            .values({User.locked_until: bindparam("until"), User.lockouts: User.lockouts + 1, counter: 0}),
        )


_WRONG_PASSWORDS = _Counter.of("failed_logins")
_WRONG_SECOND_FACTORS = _Counter.of("failed_mfa")


def normalize_email(email: str) -> str:
    """One spelling per mailbox: NFKC, trimmed, lower-cased.

    Lower-casing the local part is stricter than RFC 5321 allows, and is what
    users expect: Alice@x and alice@x are one account.
    """
    return unicodedata.normalize("NFKC", email).strip().lower()


# A claim (bastion.db.claims) that spends a second factor which matched.
Spend = tuple[Update, dict[str, Any]]


@dataclass(frozen=True)
class SecondFactor:
    code: str | None = None
    recovery_code: str | None = None


@dataclass(frozen=True)
class Challenge:
    """What a sign-in with the right password still needs: the MFA step token and the methods it accepts."""

    mfa_token: str
    methods: tuple[str, ...]


def _email_code_hash(mfa_token: str, code: str) -> str:
    return hash_token(f"{mfa_token}:{code.strip()}")


def _new_email_code() -> str:
    """Six random digits. 64 bits reduced modulo 10**6: a bias of about 10**-13, none to exploit."""
    return f"{int.from_bytes(token_bytes(8), 'big') % 1_000_000:06d}"


class IdentityService:
    def __init__(
        self,
        settings: AuthSettings,
        *,
        clock: Clock,
        hasher: AsyncHasher,
        policy: PasswordPolicy,
        encryptor: Encryptor,
        login_index: BlindIndex | None = None,
    ) -> None:
        self.settings = settings
        # Keyed hash of the sign-in address as typed, in every failed sign-in's
        # details ("login"): the monitor counts distinct logins (spraying),
        # unknown accounts included, without the address in the event.
        self.login_index = login_index
        self.clock = clock
        self.hasher = hasher
        self.policy = policy
        self.encryptor = encryptor

    # --- accounts -------------------------------------------------------

    async def by_email(self, db: Database | Transaction, email: str) -> Account | None:
        row = await db.one(_ACCOUNT_BY_EMAIL, {"email": normalize_email(email)})
        return None if row is None else Account.of(row)

    async def by_id(self, db: Database | Transaction, user_id: uuid.UUID) -> Account | None:
        row = await db.one(_ACCOUNT_BY_ID, {"account": user_id})
        return None if row is None else Account.of(row)

    async def roles_of(self, db: Database | Transaction, user_id: uuid.UUID) -> list[str]:
        """The user's role names, sorted."""
        return [row.role for row in await db.all(_ROLES_OF, {"account": user_id})]

    async def list_users(self, db: Database | Transaction) -> list[tuple[Account, list[str]]]:
        """Every account with its role names, oldest first."""
        roles: dict[uuid.UUID, list[str]] = {}
        for row in await db.all(_ALL_ROLES):
            roles.setdefault(row.user_id, []).append(row.role)
        return [(Account.of(row), roles.get(row.id, [])) for row in await db.all(_ALL_ACCOUNTS)]

    async def check_password(self, password: str, email: str) -> str:
        """The normalised password, or WeakPassword naming the problems (never the password).

        zxcvbn can spend ~0.1 s on a crafted input, so it runs off the event loop.
        """
        problems = await anyio.to_thread.run_sync(lambda: self.policy.problems(password, email=email))
        if problems:
            raise WeakPassword(extra={"problems": problems})
        return self.policy.normalize(password)

    async def create_user(
        self,
        uow: UnitOfWork,
        email: str,
        password: str | None,
        *,
        roles: Sequence[str] = ("user",),
        verified: bool = False,
        actor_id: uuid.UUID | None = None,
    ) -> Account:
        """A new account; raises ValueError if the address is taken (callers decide what to reveal).

        The address is validated as the API validates it (InvalidEmail), since
        the command line calls this directly. Roles are the caller's to check
        (``AccessService.check_roles``): identity does not own them.
        """
        try:
            email = normalize_email(EmailOnly(email=email).email)
        except ValidationError:
            raise InvalidEmail from None
        password_hash = await self.hasher.hash(await self.check_password(password, email)) if password else None
        user_id, created = await self._add_user(uow, email, password_hash, roles, verified=verified)
        user = await self.by_id(uow.db, user_id) if created else None
        if user is None:
            raise ValueError("an account with this email already exists")
        self._audit(uow, EventTag.USER_CREATE, actor_id=actor_id, subject_id=user.id)
        return user

    async def _add_user(
        self, uow: UnitOfWork, email: str, password_hash: str | None, roles: Sequence[str], *, verified: bool
    ) -> tuple[uuid.UUID, bool]:
        """Add the account unless the address is taken: (the address's account id, whether it is new).

        The same statements run either way (the roles' INSERT … SELECT
        writes nothing for a taken address), so registration's two
        branches cost the same.
        """
        now, new_id = self.clock.now(), uuid.uuid4()
        new_user = {
            "id": new_id,
            "email": email,
            "password_hash": password_hash,
            "created_at": now,
            "password_changed_at": now if password_hash else None,
            "email_verified_at": now if verified else None,
        }
        await uow.db.execute(_ADD_ACCOUNT[uow.db.dialect.name], new_user)
        user_id: uuid.UUID = await uow.db.value(_ID_BY_EMAIL, {"email": email})
        await uow.db.execute_many(_ADD_ROLE, [{"account": new_id, "role_name": role} for role in dict.fromkeys(roles)])
        return user_id, user_id == new_id

    async def register(self, uow: UnitOfWork, email: str, password: str) -> None:
        """Open registration. Same outcome whether or not the address exists:
        the owner of a taken address gets a mail instead of a second account."""
        if self.settings.registration != "open":
            raise RegistrationClosed
        email = normalize_email(email)
        normalized = await self.check_password(password, email)
        # Both branches hash, run the same statements (_add_user and an
        # INSERT … SELECT of the token that writes nothing for a taken
        # address), audit and commit, so timing does not tell taken from free.
        password_hash = await self.hasher.hash(normalized)
        user_id, created = await self._add_user(uow, email, password_hash, ["user"], verified=False)
        token, now = token_urlsafe(32), self.clock.now()
        await uow.db.execute(
            _ISSUE_TOKEN_IF_NEW,
            {
                "hashed": hash_token(token),
                "for_purpose": VERIFY_EMAIL,
                "account": user_id if created else None,
                "now": now,
                "expires": now + dt.timedelta(seconds=self.settings.email_token_ttl),
            },
        )
        if not created:
            self._audit(uow, EventTag.REGISTER_EXISTING, subject_id=user_id)
            uow.outbox.append(already_registered_mail(email, self.settings.service_name, self._link("reset-password")))
            return
        self._audit(uow, EventTag.REGISTER, actor_id=user_id)
        uow.outbox.append(verification_mail(email, self._link("verify-email", token), self.settings.service_name))

    async def verify_email(self, uow: UnitOfWork, token: str) -> Account:
        user_id = await self._spend_token(uow, token, VERIFY_EMAIL)
        user = await self.by_id(uow.db, user_id) if user_id else None
        if user is None:
            raise InvalidToken
        if user.email_verified_at is None:
            user = await self._update(uow, user, email_verified_at=self.clock.now())
        self._audit(uow, EventTag.EMAIL_VERIFY, actor_id=user.id)
        return user

    async def _update(self, uow: UnitOfWork, user: Account, **values: Any) -> Account:
        """Set ``values`` (columns of ``users``) on ``user``'s row; the row as it now is."""
        row = await uow.db.changed(_UPDATE_ACCOUNT, {**values, "account": user.id})
        if row is None:
            # Gone meanwhile (no route deletes accounts today): what a missing account answers.
            raise LoginFailed
        return Account.of(row)

    # --- sign-in --------------------------------------------------------

    async def authenticate(self, uow: UnitOfWork, email: str, password: str) -> Account:
        """The first factor. Every failure is the same LoginFailed, at the same cost.

        Nothing is written before the password is verified: the hash runs
        while no writer is held.
        """
        now = self.clock.now()
        user = await self.by_email(uow.db, email)
        if user is None or user.password_hash is None:
            await self.hasher.dummy_verify(password)
            self._audit(uow, EventTag.LOGIN, outcome=Outcome.FAILURE, details=self._login(email))
            raise LoginFailed
        if user.disabled or (user.locked_until is not None and user.locked_until > now):
            await self.hasher.dummy_verify(password)
            self._audit(
                uow,
                EventTag.LOGIN,
                outcome=Outcome.DENIED,
                subject_id=user.id,
                details={"reason": "disabled" if user.disabled else "locked", **self._login(email)},
            )
            raise LoginFailed
        valid, new_hash = await self.hasher.verify_and_update(user.password_hash, self.policy.normalize(password))
        if not valid:
            self._audit(uow, EventTag.LOGIN, outcome=Outcome.FAILURE, subject_id=user.id, details=self._login(email))
            await self._count_towards_lockout(uow, user, _WRONG_PASSWORDS)
            raise LoginFailed
        # The right password clears the count of wrong ones; a clean account writes nothing here.
        changes: dict[str, Any] = {"failed_logins": 0} if user.failed_logins else {}
        if new_hash is not None:
            changes["password_hash"] = new_hash  # parameters changed since this hash was made
        if changes:
            user = await self._update(uow, user, **changes)
        if user.email_verified_at is None:
            raise EmailNotVerified
        if user.password_reset_required:
            # The password is right but no longer enough: only the mailbox's
            # owner, through the reset link, signs in again.
            self._audit(
                uow, EventTag.LOGIN, outcome=Outcome.DENIED, subject_id=user.id,
                details={"reason": "password_reset_required"},
            )  # fmt: skip
            token = await self._issue_token(uow, user, RESET_PASSWORD, self.settings.email_token_ttl)
            link, minutes = self._link("reset-password", token), self.settings.email_token_ttl // 60
            uow.outbox.append(password_reset_required_mail(user.email, link, self.settings.service_name, minutes))
            raise PasswordResetRequired
        return user

    def _login(self, email: str) -> dict[str, str]:
        """``{"login": <16 hex>}``, a keyed hash of the normalised address (bastion.monitor counts them)."""
        if self.login_index is None:
            return {}
        return {"login": self.login_index.digest(normalize_email(email), "monitor.login")[:16]}

    async def _count_towards_lockout(self, uow: UnitOfWork, user: Account, counter: _Counter) -> None:
        """Record a wrong password (``_WRONG_PASSWORDS``) or second factor
        (``_WRONG_SECOND_FACTORS``); at the threshold, lock for an escalating time.

        Counted in SQL (``counter + 1``), not on the row read before: guesses
        racing each other must not overwrite each other's count. The two
        counts are apart because the right password clears its own: whoever
        holds the password must not clear the count of the codes they guess.
        Either count leads to the same lockout, which refuses both factors.
        """
        counted = await uow.db.changed(counter.count, {"account": user.id})
        if counted is None:
            return  # the account is gone
        failures, lockouts = counted
        if failures < self.settings.lockout_threshold:
            return
        # Each lockout lasts twice the previous one (capped at a day), so a
        # patient attacker gets ever fewer guesses per day.
        seconds = min(self.settings.lockout_seconds * 2 ** min(lockouts, 16), 86400)
        until = self.clock.now() + dt.timedelta(seconds=seconds)
        await uow.db.execute(counter.lock, {"account": user.id, "until": until})
        self._audit(uow, EventTag.LOCKOUT, subject_id=user.id, details={"seconds": seconds})
        uow.outbox.append(lockout_mail(user.email, self.settings.service_name, until.strftime("%Y-%m-%d %H:%M UTC")))

    async def start_mfa(self, uow: UnitOfWork, user: Account) -> str:
        self._audit(uow, EventTag.LOGIN_MFA_REQUIRED, actor_id=user.id)
        return await self._issue_token(uow, user, MFA_STEP, self.settings.mfa_token_ttl)

    def stepped_up(self, user: Account) -> bool:
        """Whether a detection rule asked ``user``'s next sign-ins for more than a password (``step_up_until``)."""
        return user.step_up_until is not None and user.step_up_until > self.clock.now()

    async def second_step(self, uow: UnitOfWork, user: Account) -> Challenge | None:
        """What the sign-in of ``user``, whose password was right, still needs; None: nothing.

        TOTP (or a recovery code) when it is on. Without TOTP, while step-up
        is required, a six-digit code mailed to the account's address: single
        use, valid as long as the step token, and each wrong one counted like
        a wrong TOTP code (the step's MFA_ATTEMPTS and the account's lockout).
        """
        if user.totp_enabled:
            return Challenge(await self.start_mfa(uow, user), ("totp", "recovery_code"))
        if not self.stepped_up(user):
            return None
        token, code, now = await self.start_mfa(uow, user), _new_email_code(), self.clock.now()
        # ASVS V6.5.5: an out-of-band code lives at most 10 minutes (the step token may live 15).
        ttl = min(self.settings.mfa_token_ttl, EMAIL_CODE_MAX_TTL)
        await uow.db.execute(
            _ISSUE_TOKEN,
            {
                "token_hash": _email_code_hash(token, code),
                "purpose": MFA_EMAIL_CODE,
                "user_id": user.id,
                "created_at": now,
                "expires_at": now + dt.timedelta(seconds=ttl),
            },
        )
        minutes = max(1, ttl // 60)
        uow.outbox.append(sign_in_code_mail(user.email, self.settings.service_name, code, minutes))
        return Challenge(token, ("email",))

    async def require_step_up(
        self, uow: UnitOfWork, user: Account, *, until: dt.datetime, reason: str, actor_id: uuid.UUID | None = None
    ) -> Account:
        """Until ``until``, a password alone does not sign ``user`` in (``second_step``).

        Never shortens a step-up in force.
        """
        if user.step_up_until is not None and user.step_up_until >= until:
            return user
        user = await self._update(uow, user, step_up_until=until)
        self._audit(
            uow, EventTag.STEP_UP_REQUIRED, actor_id=actor_id, subject_id=user.id,
            details={"reason": reason[:64], "until": until.isoformat()},
        )  # fmt: skip
        return user

    async def require_password_reset(
        self, uow: UnitOfWork, user: Account, *, reason: str, actor_id: uuid.UUID | None = None
    ) -> Account:
        """``user``'s next sign-in must choose a new password (``authenticate`` refuses and mails a link)."""
        if user.password_reset_required:
            return user
        user = await self._update(uow, user, password_reset_required=True)
        self._audit(
            uow, EventTag.PASSWORD_RESET_REQUIRED, actor_id=actor_id, subject_id=user.id,
            details={"reason": reason[:64]},
        )  # fmt: skip
        return user

    async def complete_mfa(self, uow: UnitOfWork, mfa_token: str, factor: SecondFactor) -> Account:
        """The second factor, bound to the first by the single-use MFA step token.

        A code is checked first and spent after, each spending one claim
        (bastion.db.claims): a wrong code claims one of the step's
        MFA_ATTEMPTS, a right one claims the step itself and then the code.
        A verdict whose claim fails counts for nothing, so however many
        codes race on one step, at most MFA_ATTEMPTS of them are ever judged,
        and one code opens at most one session.
        """
        row = await self._live_token(uow, mfa_token, MFA_STEP)
        user = await self.by_id(uow.db, row.user_id) if row else None
        if row is None or user is None or user.disabled:
            raise InvalidMfa
        now = self.clock.now()
        if self._locked(user):
            # A step token issued before the lockout buys no guesses during it.
            self._audit(uow, EventTag.MFA, outcome=Outcome.DENIED, subject_id=user.id, details={"reason": "locked"})
            raise InvalidMfa
        # Judged (a recovery code is an Argon2 verify) before the first write.
        if user.totp_enabled:
            spend = await self._match_second_factor(uow, user, factor)
        else:
            spend = await self._match_email_code(uow, mfa_token, factor)
        if spend is None:
            await claim(uow.db, _COUNT_MFA_ATTEMPT, {"token_id": row.id, "now": now})
            self._audit(uow, EventTag.MFA, outcome=Outcome.FAILURE, subject_id=user.id)
            await self._count_towards_lockout(uow, user, _WRONG_SECOND_FACTORS)
            raise InvalidMfa
        if await claim(uow.db, _SPEND_MFA_STEP, {"token_id": row.id, "now": now}) is None:
            raise InvalidMfa
        if await claim(uow.db, *spend) is None:
            raise InvalidMfa
        # A stepped-up sign-in is what the step-up asked for: it ends it.
        cleared: dict[str, Any] = {"step_up_until": None} if user.step_up_until is not None else {}
        if user.failed_mfa or cleared:
            user = await self._update(uow, user, failed_mfa=0, **cleared)
        method = "email" if not user.totp_enabled else "recovery_code" if factor.recovery_code else "totp"
        self._audit(uow, EventTag.MFA, actor_id=user.id, details={"method": method})
        return user

    async def _match_email_code(self, uow: UnitOfWork, mfa_token: str, factor: SecondFactor) -> Spend | None:
        """The claim that spends the mailed code of this step if ``factor.code`` is it, else None."""
        if factor.code is None:
            return None
        hashed = _email_code_hash(mfa_token, factor.code)
        if await self._live_token(uow, hashed, MFA_EMAIL_CODE, hashed=True) is None:
            return None
        return _SPEND_TOKEN, {"hashed": hashed, "for_purpose": MFA_EMAIL_CODE, "now": self.clock.now()}

    # --- passwords ------------------------------------------------------

    async def forgot_password(self, uow: UnitOfWork, email: str) -> None:
        """Mail a reset link if an enabled account has the address.

        Whether it has is decided inside one statement, so the time taken
        does not tell (it did: 8 ms against 3). Both ways make and hash a
        token, run the same INSERT … SELECT (it writes a row only where
        the account exists), write one audit event and commit; only the
        mail differs, and it is delivered after the response, off its path.
        """
        email, token, now = normalize_email(email), token_urlsafe(32), self.clock.now()
        expires = now + dt.timedelta(seconds=self.settings.email_token_ttl)
        parameters = {"hashed": hash_token(token), "for_purpose": RESET_PASSWORD, "email": email}
        issued = await uow.db.changed(_ISSUE_RESET_TOKEN, {**parameters, "now": now, "expires": expires})
        user_id = None if issued is None else issued.user_id
        outcome = Outcome.SUCCESS if user_id else Outcome.FAILURE
        self._audit(uow, EventTag.PASSWORD_FORGOT, outcome=outcome, subject_id=user_id)
        if user_id is not None:
            link, minutes = self._link("reset-password", token), self.settings.email_token_ttl // 60
            uow.outbox.append(password_reset_mail(email, link, self.settings.service_name, minutes))

    async def reset_password(self, uow: UnitOfWork, token: str, new_password: str) -> Account:
        """Set a new password from a reset link; also unlocks the account.

        The caller revokes every session of the user in the same transaction.
        """
        row = await self._live_token(uow, token, RESET_PASSWORD)
        user = await self.by_id(uow.db, row.user_id) if row else None
        if user is None:
            raise InvalidToken
        # Check the policy before spending the token, so a weak choice can be
        # retried; and hash before the first write.
        password_hash = await self.hasher.hash(await self.check_password(new_password, user.email))
        if await self._spend_token(uow, token, RESET_PASSWORD) is None:
            raise InvalidToken  # spent meanwhile by a racing reset
        now = self.clock.now()
        user = await self._update(
            uow,
            user,
            password_hash=password_hash,
            password_changed_at=now,
            locked_until=None,
            failed_logins=0,
            failed_mfa=0,
            password_reset_required=False,
            # Whoever reads the inbox owns the account, so the address is verified.
            email_verified_at=user.email_verified_at or now,
        )
        self._audit(uow, EventTag.PASSWORD_RESET, actor_id=user.id)
        uow.outbox.append(password_changed_mail(user.email, self.settings.service_name))
        return user

    async def change_password(self, uow: UnitOfWork, user: Account, current: str, new: str) -> Account:
        """Replace the password of the signed-in ``user``, who proves the current one; the account as it now is."""
        if not await self.reauthenticate(uow, user, current):
            self._audit(uow, EventTag.PASSWORD_CHANGE, outcome=Outcome.FAILURE, actor_id=user.id)
            raise LoginFailed("The current password is incorrect.")
        password_hash = await self.hasher.hash(await self.check_password(new, user.email))
        user = await self._update(uow, user, password_hash=password_hash, password_changed_at=self.clock.now())
        self._audit(uow, EventTag.PASSWORD_CHANGE, actor_id=user.id)
        uow.outbox.append(password_changed_mail(user.email, self.settings.service_name))
        return user

    async def reauthenticate(self, uow: UnitOfWork, user: Account, password: str) -> bool:
        """Whether the signed-in ``user`` proved their password again.

        Counted as a sign-in is: a wrong password counts towards the lockout,
        and a locked account is refused even the right one, so a stolen
        session cannot guess the password faster than sign-in would let it
        (ASVS V6.3.1). The caller throttles first, with the sign-in throttles.
        """
        if self._locked(user) or user.password_hash is None:
            await self.hasher.dummy_verify(password)
            return False
        valid, _ = await self.hasher.verify_and_update(user.password_hash, self.policy.normalize(password))
        if not valid:
            await self._count_towards_lockout(uow, user, _WRONG_PASSWORDS)
        return valid

    async def confirm_erasure(self, uow: UnitOfWork, user: Account, password: str, factor: SecondFactor | None) -> None:
        """The owner's proof for erasing their account: the password and, with TOTP on,
        a second factor (spent here, so one code confirms one erasure). Raises
        LoginFailed or InvalidMfa, each counted towards the lockout as at sign-in;
        a failure is a ``privacy:erase`` failure event, and nothing is erased.
        """
        if not await self.reauthenticate(uow, user, password):
            self._audit(uow, EventTag.PRIVACY_ERASE, outcome=Outcome.FAILURE, actor_id=user.id)
            raise LoginFailed
        if not user.totp_enabled:
            return
        spend = None if factor is None else await self._match_second_factor(uow, user, factor)
        if spend is None or await claim(uow.db, *spend) is None:
            self._audit(uow, EventTag.PRIVACY_ERASE, outcome=Outcome.FAILURE, actor_id=user.id)
            await self._count_towards_lockout(uow, user, _WRONG_SECOND_FACTORS)
            raise InvalidMfa

    def _locked(self, user: Account) -> bool:
        return user.locked_until is not None and user.locked_until > self.clock.now()

    # --- TOTP -----------------------------------------------------------

    async def totp_begin(self, uow: UnitOfWork, user: Account) -> tuple[str, str]:
        """A new secret (pending until confirmed) and its otpauth:// URI."""
        if user.totp_enabled:
            raise MfaStateError("Two-factor authentication is already on; remove it first.")
        secret = new_totp_secret()
        sealed = self.encryptor.encrypt(secret.encode(), totp_secret_aad(user.id))
        await self._update(uow, user, totp_secret=sealed, totp_last_step=None)
        self._audit(uow, EventTag.TOTP_ENROL, actor_id=user.id)
        return secret, totp_uri(secret, account=user.email, issuer=self.settings.service_name)

    async def totp_confirm(self, uow: UnitOfWork, user: Account, code: str) -> list[str]:
        """Turn TOTP on once a code proves the app has the secret; returns fresh recovery codes."""
        if user.totp_enabled or user.totp_secret is None:
            raise MfaStateError
        spend = self._match_totp(user, code)
        if spend is None:
            raise InvalidMfa
        codes = new_recovery_codes()
        # Salted Argon2id like passwords (ASVS V6.5.2: lookup secrets of under
        # 112 bits), so a stolen table does not give the codes away. Hashed
        # before the first write: ten hashes would otherwise hold the writer.
        hashes = [await self.hasher.hash(normalize_recovery_code(recovery)) for recovery in codes]
        if await claim(uow.db, *spend) is None:
            raise InvalidMfa
        if await claim(uow.db, _TURN_TOTP_ON, {"account": user.id}) is None:
            raise MfaStateError  # turned on meanwhile by a racing confirmation
        await uow.db.execute(_DROP_RECOVERY_CODES, {"account": user.id})
        await uow.db.execute_many(_ADD_RECOVERY_CODE, [{"user_id": user.id, "code_hash": hashed} for hashed in hashes])
        self._audit(uow, EventTag.TOTP_ENABLE, actor_id=user.id)
        uow.outbox.append(mfa_changed_mail(user.email, self.settings.service_name, enabled=True))
        return codes

    async def totp_disable(self, uow: UnitOfWork, user: Account, factor: SecondFactor) -> None:
        """Turn TOTP off; needs a fresh second factor, not just a session."""
        if not user.totp_enabled:
            raise MfaStateError
        # Re-authentication: a locked account is refused, a wrong code counts towards the lockout.
        spend = None if self._locked(user) else await self._match_second_factor(uow, user, factor)
        if spend is None:
            self._audit(uow, EventTag.TOTP_DISABLE, outcome=Outcome.FAILURE, actor_id=user.id)
            if not self._locked(user):
                await self._count_towards_lockout(uow, user, _WRONG_SECOND_FACTORS)
            raise InvalidMfa
        if await claim(uow.db, *spend) is None:
            raise InvalidMfa  # the same code, spent meanwhile by a racing request
        await self._update(uow, user, totp_enabled=False, totp_secret=None, totp_last_step=None)
        await uow.db.execute(_DROP_RECOVERY_CODES, {"account": user.id})
        self._audit(uow, EventTag.TOTP_DISABLE, actor_id=user.id)
        uow.outbox.append(mfa_changed_mail(user.email, self.settings.service_name, enabled=False))

    def mfa_required(self, roles: Sequence[str]) -> bool:
        """Whether a user with ``roles`` must sign in with a second factor."""
        return any(role in self.settings.mfa_required_roles for role in roles)

    async def _match_second_factor(self, uow: UnitOfWork, user: Account, factor: SecondFactor) -> Spend | None:
        """The claim that spends ``factor`` if it is right for ``user`` (run it to use the factor), else None."""
        if factor.code is not None:
            return self._match_totp(user, factor.code)
        if factor.recovery_code is not None:
            return await self._match_recovery_code(uow, user, normalize_recovery_code(factor.recovery_code))
        return None

    async def _match_recovery_code(self, uow: UnitOfWork, user: Account, code: str) -> Spend | None:
        for row in await uow.db.all(_UNUSED_RECOVERY_CODES, {"account": user.id}):
            if (await self.hasher.verify_and_update(row.code_hash, code))[0]:
                return _SPEND_RECOVERY_CODE, {"code_id": row.id, "now": self.clock.now()}
        return None

    def _match_totp(self, user: Account, code: str) -> Spend | None:
        if user.totp_secret is None:
            return None
        try:
            secret = self.encryptor.decrypt(user.totp_secret, totp_secret_aad(user.id)).decode()
        except InvalidCiphertext:
            return None
        now = int(self.clock.now().timestamp())
        step = verify_totp(secret, code, now=now, after_step=user.totp_last_step)
        return None if step is None else (_SPEND_TOTP_STEP, {"account": user.id, "step": step})

    def _audit(self, uow: UnitOfWork, tag: EventTag, **fields: Any) -> None:
        record_event(uow.db, self.clock, tag, origin=uow.origin, **fields)

    # --- admin ----------------------------------------------------------

    async def lock(self, uow: UnitOfWork, user: Account, actor_id: uuid.UUID | None = None) -> Account:
        """Disable the account; the account as it now is (the caller ends its sessions)."""
        user = await self._update(uow, user, disabled=True)
        self._audit(uow, EventTag.USER_LOCK, actor_id=actor_id, subject_id=user.id)
        return user

    async def unlock(self, uow: UnitOfWork, user: Account, actor_id: uuid.UUID | None = None) -> Account:
        """Enable the account and lift any lockout; the account as it now is."""
        user = await self._update(uow, user, disabled=False, locked_until=None, failed_logins=0, failed_mfa=0)
        self._audit(uow, EventTag.UNLOCK, actor_id=actor_id, subject_id=user.id)
        return user

    # --- one-time tokens ------------------------------------------------

    async def _issue_token(self, uow: UnitOfWork, user: Account, purpose: str, ttl: int) -> str:
        token, now = token_urlsafe(32), self.clock.now()
        await uow.db.execute(
            _ISSUE_TOKEN,
            {
                "token_hash": hash_token(token),
                "purpose": purpose,
                "user_id": user.id,
                "created_at": now,
                "expires_at": now + dt.timedelta(seconds=ttl),
            },
        )
        return token

    async def _live_token(self, uow: UnitOfWork, token: str, purpose: str, *, hashed: bool = False) -> Any | None:
        """The token's row (id, user_id, …) if it looks usable now: a hint only, a claim decides (bastion.db.claims)."""
        digest = token if hashed else hash_token(token)
        row = await uow.db.one(_LIVE_TOKEN, {"hashed": digest, "for_purpose": purpose})
        now = self.clock.now()
        if row is None or row.used_at is not None or row.attempts >= MFA_ATTEMPTS or row.expires_at <= now:
            return None
        return row

    async def _spend_token(self, uow: UnitOfWork, token: str, purpose: str) -> uuid.UUID | None:
        """Use a single-use token: its user's id, or None if it is unknown, spent or expired."""
        parameters = {"hashed": hash_token(token), "for_purpose": purpose, "now": self.clock.now()}
        spent = await claim(uow.db, _SPEND_TOKEN, parameters)
        return None if spent is None else spent.user_id

    def _link(self, page: str, token: str | None = None) -> str:
        base = f"{self.settings.public_url.rstrip('/')}/{page}"
        return f"{base}#token={token}" if token else base
