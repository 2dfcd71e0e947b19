"""Erasure (GDPR art. 17) from the outside: DELETE /api/v1/me, the admin API and
``bastion user erase``; what is left afterwards (nothing of the user, in any
table, the file or its log), what a wrong answer leaves (everything), and two
erasures at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from bastion.audit.models import AuditEvent
from bastion.audit.verify import verify_log
from bastion.cli import app as cli
from bastion.clock import FrozenClock
from bastion.data.models import USER_KEYS
from bastion.db import Base
from bastion.identity.models import User
from bastion.privacy import erasure
from bastion.privacy.ledger import catch_up, ledger_path, read_ledger, recorded_lines
from bastion.secrets import open_keyrings
from factories.access import create_api_key
from factories.identity import create_user, enable_totp, sign_in
from harness import PASSWORD, DataHarness, open_harness

PLANTED = "PLANTED-ERASE-ME-93c1d7"
runner = CliRunner()


pytestmark = pytest.mark.clock_now  # the audit tree (verified here) orders events by time; the CLI's are dated now


async def _id(tokens: dict[str, Any], data: DataHarness) -> uuid.UUID:
    return uuid.UUID((await data.client.get("/api/v1/me", headers=data.bearer(tokens))).json()["id"])


async def _user_rows(data: DataHarness, user_id: uuid.UUID) -> dict[str, int]:
    """Rows naming ``user_id`` in any table with a column pointing at users.id, plus the audit log's."""
    db = data.app.state.db
    found: dict[str, int] = {}
    tables = [*Base.metadata.tables.values(), *(c.table for c in data.app.state.data.catalog.collections.values())]
    for table in tables:
        for column in table.columns:
            if any(fk.target_fullname == "users.id" for fk in column.foreign_keys) or table.name == "users":
                key = column if table.name != "users" else table.c.id
                count = await db.value(sa.select(sa.func.count()).select_from(table).where(key == user_id))
                if count:
                    found[f"{table.name}.{column.name}"] = count
    naming = sa.or_(AuditEvent.actor_id == user_id, AuditEvent.subject_id == user_id)
    events = await db.value(sa.select(sa.func.count()).select_from(AuditEvent).where(naming))
    if events:
        found["audit_events"] = events
    return found


async def _erase_me(data: DataHarness, tokens: dict[str, Any], body: dict[str, Any]) -> httpx.Response:
    return await data.client.request("DELETE", "/api/v1/me", json=body, headers=data.bearer(tokens))


