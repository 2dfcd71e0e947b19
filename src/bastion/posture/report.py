"""The whole posture report of ``bastion check``: configuration and transport
(``check_settings``, what ``serve`` also enforces), then what only a look at
the running installation shows: key ages against ``[rotation]``, file
permissions, OAuth client secrets expired or expiring within ``[rotation]
remind_before``, the last good backup and drill, the last audit
verification, open alerts, and dependency advisories.

Nothing here changes anything: keyrings are read (never created), the
database is only queried, the audit log is not re-verified. Audit
verification is the last ``audit:verify`` event, not a new run: a full
verification reads every event (minutes on a large log), and both ``bastion
audit verify`` and serve's scheduled one (``bastion.audit.verify_job``)
record their verdict, which is what this reports.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bastion.posture.advisories import STALE_AFTER, AdvisoryFileError, installed, match, open_database
from bastion.posture.checks import check_settings
from bastion.posture.finding import Finding, Severity
from bastion.settings import Settings

DATABASE_TIMEOUT = 15.0  # seconds for the report's few queries
# An audit verification older than this is a warning: a week of events unchecked.
VERIFY_EVERY = dt.timedelta(days=7)
# A finding names at most this many clients (the rest are counted).
NAMED_CLIENTS = 20


async def posture_report(settings: Settings, *, now: dt.datetime, site: Iterable[str] | None = None) -> list[Finding]:
    """Every finding of ``bastion check``, configuration first; ``site``: where to look for distributions."""
    findings = check_settings(settings)
    findings += key_age_findings(settings, now)
    findings += permission_findings(settings)
    findings += await database_findings(settings, now)
    findings += advisory_findings(settings, now, site=site)
    return findings


# -- keys ----------------------------------------------------------------------------------------


def key_age_findings(settings: Settings, now: dt.datetime) -> list[Finding]:
    """Each keyring's active key against its ``[rotation]`` schedule (read only: no keyring is created)."""
    from bastion.rotation.schedule import GROUPS, status_of
    from bastion.secrets import BASE_PURPOSES, master_key
    from bastion.security import Keyring, KeyringError
    from bastion.settings import ConfigError

    try:
        master = master_key(settings)
    except ConfigError:
        return []  # check_settings has said why already
    findings = []
    for purpose in (p for purposes in GROUPS.values() for p in purposes):
        try:
            status = status_of(Keyring.load(settings.keys_dir, purpose, master), purpose, settings.rotation)
        except KeyringError as exc:
            if purpose in BASE_PURPOSES:
                findings.append(Finding("error", f"keys.{purpose}", str(exc), "restore keys/ or run `bastion init`"))
            continue
        if status.due(now):
            setting = f"{status.group}_every"
            findings.append(
                Finding(
                    "warning",
                    f"rotation.{setting}",
                    f"the active {purpose} key {status.kid} is {status.age(now).days} days old, past "
                    f"rotation.{setting} ({status.every.days} days)",
                    _rotation_hint(status.automatic, status.group),
                )
            )
    return findings


def _rotation_hint(automatic: bool, group: str) -> str:
    if automatic:
        return f"let `bastion serve` rotate it (the rotation job), or run `bastion keys rotate {group}`"
    # hmac: neither the job nor `keys rotate` renews it (docs/maintenance.md, key rotation).
    return (
        "nothing rotates the hmac key, by design: the blind indexes (the sign-in lookup of users.email, "
        "searchable encrypted fields) hold digests under the active key only, so a new key would make every "
        "lookup miss until each index were recomputed; keep it unless it may have leaked (then treat it as an "
        "incident), and raise rotation.hmac_every to your policy's interval to silence this"
    )


# -- file permissions ----------------------------------------------------------------------------


def _open_to_others(path: Path) -> int | None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    return mode if mode & 0o077 else None


