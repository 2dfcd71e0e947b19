"""The rotation job: scheduled key rotations that fail no token, the resumable
background rewrap, expiry reminders (API keys, OAuth client secrets) sent once,
file changes reloaded. Time is
the injected clock's: thirty days pass without waiting."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from bastion.audit import EventTag
from bastion.audit.models import AuditEvent
from bastion.clock import FrozenClock
from bastion.db import Database, open_database, transaction
from bastion.identity.models import User
from bastion.mail import Postman, build_mailer
from bastion.oauth.clients import ClientRegistry
from bastion.oauth.models import OAuthClient
from bastion.rewrap import count_database
from bastion.rotation.job import RotationJob
from bastion.rotation.models import RotationNotice
from bastion.rotation.reload import FileReloader
from bastion.rotation.reminders import CLIENT_SECRET
from bastion.rotation.rewrap import rewrap_pending
from bastion.secrets import Keyrings, open_keyrings
from bastion.security import InvalidToken, TokenSigner
from bastion.settings import Settings
from factories import unit_of_work
from factories.data import COLLECTIONS
from factories.oauth_clients import NATIVE_APP, register_client
from harness import Harness

PUBLISH, TTL = 300, 900


async def _events(db: Database, tag: EventTag) -> list[Any]:
    return list(await db.all(sa.select(AuditEvent).where(AuditEvent.tag == tag.value).order_by(AuditEvent.id)))


def _job(settings: Settings, clock: FrozenClock, db: Database, rings: Keyrings, **options: Any) -> RotationJob:
    return RotationJob(settings, clock, db, rings, Postman(build_mailer(settings)), **options)


def _reloader(settings: Settings, db: Database, **options: Any) -> FileReloader:
    reloads: list[int] = []
    reloaded = asyncio.Event()

    def reload() -> bool:
        reloads.append(1)
        reloaded.set()
        return True

    reloader = FileReloader(settings, FrozenClock(), db, reload=reload, **options)
    reloader.reloads, reloader.reloaded = reloads, reloaded  # type: ignore[attr-defined]
    return reloader


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = open_database(settings.sqlalchemy_url)
    yield database
    await database.close()


async def test_a_token_signed_before_a_scheduled_rotation_verifies_after_it(settings: Settings, db: Database) -> None:
    """V11.6.1 (key rotation on a schedule), V9.1.2: the signing keys rotate once older
    than [rotation] signing_every, as `keys rotate` does: the new keys are published at
    once and sign only after the publish delay, and a token the old key signed just
    before the rotation verifies after it, in this process and in another one, until
    its own expiry; the rotation is three KEY_ROTATE events marked scheduled."""
    job_rings, server_rings = open_keyrings(settings), open_keyrings(settings)
    created = job_rings.signing.kids()[-1].created_at
    clock = FrozenClock(created + dt.timedelta(seconds=settings.rotation.signing_every) - dt.timedelta(minutes=5))
    server = TokenSigner(
        server_rings.signing_keyrings(), issuer="https://bastion.test", publish_seconds=PUBLISH,
        max_ttl_seconds=TTL, key_check_seconds=0,
    )  # fmt: skip
    old_kid = server_rings.signing.active_kid
    now = int(clock.now().timestamp())
    tokens = {alg: server.sign({"sub": "u"}, now=now, ttl_seconds=TTL, alg=alg) for alg in server.algorithms}
    job = _job(settings, clock, db, job_rings)

    assert await job.rotate_due(clock.now()) == [], "rotated before its time"
    clock.advance(minutes=6)
    rotated = await job.rotate_due(clock.now())
    assert len(rotated) == 3  # EdDSA, RS256, ES256: one rotation of the JWKS
    assert await job.rotate_due(clock.now()) == [], "a second tick rotated again"

    now = int(clock.now().timestamp())
    published = {key["kid"] for key in server.public_jwks(now=now)["keys"]}
    assert set(rotated) <= published, "a new key was not published before it signs"
    assert server.signing_kid("EdDSA", now=now) == old_kid, "a new key signed before verifiers could know it"
    other_process = TokenSigner(
        open_keyrings(settings).signing_keyrings(), issuer="https://bastion.test", publish_seconds=PUBLISH,
        max_ttl_seconds=TTL, key_check_seconds=0,
    )  # fmt: skip
    for signer in (server, other_process):
        for token in tokens.values():
            assert signer.verify(token, now=now)["sub"] == "u"
    # After the publish delay the new key signs; the old token still verifies until it expires.
    later = now + PUBLISH + 1
    assert server.signing_kid("EdDSA", now=later) == rotated[0]
    assert server.verify(tokens["EdDSA"], now=later)["sub"] == "u"
    with pytest.raises(InvalidToken):
        server.verify(tokens["EdDSA"], now=now + TTL + 60)  # its own expiry, not the rotation, ends it
    events = await _events(db, EventTag.KEY_ROTATE)
    assert [(e.details["purpose"], e.details["scheduled"]) for e in events] == [
        ("signing", True), ("signing-rs256", True), ("signing-es256", True),
    ]  # fmt: skip
    assert events[0].details["previous"] == old_kid


async def test_encryption_and_notary_rotate_on_their_own_schedules_and_hmac_does_not(
    settings: Settings, db: Database
) -> None:
    """V11.6.1: a year on, encryption and notary keys rotate (and signing, due too);
    the hmac keyring, whose blind indexes would all miss, is left for the operator."""
    rings = open_keyrings(settings)
    hmac_kid = rings.hmac.active_kid
    clock = FrozenClock(rings.encryption.kids()[-1].created_at + dt.timedelta(days=366))
    rotated = await _job(settings, clock, db, rings).rotate_due(clock.now())
    purposes = {e.details["purpose"] for e in await _events(db, EventTag.KEY_ROTATE)}
    assert purposes == {"signing", "signing-rs256", "signing-es256", "encryption", "notary"}
    assert len(rotated) == 5
    assert open_keyrings(settings).hmac.active_kid == hmac_kid


async def test_a_changed_certificate_is_recorded_and_reloaded_once_it_loads(settings: Settings, db: Database) -> None:
    """V12.1.1 (certificates renewed without downtime): a replaced certificate is applied
    once the files have settled for a tick and the pair loads (a key not written yet, or
    garbage, reloads nothing: a worker would fail on it), as one ROTATION_RELOAD event and
    one signal to the listeners."""
    job = _reloader(settings, db)
    assert await job.reload_changed() == []
    cert, key = settings.cert_file, settings.key_file
    good_key = key.read_bytes()
    replacement = cert.with_suffix(".new")
    replacement.write_bytes(cert.read_bytes())
    replacement.replace(cert)  # as certbot or a mounted secret does: a new file under the name
    key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot yet\n-----END PRIVATE KEY-----\n")
    assert await job.reload_changed() == []  # seen changing: wait a tick
    assert await job.reload_changed() == []  # settled, but the pair does not load
    assert job.reloads == []  # type: ignore[attr-defined]
    key.write_bytes(good_key)
    assert await job.reload_changed() == []
    assert await job.reload_changed() == ["server.cert_file", "server.key_file"]
    assert await job.reload_changed() == []
    assert job.reloads == [1]  # type: ignore[attr-defined]
    events = await _events(db, EventTag.ROTATION_RELOAD)
    assert [e.details["files"] for e in events] == [["server.cert_file", "server.key_file"]]


# --- with the app: records to rewrap, API keys and client secrets to remind of -------


@pytest.fixture
def harness_settings() -> dict[str, Any]:
    return {"collections": COLLECTIONS}


async def test_a_rewrap_interrupted_midway_resumes_and_finishes(harness: Harness) -> None:
    """V11.6.1 (rewrap after rotation, resumable): after an encryption rotation the job
    moves every sealed value in slices; a slice cut short (or a process that dies)
    leaves committed batches under the new key, a new job resumes from what the kids
    say, finishes, and writes one KEYS_REWRAP event; every record still reads. Twelve
    owners: each one's encrypted fields are under their data key, and the keyring seals
    the twelve wrapped data keys."""
    users = [await harness.signed_in(f"owner{i}@example.com") for i in range(12)]
    created = [
        (user, await harness.create(user, "notes", {"title": f"n{i}", "secret": f"s{i}"}))
        for i, user in enumerate(users)
    ]
    state = harness.app.state
    db, rings, clock = state.db, state.keys, harness.clock
    old = rings.encryption.active_kid
    new = rings.encryption.rotate(at=clock.now())
    assert await rewrap_pending(db, rings) == new

    first = _job(harness.settings, clock, db, rings, slice_seconds=0, rewrap_batch=5)
    assert await first.rewrap_step() is False  # the slice ends after one batch
    counts = await count_database(db, rings)
    assert counts[new] == 5
    assert counts[old] == 7
    assert await _events(db, EventTag.KEYS_REWRAP) == []

    # "The process died": a new job, as another instance taking the lease over.
    second = _job(harness.settings, clock, db, rings, rewrap_batch=5)
    assert await second.rewrap_step() is True
    counts = await count_database(db, rings)
    assert counts == {new: 12}
    events = await _events(db, EventTag.KEYS_REWRAP)
    assert len(events) == 1
    assert events[0].details["kid"] == new
    assert events[0].details["rewrapped"] == 7  # the completing walk skipped what the first slice did
    assert await rewrap_pending(db, rings) is None
    assert await second.rewrap_step() is False
    for user, note in created:
        response = await harness.client.get(f"{harness.records('notes')}/{note['id']}", headers=harness.bearer(user))
        assert response.json()["secret"] == note["secret"]


async def _api_key(harness: Harness, user: dict[str, Any], name: str, expires: dt.datetime) -> str:
    response = await harness.client.post(
        "/api/v1/me/api-keys",
        json={"name": name, "scopes": ["records:read"], "expires_at": expires.isoformat()},
        headers=harness.bearer(user),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_an_expiry_reminder_is_sent_exactly_once_with_two_jobs_racing(harness: Harness) -> None:
    """V13.3.4 (secrets rotated before they expire; the owner told in time), counted under
    concurrency: two rotation jobs on two Database objects tick at once, twice over; the
    owner of a key expiring within remind_before gets one mail and one ROTATION_REMIND
    event, the owner of a later key none, and a revoked key's owner none."""
    user = await harness.signed_in("alice@example.com")
    clock = harness.clock
    soon = await _api_key(harness, user, "deploy", clock.now() + dt.timedelta(days=10))
    await _api_key(harness, user, "later", clock.now() + dt.timedelta(days=60))
    revoked = await _api_key(harness, user, "gone", clock.now() + dt.timedelta(days=3))
    assert (
        await harness.client.delete(f"/api/v1/me/api-keys/{revoked}", headers=harness.bearer(user))
    ).status_code == 204
    settings = harness.settings
    await _two_jobs_race_twice(settings, clock)
    mails = [m for m in await harness.mails("alice@example.com") if "expires soon" in str(m["subject"])]
    assert len(mails) == 1
    assert "'deploy'" in str(mails[0]["subject"])
    assert soon in mails[0].get_content()
    db = harness.app.state.db
    events = await _events(db, EventTag.ROTATION_REMIND)
    assert [e.details["id"] for e in events] == [soon]
    assert len(await db.all(sa.select(RotationNotice))) == 1


