"""``GET /admin/api/v1/audit``: filters, cursor pages, limits, and who may read it. SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import datetime as dt

import httpx

from bastion.audit.entry import format_at
from factories.audit import write_events
from harness import Harness

URL = "/admin/api/v1/audit"


async def test_filters_and_cursor_pages_walk_the_whole_log_once(
    harness: Harness, admin_client: httpx.AsyncClient
) -> None:
    """V16.2.1-style records are searchable by the admin, newest first, in pages of at most 200."""
    admin = harness.bearer(await harness.admin())
    start = harness.clock.now()
    await write_events(harness.app.state.db, harness.clock, 250)
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": "100", "tag": "auth:login"} | ({"cursor": cursor} if cursor else {})
        page = await admin_client.get(URL, params=params, headers=admin)
        assert page.status_code == 200, page.text
        body = page.json()
        assert all(item["tag"] == "auth:login" for item in body["items"])
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen, reverse=True)
    assert len(seen) == len(set(seen))
    assert len(seen) >= 250 // 4  # every fourth event of write_events is a sign-in, plus the admin's own

    failures = (await admin_client.get(URL, params={"outcome": "failure", "limit": "200"}, headers=admin)).json()
    assert failures["items"]
    assert all(item["outcome"] == "failure" for item in failures["items"])
    one = failures["items"][0]
    by_actor = (await admin_client.get(URL, params={"actor": one["actor_id"]}, headers=admin)).json()["items"]
    assert by_actor
    assert all(item["actor_id"] == one["actor_id"] for item in by_actor)
    later = format_at(start + dt.timedelta(days=1))
    assert (await admin_client.get(URL, params={"since": later}, headers=admin)).json()["items"] == []
    assert (await admin_client.get(URL, params={"until": format_at(start)}, headers=admin)).json()["items"] == []


async def test_bad_parameters_are_422_and_the_cursor_cannot_be_forged_wider(
    harness: Harness, admin_client: httpx.AsyncClient
) -> None:
    admin = harness.bearer(await harness.admin())
    forged = base64.urlsafe_b64encode(b"a1:1 OR 1=1").decode()
    for params in (
        {"limit": "201"},
        {"limit": "0"},
        {"cursor": "not-a-cursor"},
        {"cursor": forged},
        {"outcome": "maybe"},
        {"actor": "not-a-uuid"},
        {"since": "2026-01-01T00:00:00"},  # no zone
        {"tag": "x' OR '1'='1"},
    ):
        answer = await admin_client.get(URL, params=params, headers=admin)
        assert answer.status_code == 422, (params, answer.text)


async def test_only_admins_with_two_factors_read_it(harness: Harness, admin_client: httpx.AsyncClient) -> None:
    """V8.2.1: the audit log is an admin function, behind MFA, on the admin listener only."""
    user = harness.bearer(await harness.signed_in("user@example.com"))
    assert (await admin_client.get(URL, headers=user)).status_code == 403
    no_mfa = harness.bearer(await harness.admin("admin2@example.com", mfa=False))
    assert (await admin_client.get(URL, headers=no_mfa)).status_code in {401, 403}
    assert (await admin_client.get(URL)).status_code == 401
    admin = harness.bearer(await harness.admin())
    assert (await harness.client.get(URL, headers=admin)).status_code == 404  # not on the public listener
