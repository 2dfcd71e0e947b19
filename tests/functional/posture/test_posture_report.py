"""The posture report's findings that need the installation: backups and drills (from the
BACKUP_CREATE / BACKUP_DRILL events the backup commands record), the last audit verification,
open alerts, key ages, OAuth client secrets' expiry and file permissions; on SQLite and
PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

from bastion.audit import EventTag, Origin, Outcome, record_event
from bastion.clock import FrozenClock
from bastion.db import open_database, transaction
from bastion.monitor.models import Alert
from bastion.oauth.models import OAuthClient
from bastion.posture.report import posture_report
from bastion.security.age import new_identity, recipient_of
from bastion.settings import Settings

NOW = dt.datetime(2026, 6, 10, 12, 0, tzinfo=dt.UTC)
SettingsFactory = Callable[..., Settings]


async def _record(settings: Settings, *events: tuple[EventTag, Outcome, dt.datetime, dict[str, Any]]) -> None:
    db = open_database(settings.sqlalchemy_url)
    try:
        for tag, outcome, at, details in events:
            async with transaction(db) as tx:
                record_event(tx, FrozenClock(at), tag, origin=Origin.cli(), outcome=outcome, details=details)
    finally:
        await db.close()


def _by_id(findings: list[Any], prefix: str) -> list[Any]:
    return [f for f in findings if f.setting.startswith(prefix)]


def _recipient() -> str:
    identity, _ = new_identity()
    return recipient_of(identity)


async def test_backup_and_drill_freshness_from_audit_events(make_settings: SettingsFactory) -> None:
    """A backup that stopped running is reported, not assumed. Daily backups at 03:00 and
    weekly drills: one missed run is tolerated, two are a
    warning; a failure after the last success is a warning naming its reason; a
    success after a failure clears it.
    """
    settings = make_settings(backups={"recipients": [_recipient()], "schedule": "0 3 * * *"})
    # Nothing yet: both say so.
    findings = await posture_report(settings, now=NOW)
    assert [f.message for f in _by_id(findings, "backups.")] == [
        "no backup has succeeded yet",
        "no full drill has succeeded yet",
    ]

    # A good backup this morning and a good drill last Sunday: fresh (info only).
    await _record(
        settings,
        (EventTag.BACKUP_CREATE, Outcome.SUCCESS, NOW.replace(hour=3, minute=1), {"id": "b1", "size": 10}),
        (EventTag.BACKUP_DRILL, Outcome.SUCCESS, dt.datetime(2026, 6, 7, 4, 31, tzinfo=dt.UTC), {"full": True}),
    )
    findings = await posture_report(settings, now=NOW)
    assert {f.severity for f in _by_id(findings, "backups.")} == {"info"}

    # Two days on, two daily runs were missed: warning; the drill is still within two weeks.
    later = NOW + dt.timedelta(days=2)
    findings = await posture_report(settings, now=later)
    backup = _by_id(findings, "backups.schedule")
    assert [f.severity for f in backup] == ["warning"]
    assert "two runs" in backup[0].message
    assert [f.severity for f in _by_id(findings, "backups.drill_schedule")] == ["info"]

    # A failed drill after the good one: a warning with the reason.
    await _record(
        settings,
        (EventTag.BACKUP_DRILL, Outcome.FAILURE, NOW + dt.timedelta(hours=1), {"reason": "hash mismatch in users"}),
    )
    drill = _by_id(await posture_report(settings, now=NOW + dt.timedelta(hours=2)), "backups.drill_schedule")
    assert any(f.severity == "warning" and "hash mismatch in users" in f.message for f in drill)

    # Then a good one: cleared.
    await _record(settings, (EventTag.BACKUP_DRILL, Outcome.SUCCESS, NOW + dt.timedelta(hours=3), {"full": True}))
    drill = _by_id(await posture_report(settings, now=NOW + dt.timedelta(hours=4)), "backups.drill_schedule")
    assert [f.severity for f in drill] == ["info"]


async def test_a_signature_only_drill_does_not_count_as_a_restore_drill(make_settings: SettingsFactory) -> None:
    """V14.2.4 (integrity verification of stored data, here a backup shown to restore): a drill that only checked
    the newest backup's signature (serve without drill_identity_file: ``"full": false``) never
    satisfies the drill schedule: when only those are recent, the report warns and says how to get
    a full drill; a full drill that succeeds within the schedule clears it, and a failed full drill
    is not cleared by a later signature-only one."""
    settings = make_settings(backups={"recipients": [_recipient()], "drill_schedule": "30 4 * * 0"})
    sunday = dt.datetime(2026, 6, 7, 4, 31, tzinfo=dt.UTC)

    def drills(now: dt.datetime) -> list[Any]:
        return _by_id(findings_at[now], "backups.drill_schedule")

    findings_at: dict[dt.datetime, list[Any]] = {}

    async def report(now: dt.datetime) -> list[Any]:
        findings_at[now] = await posture_report(settings, now=now)
        return drills(now)

    # Weekly signature-only drills, and never a full one: a warning, not "last good drill".
    await _record(
        settings,
        *[(EventTag.BACKUP_DRILL, Outcome.SUCCESS, sunday - dt.timedelta(weeks=n), {"full": False}) for n in (8, 7, 6)],
    )
    [finding] = await report(sunday - dt.timedelta(weeks=6, days=-1))
    assert finding.severity == "warning"
    assert finding.message == (
        "drills checked signatures only (the latest at 2026-04-26 04:31Z); no full restore drill has succeeded "
        "yet: the backups are not shown to decrypt and restore"
    )
    assert "backups.drill_identity_file" in finding.fix
    assert "bastion backup drill --identity F" in finding.fix

    # Then one full drill, and signature-only ones for five weeks since: still a warning, naming it.
    await _record(
        settings,
        (EventTag.BACKUP_DRILL, Outcome.SUCCESS, sunday - dt.timedelta(weeks=5), {"full": True}),
        *[
            (EventTag.BACKUP_DRILL, Outcome.SUCCESS, sunday - dt.timedelta(weeks=n), {"full": False})
            for n in range(4, -1, -1)
        ],
    )
    [finding] = await report(NOW)
    assert finding.severity == "warning"
    assert finding.message == (
        "drills checked signatures only since the last full restore drill at 2026-05-03 04:31Z (the latest at "
        "2026-06-07 04:31Z): the backups are not shown to decrypt and restore"
    )

    # A full drill within the schedule: fine, though signature-only drills follow it.
    await _record(
        settings,
        (EventTag.BACKUP_DRILL, Outcome.SUCCESS, NOW - dt.timedelta(days=1), {"full": True}),
        (EventTag.BACKUP_DRILL, Outcome.SUCCESS, NOW - dt.timedelta(hours=1), {"full": False}),
    )
    [finding] = await report(NOW)
    assert (finding.severity, finding.message) == ("info", "last good full drill at 2026-06-09 12:00Z")

    # A full drill that failed is not cleared by a signature check after it; a full success clears it.
    later = NOW + dt.timedelta(days=1)
    await _record(
        settings,
        (EventTag.BACKUP_DRILL, Outcome.FAILURE, later, {"full": True, "reason": "hash mismatch in users"}),
        (EventTag.BACKUP_DRILL, Outcome.SUCCESS, later + dt.timedelta(hours=1), {"full": False}),
    )
    found = await report(later + dt.timedelta(hours=2))
    assert [f.severity for f in found] == ["warning", "info"]
    assert "hash mismatch in users" in found[0].message
    await _record(settings, (EventTag.BACKUP_DRILL, Outcome.SUCCESS, later + dt.timedelta(hours=3), {"full": True}))
    assert [f.severity for f in await report(later + dt.timedelta(hours=4))] == ["info"]


async def test_no_recipients_or_no_schedule_is_a_warning(make_settings: SettingsFactory) -> None:
    findings = await posture_report(make_settings(), now=NOW)
    [finding] = _by_id(findings, "backups.")
    assert (finding.severity, finding.setting) == ("warning", "backups.recipients")
    unscheduled = make_settings(backups={"recipients": [_recipient()], "schedule": ""})
    messages = [f.message for f in _by_id(await posture_report(unscheduled, now=NOW), "backups.schedule")]
    assert "backups.schedule is empty: serve runs no scheduled backups" in messages


async def test_audit_verification_and_open_alerts(make_settings: SettingsFactory) -> None:
    """The last `audit verify` that found tampering is an error
    until a later verification passes; an open critical alert is an error, another a warning."""
    settings = make_settings()
    findings = await posture_report(settings, now=NOW)
    assert [f.message for f in _by_id(findings, "audit")] == ["the audit log has never been verified"]

    await _record(
        settings,
        (EventTag.AUDIT_VERIFY, Outcome.SUCCESS, NOW - dt.timedelta(days=10), {"size": 5, "findings": 0}),
        (EventTag.AUDIT_VERIFY, Outcome.FAILURE, NOW - dt.timedelta(days=1), {"first_bad_event": 3, "findings": 1}),
    )
    [audit] = _by_id(await posture_report(settings, now=NOW), "audit")
    assert audit.severity == "error"
    assert "from event 3" in audit.message

    await _record(settings, (EventTag.AUDIT_VERIFY, Outcome.SUCCESS, NOW - dt.timedelta(hours=1), {"size": 9}))
    [audit] = _by_id(await posture_report(settings, now=NOW), "audit")
    assert audit.severity == "info"
    [audit] = _by_id(await posture_report(settings, now=NOW + dt.timedelta(days=8)), "audit")
    assert (audit.severity, audit.message) == ("warning", "the audit log was last verified 8 days ago")

    db = open_database(settings.sqlalchemy_url)
    try:
        async with transaction(db) as tx:
            for rule, severity in (("backup_failed", "critical"), ("credential_stuffing", "high")):
                tx.defer(
                    Alert.__table__.insert(),
                    {"id": uuid.uuid4(), "rule": rule, "severity": severity, "group_key": "global",
                     "status": "open", "first_seen": NOW, "last_seen": NOW, "count": 2, "details": {}},
                )  # fmt: skip
    finally:
        await db.close()
    alerts = {f.setting: f.severity for f in _by_id(await posture_report(settings, now=NOW), "alerts.")}
    assert alerts == {"alerts.backup_failed": "error", "alerts.credential_stuffing": "warning"}


async def _clients(settings: Settings, *clients: tuple[str, str | None, dt.datetime | None]) -> None:
    """Rows of oauth_clients as registration leaves them: (client_id, secret digest, secret expiry)."""
    db = open_database(settings.sqlalchemy_url)
    try:
        async with transaction(db) as tx:
            for client_id, secret_hash, expires_at in clients:
                tx.defer(
                    OAuthClient.__table__.insert(),
                    {"id": client_id, "name": client_id, "secret_hash": secret_hash, "secret_expires_at": expires_at,
                     "public": secret_hash is None, "first_party": False,
                     "token_endpoint_auth_method": "client_secret_basic" if secret_hash else "none",
                     "redirect_uris": [], "post_logout_redirect_uris": [], "grant_types": ["client_credentials"],
                     "scopes": [], "require_par": False, "require_dpop": False, "id_token_alg": "RS256",
                     "access_token_alg": "RS256", "claims": {}, "created_at": NOW - dt.timedelta(days=365)},
                )  # fmt: skip
    finally:
        await db.close()


async def test_client_secrets_expired_or_expiring_within_remind_before(make_settings: SettingsFactory) -> None:
    """V13.3.4 (secrets expire and are rotated): a confidential client whose secret has
    expired is an error (it cannot authenticate), one whose secret expires within
    rotation.remind_before a warning, each naming the client ids and the command to
    rotate; a secret further off and a public client are no finding."""
    settings = make_settings(rotation={"remind_before": "14d"})
    assert _by_id(await posture_report(settings, now=NOW), "oauth.") == []
    await _clients(
        settings,
        ("expired-a", "hmac:k:1", NOW - dt.timedelta(days=2)),
        ("expired-b", "hmac:k:2", NOW),
        ("soon", "hmac:k:3", NOW + dt.timedelta(days=13)),
        ("later", "hmac:k:4", NOW + dt.timedelta(days=15)),
        ("public", None, None),
    )
    expired, expiring = _by_id(await posture_report(settings, now=NOW), "oauth.")
    assert (expired.setting, expired.severity) == ("oauth.client_secret_lifetime", "error")
    assert expired.message.startswith("2 OAuth client secret(s) have expired")
    assert expired.message.endswith(": expired-a, expired-b")
    assert (expiring.severity, expiring.message) == (
        "warning",
        "1 OAuth client secret(s) expire within rotation.remind_before (14 days): soon",
    )
    assert all("bastion oauth client rotate-secret CLIENT_ID" in f.fix for f in (expired, expiring))
    [expired] = _by_id(await posture_report(settings, now=NOW + dt.timedelta(days=20)), "oauth.")
    assert expired.message.endswith(": expired-a, expired-b, soon, later")


async def test_key_ages_against_the_rotation_schedule(make_settings: SettingsFactory) -> None:
    """A key older than its [rotation] interval is reported, read only."""
    settings = make_settings()
    before = {p.name: p.read_bytes() for p in settings.keys_dir.iterdir()}
    assert _by_id(await posture_report(settings, now=dt.datetime.now(dt.UTC)), "rotation.") == []
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=31)
    overdue = _by_id(await posture_report(settings, now=later), "rotation.")
    assert {f.setting for f in overdue} == {"rotation.signing_every"}
    assert len(overdue) == 3  # EdDSA, RS256 and ES256 keyrings
    assert {p.name: p.read_bytes() for p in settings.keys_dir.iterdir()} == before  # nothing written
    a_year_on = _by_id(await posture_report(settings, now=later + dt.timedelta(days=366)), "rotation.")
    [hmac] = [f for f in a_year_on if f.setting == "rotation.hmac_every"]
    assert "keys rotate" not in hmac.fix  # rotation's schedule never renews it
    assert "blind indexes" in hmac.fix
    assert all("bastion serve" in f.fix for f in a_year_on if f is not hmac)


async def test_permissions_of_the_key_store_and_tls_key(make_settings: SettingsFactory) -> None:
    """Key material readable by others is reported (an error in prod)."""
    settings = make_settings()
    (settings.keys_dir / "hmac.json").chmod(0o644)
    settings.key_file.chmod(0o640)
    found = {f.message.split(" ")[0] for f in _by_id(await posture_report(settings, now=NOW), "permissions")}
    assert found == {str(settings.keys_dir / "hmac.json"), str(settings.key_file)}


async def test_a_relative_backup_dir_is_checked_under_the_data_directory(
    make_settings: SettingsFactory, tmp_path: Any, monkeypatch: Any
) -> None:
    """V14.2.4 (the backups readable by their owner only): a relative [backups] dir is
    where the backups go, under the data directory, whatever the working directory of
    `bastion check`."""
    settings = make_settings(backups={"dir": "archive"})
    backups = settings.data_dir / "archive"
    backups.mkdir(mode=0o755)
    backups.chmod(0o755)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "archive").mkdir(parents=True, mode=0o700)
    monkeypatch.chdir(elsewhere)  # a private "archive" here must not stand in for the real one
    found = [f.message.split(" ")[0] for f in _by_id(await posture_report(settings, now=NOW), "permissions")]
    assert found == [str(backups)]