async def _two_jobs_race_twice(settings: Settings, clock: FrozenClock) -> None:
    """Two rotation jobs, each on a Database object of its own, tick at once, twice over
    (fresh jobs the second time, so the next check is due), then hand their mail over."""
    databases = [open_database(settings.sqlalchemy_url) for _ in range(2)]
    jobs = [_job(settings, clock, db, open_keyrings(settings)) for db in databases]
    try:
        for _ in range(2):
            await asyncio.gather(*(job.tick() for job in jobs))
            jobs = [_job(settings, clock, db, open_keyrings(settings)) for db in databases]
        for job in jobs:
            await job.postman.drain()
    finally:
        for db in databases:
            await db.close()
    await asyncio.sleep(0.1)  # the jobs' postmen hand over after HANDOFF_SECONDS


async def _client_secret(
    harness: Harness, name: str, expires_at: dt.datetime, owner: uuid.UUID | None = None, *, disabled: bool = False
) -> str:
    """A client registered as the CLI does, owned by ``owner`` (set as ``oauth client set-owner``
    sets it), its secret expiring at ``expires_at`` (as if issued a lifetime before)."""
    client, _ = await register_client(harness.app, name=name)
    if owner is not None:
        async with unit_of_work(harness.app) as uow:
            assert await ClientRegistry.of(harness.app.state).set_owner(uow, client.id, owner)
    async with transaction(harness.app.state.db) as tx:
        changed = {"secret_expires_at": expires_at}
        await tx.execute(sa.update(OAuthClient).where(OAuthClient.id == client.id).values(**changed))
        if owner is not None and disabled:
            await tx.execute(sa.update(User).where(User.id == owner).values(disabled=True))
    return client.id


