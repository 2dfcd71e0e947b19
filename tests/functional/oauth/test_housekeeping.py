"""Expired OAuth rows are removed on the way (bastion.oauth.housekeeping)."""

from __future__ import annotations

from sqlalchemy import func, select

from bastion.oauth import housekeeping
from bastion.oauth.models import OAuthCode
from conftest import token_request
from factories.oauth import create_client, create_code
from harness import Harness

CC = {"grant_type": "client_credentials"}


async def codes(harness: Harness) -> int:
    return int(await harness.app.state.db.value(select(func.count()).select_from(OAuthCode)))


async def test_codes_a_day_past_expiry_go_and_fresh_ones_stay(harness: Harness) -> None:
    """A code stays a day past its expiry (a late second use is still seen as reuse), then goes
    at the next token request; the purge runs at most once a minute per process."""
    user = await harness.user("alice@example.com")
    client_id, secret = await create_client(harness.app, scopes=("openid", "records:*"))
    await create_code(harness.app, client_id, user.id)
    harness.clock.advance(seconds=3600)
    housekeeping._next_purge = 0.0  # as when a minute has passed on the monotonic clock
    assert (await token_request(harness, client_id, secret, CC)).status_code == 200
    assert await codes(harness) == 1  # expired an hour ago: kept
    harness.clock.advance(seconds=86400)
    await create_code(harness.app, client_id, user.id)
    assert (await token_request(harness, client_id, secret, CC)).status_code == 200
    assert await codes(harness) == 2  # purged less than a minute ago: nothing yet
    housekeeping._next_purge = 0.0
    assert (await token_request(harness, client_id, secret, CC)).status_code == 200
    assert await codes(harness) == 1  # the day-old one went, the live one stays