async def test_delete_me_leaves_nothing_of_the_user_and_everything_of_others(data: DataHarness) -> None:
    """V14.2.7, V7.4.2 (GDPR art. 17): after DELETE /api/v1/me no table holds a row of the
    user, their tokens and keys stop working, their audit events keep only a pseudonym,
    the ledger has their line, a mail confirms it; Bob's records and fields read back."""
    note = await data.create(data.alice, "notes", {"title": PLANTED, "secret": PLANTED})
    await data.create(data.alice, "things", {"ssn": "111-22", "note": note["id"]})
    bobs = await data.create(data.bob, "things", {"ssn": "bob's ssn"})
    alice = await _id(data.alice, data)
    account = await data.app.state.identity.by_id(data.app.state.db, alice)
    api_key = await create_api_key(data.app, account)
    other_session = await sign_in(data.app, account)
    assert await _user_rows(data, alice)  # the check sees the rows before
    log = data.app.state.audit
    await log.stop()  # the test decides when the tree grows
    await log.sequence_now()
    await log.checkpoint_now()

    response = await _erase_me(data, data.alice, {"password": PASSWORD})
    assert response.status_code == 204, response.text

    assert await _user_rows(data, alice) == {}
    for credential in (data.alice, other_session, api_key):
        assert (await data.client.get("/api/v1/me", headers=data.bearer(credential))).status_code == 401
    login = {"email": "alice@example.com", "password": PASSWORD}
    assert (await data.client.post("/api/v1/auth/login", json=login)).status_code == 401
    refreshed = await data.client.post("/api/v1/auth/refresh", json={"refresh_token": data.alice["refresh_token"]})
    assert refreshed.status_code == 401

    erased = await data.app.state.db.all(sa.select(AuditEvent).where(AuditEvent.tag == "privacy:erase"))
    assert [(e.outcome, e.actor_id, e.subject_id) for e in erased] == [("success", None, None)]
    entries = read_ledger(ledger_path(data.settings).read_bytes(), open_keyrings(data.settings))
    assert [f"{e.kid}:{e.pseudonym}" for e in entries] == [erased[0].details["pseudonym"]]
    assert str(alice) not in ledger_path(data.settings).read_text()
    assert any("erased" in str(m["subject"]) for m in await data.mails("alice@example.com"))

    read = await data.client.get(f"{data.records('things')}/{bobs['id']}", headers=data.bearer(data.bob))
    assert read.status_code == 200
    assert read.json()["ssn"] == "bob's ssn"

    # V16.4.2: the audit tree still verifies; the user's events say only who, by pseudonym.
    await log.sequence_now()
    await log.checkpoint_now()
    report = await verify_log(
        data.app.state.db, data.app.state.keys.hmac, log.notary.vkeys(), origin=log.origin, now=data.clock.now()
    )
    assert report.intact, report.findings
    redacted = await data.app.state.db.all(sa.select(AuditEvent).where(AuditEvent.redacted_at.is_not(None)))
    assert redacted
    assert {e.details["pseudonym"] for e in redacted} == {erased[0].details["pseudonym"]}


async def test_a_wrong_answer_or_a_delegated_credential_erases_nothing(data: DataHarness) -> None:
    """V7.5.1, V6.3.1: re-authentication: a wrong password, a missing or wrong second factor (generic 401),
    an API key or a malformed body (403/422) leave the account and its records as they were."""
    await data.create(data.alice, "notes", {"title": "kept", "secret": PLANTED})
    alice = await _id(data.alice, data)
    account = await data.app.state.identity.by_id(data.app.state.db, alice)
    api_key = await create_api_key(data.app, account)
    before = await _user_rows(data, alice)

    assert (await _erase_me(data, data.alice, {"password": "not the password"})).status_code == 401
    assert (await _erase_me(data, api_key, {"password": PASSWORD})).status_code == 403
    assert (await _erase_me(data, data.alice, {"password": PASSWORD, "extra": 1})).status_code == 422
    assert (await _erase_me(data, data.alice, {})).status_code == 422

    carol = await create_user(data.app, "carol@example.com")
    secret = await enable_totp(data.app, carol)
    data.clock.advance(seconds=30)
    carol_tokens = await sign_in(data.app, carol)
    assert (await _erase_me(data, carol_tokens, {"password": PASSWORD})).status_code == 401
    assert (await _erase_me(data, carol_tokens, {"password": PASSWORD, "code": "000000"})).status_code == 401
    kept = (await _user_rows(data, alice), await _user_rows(data, carol.id))
    assert kept[0].keys() >= before.keys()
    assert "users.id" in kept[1]
    listed = await data.client.get(data.records("notes"), headers=data.bearer(data.alice))
    assert [item["secret"] for item in listed.json()["items"]] == [PLANTED]
    assert not ledger_path(data.settings).exists()

    # The right password and code erase the account with two factors on.
    code = data.totp(secret)
    response = await _erase_me(data, carol_tokens, {"password": PASSWORD, "code": code})
    assert response.status_code == 204, response.text
    assert await _user_rows(data, carol.id) == {}