async def test_a_client_secret_reminder_goes_once_to_its_owner_or_the_security_contacts(harness: Harness) -> None:
    """V6.4.5 (renewal instructions sent in time, automated reminders), V13.3.4 (secrets
    expire and are rotated), counted under concurrency: two rotation jobs on two Database
    objects tick at once, twice over. A client whose secret expires within remind_before
    gets exactly one reminder: one mail to its owner, or, with no owner or a disabled one,
    one to each alerts.mail_to address, naming the client, its expiry and the command to
    rotate; one ROTATION_REMIND event and one notice each. A client whose secret expires
    later, a public client, and a secret already expired get none."""
    settings = harness.settings
    contacts = ["security@example.com", "oncall@example.com"]
    job_settings = settings.model_copy(update={"alerts": settings.alerts.model_copy(update={"mail_to": contacts})})
    clock = harness.clock
    soon = clock.now() + dt.timedelta(days=10)  # within remind_before (14 days)
    alice, bob = await harness.user("alice@example.com"), await harness.user("bob@example.com")
    owned = await _client_secret(harness, "Billing", soon, alice.id)
    ownerless = await _client_secret(harness, "Self-registered", soon)
    abandoned = await _client_secret(harness, "Abandoned", soon, bob.id, disabled=True)
    await _client_secret(harness, "Later", clock.now() + dt.timedelta(days=60), alice.id)
    await _client_secret(harness, "Gone", clock.now() - dt.timedelta(days=1), alice.id)
    await register_client(harness.app, NATIVE_APP)  # public: no secret, no expiry

    await _two_jobs_race_twice(job_settings, clock)

    def reminders(mails: list[Any]) -> list[Any]:
        return [m for m in mails if "expires soon" in str(m["subject"])]

    to_alice = reminders(await harness.mails("alice@example.com"))
    assert len(to_alice) == 1
    assert "'Billing'" in str(to_alice[0]["subject"])
    text = to_alice[0].get_content()
    assert owned in text
    assert f"bastion oauth client rotate-secret {owned}" in text
    assert f"{soon:%Y-%m-%d %H:%M} UTC" in text
    assert "alerts.mail_to" not in text
    assert reminders(await harness.mails("bob@example.com")) == []  # disabled: the contacts are told
    for address in contacts:
        mails = reminders(await harness.mails(address))
        assert sorted(str(m["subject"]) for m in mails) == sorted(
            f"The secret of the {settings.auth.service_name} OAuth client {name!r} expires soon"
            for name in ("Self-registered", "Abandoned")
        )
        assert all("alerts.mail_to" in m.get_content() for m in mails)
    db = harness.app.state.db
    events = await _events(db, EventTag.ROTATION_REMIND)
    assert sorted((e.details["kind"], e.details["id"], e.details["to"]) for e in events) == sorted(
        [(CLIENT_SECRET, owned, "owner"), (CLIENT_SECRET, ownerless, "alerts.mail_to"),
         (CLIENT_SECRET, abandoned, "alerts.mail_to")]
    )  # fmt: skip
    assert {e.subject_id for e in events if e.details["id"] == owned} == {alice.id}
    notices = await db.all(sa.select(RotationNotice.kind, RotationNotice.object_id, RotationNotice.expires_at))
    assert sorted(tuple(n) for n in notices) == sorted((CLIENT_SECRET, c, soon) for c in (owned, ownerless, abandoned))