def permission_findings(settings: Settings) -> list[Finding]:
    """The key store, each keyring file, the TLS private key and the backup directory: owner only.
    (The data directory and the master key file are check_settings's.)"""
    from bastion.backups.destinations import local_backup_dir

    serious: Severity = "error" if settings.mode == "prod" else "warning"
    paths: list[tuple[Path, str]] = [(settings.keys_dir, "700")]
    if settings.keys_dir.is_dir():
        paths += [(p, "600") for p in sorted(settings.keys_dir.glob("*.json"))]
    if settings.server.tls or settings.admin.enabled:
        paths.append((settings.key_file, "600"))
    paths.append((local_backup_dir(settings), "700"))  # a relative [backups] dir is under the data directory
    findings = []
    for path, wanted in paths:
        mode = _open_to_others(path)
        if mode is not None:
            findings.append(
                Finding(
                    serious,
                    "permissions",
                    f"{path} is accessible by group or others (mode {mode:04o})",
                    f"run: chmod {wanted} {path}",
                )
            )
    return findings


# -- the database: backups, drills, audit verification, alerts -----------------------------------


async def database_findings(settings: Settings, now: dt.datetime) -> list[Finding]:
    from bastion.db import open_database as open_db

    url = settings.sqlalchemy_url
    remind_before = dt.timedelta(seconds=settings.rotation.remind_before)
    if url.startswith("sqlite") and not await asyncio.to_thread(Path(url.split(":///", 1)[1]).is_file):
        # Opening it would create an empty one: the report changes nothing.
        return [
            Finding(
                "error", "database", f"there is no database in {settings.data_dir}", "run `bastion init` or restore it"
            )
        ]
    try:
        db = open_db(url)
        try:
            # A database that does not answer must not hold the report (or a cron job) for a minute.
            async with asyncio.timeout(DATABASE_TIMEOUT):
                last = await _last_events(db)
                full_drill = await _last_full_drill(db)
                alerts = await _open_alerts(db)
                client_secrets = await _client_secrets_expiring(db, now + remind_before)
        finally:
            await db.close()
    except Exception as exc:  # noqa: BLE001 - whatever stops the reading (driver, schema, network), the report says so and goes on
        return [_unreadable(exc)]
    findings = backup_findings(settings, now, last, full_drill=full_drill)
    findings += verify_findings(now, last)
    findings += alert_findings(alerts)
    findings += client_secret_findings(now, client_secrets, remind_before)
    return findings


def _unreadable(exc: BaseException) -> Finding:
    return Finding(
        "error",
        "database",
        f"the database cannot be read ({type(exc).__name__}): backups, audit, alerts and client secrets are unchecked",
        "check database_url, then run `bastion migrate`",
    )


async def _last_events(db: Any) -> dict[tuple[str, str], tuple[dt.datetime, dict[str, Any]]]:
    """(tag, outcome) -> (at, details) of the newest backup, drill and verification events."""
    import sqlalchemy as sa

    from bastion.audit import EventTag
    from bastion.audit.models import AuditEvent

    tags = [EventTag.BACKUP_CREATE.value, EventTag.BACKUP_DRILL.value, EventTag.AUDIT_VERIFY.value]
    newest = (
        sa.select(AuditEvent.tag, AuditEvent.outcome, sa.func.max(AuditEvent.id).label("id"))
        .where(AuditEvent.tag.in_(tags))
        .group_by(AuditEvent.tag, AuditEvent.outcome)
        .subquery()
    )
    rows = await db.all(
        sa.select(AuditEvent.tag, AuditEvent.outcome, AuditEvent.at, AuditEvent.details).join(
            newest, AuditEvent.id == newest.c.id
        )
    )
    return {(row.tag, row.outcome): (row.at, row.details or {}) for row in rows}


