"""The rotation job of ``serve``: one ``LeasedLoop`` ("rotation"), once cluster-wide.

Every tick (``WATCH_SECONDS``) it moves a background rewrap on by one slice
(``bastion.rotation.rewrap``); every ``[rotation] check_interval`` it also
rotates the keyrings that are due (``bastion.rotation.schedule``) and mails
the owners of credentials about to expire (``bastion.rotation.reminders``).
The certificate and secret files are not its business: every process watches
its own (``bastion.rotation.reload.FileReloader``).

A rotation here is what `bastion keys rotate` does, with the injected
clock's time as the new key's creation: the signing schedule
(``bastion.security.jose``) publishes a new signing key in the JWKS at once
and signs with it only after ``auth.signing_publish_seconds``, and the old
key keeps verifying, and stays published, until the last token it signed has
expired: no token fails. Each rotation is a ``KEY_ROTATE`` event with
``{"scheduled": true}``.
"""

from __future__ import annotations

import datetime as dt

import structlog

from bastion.audit import EventTag, record_event
from bastion.clock import Clock
from bastion.db import Database, transaction
from bastion.mail import Postman
from bastion.rewrap import sealed_files
from bastion.rotation.reminders import remind_expiring
from bastion.rotation.rewrap import ORIGIN, RewrapProgress, rewrap_pending, rewrap_slice
from bastion.rotation.schedule import key_statuses
from bastion.secrets import Keyrings
from bastion.settings import Settings

log = structlog.get_logger("bastion.rotation")
# How often a tick (a rewrap slice) runs: the loop's interval in runtime.py.
WATCH_SECONDS = 5.0
# A rewrap slice's time (the loop renews its lease meanwhile).
SLICE_SECONDS = 5.0


class RotationJob:
    """The tick of the "rotation" loop; its state (the next check, the rewrap's progress) is this process's."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        db: Database,
        rings: Keyrings,
        postman: Postman,
        *,
        slice_seconds: float = SLICE_SECONDS,
        rewrap_batch: int = 500,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.db = db
        self.rings = rings
        self.postman = postman
        self._slice_seconds = slice_seconds
        self._rewrap_batch = rewrap_batch
        self._next_check: dt.datetime | None = None
        self._rewrap: RewrapProgress | None = None
        # The encryption kid whose rewrap is known to be done (or has nothing to do).
        self._settled_kid: str | None = None

    async def tick(self) -> None:
        now = self.clock.now()
        if self._next_check is None or now >= self._next_check:
            self._next_check = now + dt.timedelta(seconds=self.settings.rotation.check_interval)
            await self.rotate_due(now)
            await remind_expiring(
                self.db, self.clock, self.postman,
                remind_before=dt.timedelta(seconds=self.settings.rotation.remind_before),
                service=self.settings.auth.service_name, security_contacts=self.settings.alerts.mail_to,
            )  # fmt: skip
        await self.rewrap_step()

    async def rotate_due(self, now: dt.datetime) -> list[str]:
        """Rotate every keyring of an automatic group that is due at ``now``; the new kids.

        Keyring by keyring: the signing keyrings, made together, are due
        together; one whose rotation failed (a full disk) is due again at the
        next check, and the ones already rotated are not rotated twice.
        """
        rotated = []
        for status in key_statuses(self.rings, self.settings.rotation):
            if not status.due(now):
                continue
            if not status.automatic:
                log.warning(
                    "key is due for rotation but is not rotated automatically",
                    purpose=status.purpose, kid=status.kid, due_at=status.due_at.isoformat(),
                )  # fmt: skip
                continue
            keyring = self.rings.purpose(status.purpose)
            if keyring.active_kid != status.kid:
                continue  # rotated meanwhile (`bastion keys rotate`): it is young again
            kid = keyring.rotate(at=now)
            async with transaction(self.db) as tx:
                record_event(
                    tx, self.clock, EventTag.KEY_ROTATE, origin=ORIGIN,
                    details={"purpose": status.purpose, "kid": kid, "previous": status.kid, "scheduled": True},
                )  # fmt: skip
            log.info("key rotated", purpose=status.purpose, kid=kid, previous=status.kid)
            rotated.append(kid)
        return rotated

    async def rewrap_step(self) -> bool:
        """One slice of the pending rewrap, if any; True when one finished now."""
        if self.rings.encryption.active_kid == self._settled_kid:
            return False  # known done: no look at the audit log every tick
        kid = await rewrap_pending(self.db, self.rings)
        if kid is None:
            self._rewrap, self._settled_kid = None, self.rings.encryption.active_kid
            return False
        if self._rewrap is None or self._rewrap.kid != kid:
            self._rewrap = RewrapProgress(kid)
        done = await rewrap_slice(
            self.db, self.rings, self.clock, self._rewrap,
            budget=self._slice_seconds, batch_size=self._rewrap_batch, files=tuple(sealed_files(self.settings)),
        )  # fmt: skip
        if done:
            self._rewrap, self._settled_kid = None, kid
        return done