async def test_serve_runs_the_rotation_job_once_cluster_wide_unless_turned_off(make_settings: Any) -> None:
    """The job is one of serve's LeasedLoops, named "rotation"; [rotation] enabled = false leaves it out."""
    from bastion.clock import SystemClock
    from bastion.db.leases import LeasedLoop
    from bastion.runtime import build_services

    for enabled in (True, False):
        services = build_services(make_settings(rotation={"enabled": enabled}), SystemClock())
        try:
            names = [job.name for job in services.jobs if isinstance(job, LeasedLoop)]
            assert names.count("rotation") == (1 if enabled else 0)
        finally:
            await services.close()


async def test_every_process_reloads_its_own_files_without_the_lease(settings: Settings, db: Database) -> None:
    """V12.1.1: the file watch is each process's own loop (no lease): two of them, as two
    instances, both see a changed certificate and both reload."""
    one, two = _reloader(settings, db, interval=0.01), _reloader(settings, db, interval=0.01)
    await one.start()
    await two.start()
    try:
        replacement = settings.cert_file.with_suffix(".new")
        replacement.write_bytes(settings.cert_file.read_bytes())
        replacement.replace(settings.cert_file)
        async with asyncio.timeout(10):
            await one.reloaded.wait()  # type: ignore[attr-defined]
            await two.reloaded.wait()  # type: ignore[attr-defined]
    finally:
        await one.stop()
        await two.stop()
    assert one.reloads == two.reloads == [1]  # type: ignore[attr-defined]
    assert len(await _events(db, EventTag.ROTATION_RELOAD)) == 2  # each instance says it reloaded