async def _last_full_drill(db: Any) -> tuple[dt.datetime, dict[str, Any]] | None:
    """(at, details) of the newest successful drill that decrypted and restored the backup
    (``"full": true``; a drill without ``drill_identity_file`` checks signatures only)."""
    import sqlalchemy as sa

    from bastion.audit import EventTag
    from bastion.audit.models import AuditEvent

    row = await db.all(
        sa.select(AuditEvent.at, AuditEvent.details)
        .where(
            AuditEvent.tag == EventTag.BACKUP_DRILL.value,
            AuditEvent.outcome == "success",
            AuditEvent.details["full"].as_boolean().is_(True),
        )
        .order_by(AuditEvent.id.desc())
        .limit(1)
    )
    return (row[0].at, row[0].details or {}) if row else None


async def _open_alerts(db: Any) -> list[tuple[str, str, int]]:
    import sqlalchemy as sa

    from bastion.monitor.models import Alert

    rows = await db.all(
        sa.select(Alert.rule, Alert.severity, sa.func.count())
        .where(Alert.status == "open")
        .group_by(Alert.rule, Alert.severity)
        .order_by(Alert.rule)
    )
    return [(row[0], row[1], int(row[2])) for row in rows]


async def _client_secrets_expiring(db: Any, horizon: dt.datetime) -> list[tuple[str, dt.datetime]]:
    """(client_id, secret_expires_at) of every client whose secret expires by ``horizon`` (or has), soonest first."""
    import sqlalchemy as sa

    from bastion.oauth.models import OAuthClient

    rows = await db.all(
        sa.select(OAuthClient.id, OAuthClient.secret_expires_at)
        .where(OAuthClient.secret_hash.is_not(None), OAuthClient.secret_expires_at <= horizon)
        .order_by(OAuthClient.secret_expires_at, OAuthClient.id)
    )
    return [(row.id, row.secret_expires_at) for row in rows]


def client_secret_findings(
    now: dt.datetime, secrets: list[tuple[str, dt.datetime]], remind_before: dt.timedelta
) -> list[Finding]:
    """Confidential clients whose secret has expired (an error: they cannot authenticate) or
    expires within ``remind_before`` (a warning: rotate it now); ``secrets`` are the
    (client_id, expiry) of those due by ``now + remind_before``."""
    expired = [client_id for client_id, at in secrets if at <= now]
    expiring = [client_id for client_id, at in secrets if at > now]
    fix = "run `bastion oauth client rotate-secret CLIENT_ID` for each and give the client its new secret"
    findings = []
    if expired:
        findings.append(
            Finding(
                "error",
                "oauth.client_secret_lifetime",
                f"{len(expired)} OAuth client secret(s) have expired, so their clients cannot authenticate: "
                + _named(expired),
                fix + " (or delete the clients no longer used)",
            )
        )
    if expiring:
        findings.append(
            Finding(
                "warning",
                "oauth.client_secret_lifetime",
                f"{len(expiring)} OAuth client secret(s) expire within rotation.remind_before "
                f"({remind_before.days} days): " + _named(expiring),
                fix,
            )
        )
    return findings


def _named(client_ids: list[str]) -> str:
    more = len(client_ids) - NAMED_CLIENTS
    return ", ".join(client_ids[:NAMED_CLIENTS]) + (f" and {more} more" if more > 0 else "")


def _two_runs_after(schedule: str, since: dt.datetime) -> dt.datetime:
    """When the second scheduled run after ``since`` was due: one missed run is a hiccup, two a fault."""
    from croniter import croniter

    runs = croniter(schedule, since)
    runs.get_next(dt.datetime)
    second: dt.datetime = runs.get_next(dt.datetime)
    return second


Recorded = tuple[dt.datetime, dict[str, Any]]  # an event's (at, details)


def _failed_since(what: str, good: Recorded | None, bad: Recorded | None, setting: str, command: str) -> list[Finding]:
    """A failure after the last good run, with its reason."""
    if bad is None or (good is not None and bad[0] <= good[0]):
        return []
    reason = str(bad[1].get("reason") or "no reason recorded")[:200]
    return [
        Finding(
            "warning",
            setting,
            f"the last {what} failed at {bad[0]:%Y-%m-%d %H:%M}Z: {reason}",
            f"fix the cause, then run `{command}`",
        )
    ]


