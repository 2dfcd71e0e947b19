"""When each keyring is due: its active key's age against its ``[rotation]`` interval.

Signing, encryption and notary keys rotate by themselves once due (the
rotation job, ``bastion.rotation.job``). The hmac keyring does not: the blind
indexes (``users.email``, searchable encrypted fields) are digests under its
active key only, so a new hmac key would make every lookup miss until each
index were recomputed; ``bastion keys status`` and ``bastion check`` show it
as due and an operator decides.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from bastion.secrets import SIGNING_PURPOSES, Keyrings
from bastion.security import Keyring
from bastion.settings import RotationSettings

# Keyring group -> the keyrings it rotates together. "signing" is every
# algorithm's keyring at once: one rotation of the JWKS, as `keys rotate signing`.
GROUPS: dict[str, tuple[str, ...]] = {
    "signing": SIGNING_PURPOSES,
    "encryption": ("encryption",),
    "notary": ("notary",),
    "hmac": ("hmac",),
}
# The groups the job rotates by itself (see the module docstring for hmac).
AUTOMATIC = frozenset({"signing", "encryption", "notary"})


@dataclass(frozen=True)
class KeyStatus:
    """One keyring's active key against its schedule."""

    purpose: str  # "signing-rs256", "encryption", ...
    group: str  # "signing", "encryption", "notary", "hmac"
    kid: str
    created_at: dt.datetime
    every: dt.timedelta
    automatic: bool

    @property
    def due_at(self) -> dt.datetime:
        return self.created_at + self.every

    def age(self, now: dt.datetime) -> dt.timedelta:
        return now - self.created_at

    def due(self, now: dt.datetime) -> bool:
        return now >= self.due_at


def interval_of(settings: RotationSettings, group: str) -> dt.timedelta:
    seconds = {
        "signing": settings.signing_every,
        "encryption": settings.encryption_every,
        "notary": settings.notary_every,
        "hmac": settings.hmac_every,
    }[group]
    return dt.timedelta(seconds=seconds)


def group_of(purpose: str) -> str:
    """The group a keyring rotates with ("signing-rs256" -> "signing")."""
    return next(group for group, purposes in GROUPS.items() if purpose in purposes)


def status_of(keyring: Keyring, purpose: str, settings: RotationSettings) -> KeyStatus:
    """One keyring's active key, its creation and its interval."""
    group = group_of(purpose)
    active = keyring.active_kid
    info = next(info for info in keyring.kids() if info.kid == active)
    return KeyStatus(purpose, group, active, info.created_at, interval_of(settings, group), group in AUTOMATIC)


def key_statuses(rings: Keyrings, settings: RotationSettings) -> list[KeyStatus]:
    """Every keyring's active key, its creation and its interval, in ``GROUPS`` order."""
    return [status_of(rings.purpose(p), p, settings) for purposes in GROUPS.values() for p in purposes]