async def test_two_erasures_at_once_one_succeeds_and_the_other_changes_nothing(data: DataHarness) -> None:
    """Counted things under concurrency: two DELETE /api/v1/me (and an admin erase) at
    once: one 204, the others refused, one privacy:erase success, one ledger line."""
    await data.create(data.alice, "notes", {"title": "t", "secret": PLANTED})
    alice = await _id(data.alice, data)
    answers = await asyncio.gather(
        _erase_me(data, data.alice, {"password": PASSWORD}),
        _erase_me(data, data.alice, {"password": PASSWORD}),
    )
    assert sorted(r.status_code for r in answers) == [204, 401]
    erased = await data.app.state.db.all(
        sa.select(AuditEvent).where(AuditEvent.tag == "privacy:erase", AuditEvent.outcome == "success")
    )
    assert len(erased) == 1
    assert len(ledger_path(data.settings).read_text().splitlines()) == 1
    assert await _user_rows(data, alice) == {}


async def test_nothing_readable_is_left_in_the_sqlite_file_or_its_log(data: DataHarness) -> None:
    """V14.2.7: secure_delete zeroes the deleted rows and the log is truncated after the
    erasure: a plaintext (a plain title, and the address) planted before is in no byte of
    bastion.db or bastion.db-wal afterwards."""
    if data.settings.database_url is not None:
        pytest.skip("the raw-file scan is SQLite's; PostgreSQL's dead tuples: docs/privacy.md")
    await data.create(data.alice, "notes", {"title": PLANTED, "secret": "s"})
    await data.create(data.alice, "things", {"name": PLANTED, "text": PLANTED})
    files = sorted(data.settings.data_dir.glob("bastion.db*"))

    def stored() -> bytes:
        return b"".join(path.read_bytes() for path in files if path.exists())

    assert PLANTED.encode() in stored()
    assert b"alice@example.com" in stored()
    assert (await _erase_me(data, data.alice, {"password": PASSWORD})).status_code == 204
    assert PLANTED.encode() not in stored()
    assert b"alice@example.com" not in stored()
    wal = data.settings.data_dir / "bastion.db-wal"
    assert not wal.exists() or wal.stat().st_size < 1024 * 1024