def _overdue(schedule: str, good: Recorded | None, now: dt.datetime) -> bool:
    return good is None or (bool(schedule) and now > _two_runs_after(schedule, good[0]))


def _on_schedule(  # noqa: PLR0917 - the backup and the drill differ in each
    what: str, good: Recorded | None, schedule: str, setting: str, now: dt.datetime, command: str
) -> Finding:
    """The last good run against its schedule."""
    if good is None:
        return Finding("warning", setting, f"no {what} has succeeded yet", f"run `{command}`")
    if _overdue(schedule, good, now):
        return Finding(
            "warning",
            setting,
            f"the last good {what} was at {good[0]:%Y-%m-%d %H:%M}Z: two runs of {setting} "
            f'"{schedule}" have been missed since',
            f"check that `bastion serve` runs and its {what}s succeed, or run `{command}`",
        )
    return Finding("info", setting, f"last good {what} at {good[0]:%Y-%m-%d %H:%M}Z", command)


def backup_findings(
    settings: Settings,
    now: dt.datetime,
    last: dict[tuple[str, str], Recorded],
    *,
    full_drill: Recorded | None = None,
) -> list[Finding]:
    """The last good backup and drill against ``[backups]`` schedules (audit events BACKUP_CREATE / BACKUP_DRILL).
    Only a full drill (decrypted and restored: ``full_drill``) satisfies the drill schedule."""
    from bastion.audit import EventTag

    backups = settings.backups
    if not backups.recipients:
        return [
            Finding(
                "warning",
                "backups.recipients",
                "no backup recipients are set: serve makes no scheduled backups",
                "run `bastion backup keygen --out FILE` offline and list its public key in backups.recipients",
            )
        ]
    findings = [
        Finding(
            "warning",
            setting,
            f"{setting} is empty: serve runs no scheduled {what}s",
            f'set {setting} to a cron schedule, e.g. "{default}"',
        )
        for setting, what, value, default in (
            ("backups.schedule", "backup", backups.schedule, "0 3 * * *"),
            ("backups.drill_schedule", "drill", backups.drill_schedule, "30 4 * * 0"),
        )
        if not value
    ]
    create, command = EventTag.BACKUP_CREATE.value, "bastion backup create"
    good = last.get((create, "success"))
    findings += _failed_since("backup", good, last.get((create, "failure")), "backups.schedule", command)
    findings.append(_on_schedule("backup", good, backups.schedule, "backups.schedule", now, command))
    findings += drill_findings(settings, now, last, full_drill)
    return findings


def drill_findings(
    settings: Settings, now: dt.datetime, last: dict[tuple[str, str], Recorded], full_drill: Recorded | None
) -> list[Finding]:
    """The last full drill (``full_drill``: decrypted and restored) against ``drill_schedule``.

    A drill without an identity (serve without ``drill_identity_file``) proves the
    newest backup is signed and whole, not that it decrypts and restores: it never
    satisfies the schedule, and when only such drills are recent the warning says so.
    A failed full drill is cleared only by a full drill that succeeds.
    """
    from bastion.audit import EventTag

    drill = EventTag.BACKUP_DRILL.value
    schedule, setting, command = settings.backups.drill_schedule, "backups.drill_schedule", "bastion backup drill"
    latest, bad = last.get((drill, "success")), last.get((drill, "failure"))
    # A failure without "full" recorded is taken as a restore that failed: only a full drill clears it.
    cleared_by = full_drill if bad is not None and bad[1].get("full", True) else latest
    findings = _failed_since("drill", cleared_by, bad, setting, f"{command} --identity F")
    signatures_only = latest is not None and (full_drill is None or latest[0] > full_drill[0])
    if signatures_only and _overdue(schedule, full_drill, now):
        assert latest is not None  # noqa: S101 - signatures_only says so
        latest_at = f"the latest at {latest[0]:%Y-%m-%d %H:%M}Z"
        which = (
            f"since the last full restore drill at {full_drill[0]:%Y-%m-%d %H:%M}Z ({latest_at})"
            if full_drill is not None
            else f"({latest_at}); no full restore drill has succeeded yet"
        )
        findings.append(
            Finding(
                "warning",
                setting,
                f"drills checked signatures only {which}: the backups are not shown to decrypt and restore",
                "set backups.drill_identity_file or run `bastion backup drill --identity F`",
            )
        )
    else:
        findings.append(_on_schedule("full drill", full_drill, schedule, setting, now, f"{command} --identity F"))
    return findings


