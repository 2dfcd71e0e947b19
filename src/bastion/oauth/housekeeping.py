"""Expired OAuth rows, removed on the way.

Replay markers, codes, pushed and pending authorization requests, device
codes, provider flows and browser sessions are short-lived, and every one
leaves a row. A request that writes anyway (a token request, a DPoP proof)
deletes the expired ones, at most once a minute per process: the tables
stay at a few minutes' worth of rows without a scheduler, and requests do
not contend for the same rows. Codes and provider flows are kept a day past
their expiry, so that a code presented again late is still recognised as
reused (RFC 6749 §4.1.2) rather than unknown.
Grants are never purged here: deleting one moves the principals epoch
(migration 0007), which would empty every process's principal cache.
"""

from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import BindParameter, bindparam, delete

from bastion.db.database import Transaction
from bastion.oauth.models import (
    BrowserSession,
    OAuthCode,
    OAuthDeviceCode,
    OAuthPushedRequest,
    OAuthReplay,
    ProviderFlow,
)
from bastion.oauth.service import OAuthService

__all__ = ["PURGE_INTERVAL", "purge_expired"]

PURGE_INTERVAL = 60.0  # seconds between purges in one process
KEPT_PAST_EXPIRY = dt.timedelta(days=1)
_NOW: BindParameter[dt.datetime] = bindparam("now")
_KEPT: BindParameter[dt.datetime] = bindparam("kept")
_PURGES = (
    (delete(OAuthReplay).where(OAuthReplay.expires_at < _NOW)),
    (delete(OAuthPushedRequest).where(OAuthPushedRequest.expires_at < _NOW)),
    (delete(OAuthDeviceCode).where(OAuthDeviceCode.expires_at < _NOW)),
    (delete(BrowserSession).where(BrowserSession.expires_at < _NOW)),
    (delete(OAuthCode).where(OAuthCode.expires_at < _KEPT)),
    (delete(ProviderFlow).where(ProviderFlow.expires_at < _KEPT)),
)
# Monotonic time of this process's next purge.
_next_purge = 0.0


async def purge_expired(tx: Transaction, oauth: OAuthService) -> None:
    """Delete what has expired, unless this process did so less than ``PURGE_INTERVAL`` ago."""
    global _next_purge  # noqa: PLW0603 - one timestamp per process, on purpose
    moment = time.monotonic()
    if moment < _next_purge:
        return
    _next_purge = moment + PURGE_INTERVAL
    now = oauth.clock.now()
    for statement in _PURGES:
        await tx.execute(statement, {"now": now, "kept": now - KEPT_PAST_EXPIRY})