async def test_admin_erase_and_its_refusals(data: DataHarness) -> None:
    """The admin API's erase: an MFA admin only (403 otherwise), 404 for no such user,
    409 for the admin's own account; the admin is the event's actor."""
    alice = await _id(data.alice, data)
    url = f"/admin/api/v1/users/{alice}/erase"
    admin = data.bearer(await data.admin())
    assert data.admin_client is not None
    assert (await data.admin_client.post(url, headers=data.bearer(data.bob))).status_code == 403
    me = (await data.client.get("/api/v1/me", headers=admin)).json()["id"]
    assert (await data.admin_client.post(f"/admin/api/v1/users/{me}/erase", headers=admin)).status_code == 409
    response = await data.admin_client.post(url, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["pseudonym"].count(":") == 1
    assert (await data.admin_client.post(url, headers=admin)).status_code == 404
    assert await _user_rows(data, alice) == {}
    event = await data.app.state.db.one(sa.select(AuditEvent).where(AuditEvent.tag == "privacy:erase"))
    assert str(event.actor_id) == me


async def test_cli_user_erase(data: DataHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    """``bastion user erase EMAIL``: --yes or a terminal confirmation, else exit 2 and nothing erased;
    an unknown address is one line and exit 2."""
    monkeypatch.setenv("BASTION_DATABASE_URL", data.settings.sqlalchemy_url)
    alice = await _id(data.alice, data)
    args = ["user", "erase", "alice@example.com", "--data-dir", str(data.settings.data_dir)]

    def invoke(*extra: str) -> tuple[int, str]:
        result = runner.invoke(cli, [*args, *extra])
        return result.exit_code, result.stdout + result.stderr

    code, output = await asyncio.to_thread(invoke)
    assert code == 2
    assert "--yes" in output
    assert await data.app.state.db.value(sa.select(sa.func.count()).select_from(User).where(User.id == alice)) == 1
    code, output = await asyncio.to_thread(invoke, "--yes")
    assert code == 0, output
    assert "erased alice@example.com" in output
    assert await _user_rows(data, alice) == {}
    assert await data.app.state.db.value(sa.select(sa.func.count()).select_from(USER_KEYS)) == 0
    code, output = await asyncio.to_thread(invoke, "--yes")
    assert code == 2
    # (the serving harness's own log lines share the captured output; the command's is the last)
    assert output.strip().splitlines()[-1] == "error: no user with email alice@example.com"


async def test_scrub_completes_on_both_databases(data: DataHarness) -> None:
    """The scrub an erasure ends with (SQLite: the log truncated; PostgreSQL: VACUUM of the
    tables) runs to completion here, not into the warning an erasure would only log."""
    await data.create(data.alice, "notes", {"title": PLANTED, "secret": "s"})
    tables = ["users", "user_keys", data.app.state.data.catalog.collections["notes"].table.name]
    assert await data.app.state.db.scrub(tables) is True
    if data.settings.database_url is None:
        assert (data.settings.data_dir / "bastion.db-wal").stat().st_size == 0


async def test_records_written_while_the_owner_is_erased_do_not_outlive_them(data: DataHarness) -> None:
    """V14.2.7 under concurrency: creates racing the erasure either land before it (and are
    erased with the rest) or are refused; no record of the user is left behind."""
    await data.create(data.alice, "notes", {"title": "first", "secret": "s"})
    alice = await _id(data.alice, data)

    async def write(i: int) -> int:
        body = {"title": f"racing {i}", "secret": PLANTED}
        response = await data.client.post(data.records("notes"), json=body, headers=data.bearer(data.alice))
        return response.status_code

    erase = _erase_me(data, data.alice, {"password": PASSWORD})
    results = await asyncio.gather(erase, *(write(i) for i in range(12)))
    assert results[0].status_code == 204
    # 201: written before the erasure (and erased with the rest); 401: after it. On
    # PostgreSQL a write that waited on the erasure's delete of the key can also meet
    # the account's foreign key gone: that is 401 too, never a 500. The order of the locks
    # (key, then account) is the same on both sides, so the two never deadlock.
    assert set(results[1:]) <= {201, 401}
    assert await _user_rows(data, alice) == {}
    notes = data.app.state.data.catalog.collections["notes"].table
    assert await data.app.state.db.value(sa.select(sa.func.count()).select_from(notes)) == 0


async def test_writes_racing_the_erasure_are_refused_as_the_owner_gone(
    data: DataHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """V16.5.3, V14.2.7: writes that start while the erasure's transaction is open (the
    account, key and records deleted, not yet committed) are all refused with one answer,
    the owner's 401 as if their session were gone: plain creates (whose foreign key to the
    account then fails: a 500 before), plain updates (whose record is gone: a 200 for
    nothing before) and encrypted creates alike. Nothing of the user is left afterwards."""
    first = await data.create(data.alice, "notes", {"title": "first"})
    alice = await _id(data.alice, data)
    url = data.records("notes")

    def writes() -> list[Awaitable[httpx.Response]]:
        # Eight: with the erasure's, as many as PostgreSQL's pool holds, so each write's
        # sign-in runs before the commit (a later one is refused as a session that ended).
        headers = data.bearer(data.alice)
        plain = [data.client.post(url, json={"title": f"plain {i}"}, headers=headers) for i in range(4)]
        edits = [
            data.client.patch(f"{url}/{first['id']}", json={"title": f"edit {i}"}, headers=headers) for i in range(2)
        ]
        sealed = [data.client.post(url, json={"title": "s", "secret": PLANTED}, headers=headers) for _ in range(2)]
        return [*plain, *edits, *sealed]

    racing: list[asyncio.Task[httpx.Response]] = []
    real = erasure.remove_account

    async def held_open(tx: Any, **kwargs: Any) -> Any:
        removal = await real(tx, **kwargs)
        # The writes start now and get as far as they can (signed in: the deletes are not
        # committed; SQLite: queued for the writer; PostgreSQL: the insert waits on the
        # account's row lock, the update on the record's) before this transaction commits.
        racing.extend(asyncio.ensure_future(write) for write in writes())
        await asyncio.sleep(0.4)
        return removal

    monkeypatch.setattr(erasure, "remove_account", held_open)
    assert (await _erase_me(data, data.alice, {"password": PASSWORD})).status_code == 204
    results = await asyncio.gather(*racing)
    assert [r.status_code for r in results] == [401] * len(results), [r.text for r in results if r.status_code != 401]
    answers = {(r.headers["www-authenticate"], *sorted({**r.json(), "request_id": ""}.items())) for r in results}
    assert len(answers) == 1  # plain and encrypted: the same problem
    assert await _user_rows(data, alice) == {}
    notes = data.app.state.data.catalog.collections["notes"].table
    assert await data.app.state.db.value(sa.select(sa.func.count()).select_from(notes)) == 0


async def test_an_unwritable_ledger_still_erases_and_its_line_is_appended_later(data: DataHarness) -> None:
    """V16.3.4, V14.2.7: the ledger cannot be written (here its path is a directory): the
    erasure still answers 204 and mails, and a failed ``privacy:erase`` event says so. Once the
    ledger can be written, ``catch_up`` (serve's start, each retention run, each backup) appends
    the signed line the erasure committed, once, and it names the erased user's pseudonym."""
    path = ledger_path(data.settings)
    path.mkdir()
    response = await _erase_me(data, data.alice, {"password": PASSWORD})
    assert response.status_code == 204, response.text
    assert any("erased" in str(m["subject"]) for m in await data.mails("alice@example.com"))
    events = await data.app.state.db.all(sa.select(AuditEvent).where(AuditEvent.tag == "privacy:erase"))
    failed = [e for e in events if e.outcome == "failure"]
    done = [e for e in events if e.outcome == "success"]
    assert (len(failed), len(done)) == (1, 1)
    assert failed[0].details["step"] == "ledger"
    with pytest.raises(IsADirectoryError):
        await catch_up(data.settings, data.app.state.db)  # still a directory: refused, nothing lost
    path.rmdir()
    assert await catch_up(data.settings, data.app.state.db) == 1
    assert await catch_up(data.settings, data.app.state.db) == 0
    entries = read_ledger(path.read_bytes(), open_keyrings(data.settings))
    assert [f"{e.kid}:{e.pseudonym}" for e in entries] == [done[0].details["pseudonym"]]


async def test_a_ledger_line_lost_to_a_crash_is_appended_at_the_next_start_once(
    data: DataHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """V14.2.7 (deleted data stays deleted, even from an older backup's restore): the process dies
    between the erasure's commit and its ledger append (here the append never runs), and a crash
    cut another append short. The next start appends the line the erasure committed in its event,
    after dropping the cut one; two catch-ups at once append it once."""
    monkeypatch.setattr(erasure, "write_lines", lambda settings, lines: 0)
    assert (await _erase_me(data, data.alice, {"password": PASSWORD})).status_code == 204
    monkeypatch.undo()
    path = ledger_path(data.settings)
    assert not path.exists(), "the append never ran"
    db = data.app.state.db
    [line] = await recorded_lines(db)
    path.write_text(line[: len(line) // 2])  # half a line, no newline: an append cut by a crash
    assert sorted(await asyncio.gather(catch_up(data.settings, db), catch_up(data.settings, db))) == [0, 1]
    assert path.read_text() == line + "\n"
    path.unlink()
    async with open_harness(data.settings, FrozenClock(data.clock.now())):
        assert path.read_text() == line + "\n", "serve's start appended it"
    [entry] = read_ledger(path.read_bytes(), open_keyrings(data.settings))
    events = await db.all(sa.select(AuditEvent.details).where(AuditEvent.tag == "privacy:erase"))
    assert f"{entry.kid}:{entry.pseudonym}" == events[0].details["pseudonym"]