def verify_findings(now: dt.datetime, last: dict[tuple[str, str], tuple[dt.datetime, dict[str, Any]]]) -> list[Finding]:
    """The last audit verification (its AUDIT_VERIFY event, from serve's job or the command):
    tampering found is an error."""
    from bastion.audit import EventTag

    tag = EventTag.AUDIT_VERIFY.value
    good, bad = last.get((tag, "success")), last.get((tag, "failure"))
    if bad is not None and (good is None or bad[0] > good[0]):
        first = bad[1].get("first_bad_event")
        return [
            Finding(
                "error",
                "audit",
                f"the last audit verification ({bad[0]:%Y-%m-%d %H:%M}Z) found the log tampered with"
                + (f" from event {first}" if first is not None else ""),
                "investigate (docs/audit.md), then run `bastion audit verify`",
            )
        ]
    if good is None:
        return [Finding("warning", "audit", "the audit log has never been verified", "run `bastion audit verify`")]
    if now - good[0] > VERIFY_EVERY:
        return [
            Finding(
                "warning",
                "audit",
                f"the audit log was last verified {(now - good[0]).days} days ago",
                "check that `bastion serve` runs (it verifies every audit.verify_interval), "
                "or run `bastion audit verify`",
            )
        ]
    return [Finding("info", "audit", f"audit log verified intact at {good[0]:%Y-%m-%d %H:%M}Z", "")]


def alert_findings(alerts: list[tuple[str, str, int]]) -> list[Finding]:
    """Open alerts: a critical one is an error until someone acknowledges it."""
    findings: list[Finding] = []
    for rule, severity, count in alerts:
        findings.append(
            Finding(
                "error" if severity == "critical" else "warning",
                f"alerts.{rule}",
                f"{count} open {severity} alert(s) of rule {rule}",
                "look at `bastion alerts list`, then acknowledge them",
            )
        )
    return findings


# -- advisories ----------------------------------------------------------------------------------


def advisory_findings(settings: Settings, now: dt.datetime, *, site: Iterable[str] | None = None) -> list[Finding]:
    """Every installed distribution (of this interpreter, or on ``site``) against the advisory database."""
    try:
        database = open_database(settings.data_dir, now=now)
    except AdvisoryFileError as exc:
        return [
            Finding(
                "error",
                "advisories",
                f"{exc}: the dependencies are unchecked",
                "reinstall Bastion, or run `bastion advisories import FILE` with an osv.dev export",
            )
        ]
    distributions = installed(site)
    findings = [
        Finding(
            "error",
            f"advisories.{m.advisory}",
            f"{m.package} {m.version} is affected by {m.advisory}"
            + (f" ({', '.join(m.aliases)})" if m.aliases else "")
            + f": {m.summary}",
            f"upgrade {m.package} to {m.fixed} or later" if m.fixed else f"no fixed version of {m.package} is known",
        )
        for m in match(database, distributions)
    ]
    age = now - database.date
    summary = (
        f"{len(distributions)} distributions checked against {len(database.records)} advisories "
        f"dated {database.date:%Y-%m-%d}"
    )
    if age > STALE_AFTER:
        findings.append(
            Finding(
                "warning",
                "advisories",
                f"{summary}: the advisory database is {age.days} days old",
                "run `bastion advisories import FILE` with a current osv.dev export (docs/maintenance.md)",
            )
        )
    else:
        findings.append(Finding("info", "advisories", summary, "bastion advisories import FILE refreshes it"))
    return findings
