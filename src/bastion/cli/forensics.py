"""The forensic bundle of ``bastion incident export`` (docs/incident-response.md, "Forensic bundle").

A gzip'd tar of JSON parts, a ``MANIFEST`` and its signature:

- ``audit.json``: the audit bundle of the window (``bastion audit export``'s format,
  checked offline by ``bastion audit verify --bundle``);
- ``alerts.json``: the alerts seen in the window;
- ``blocks.json``: the address blocks in force during the window;
- ``posture.json``: the findings of ``bastion check``;
- ``config.json``: the effective configuration, every secret replaced by ``**********``
  and every webhook URL cut to its origin (``https://hooks.example.com/…``: the
  path and query often hold the receiver's token);
- ``incident.json``: the lockdown state and the bundle's window;
- ``MANIFEST``: one ``<sha256 hex>  <name>`` line per part (``sha256sum -c MANIFEST`` checks them);
- ``MANIFEST.sig``: the MANIFEST as a C2SP signed note by the notary key (Ed25519),
  under the audit log's origin name, so the ``vkey`` of ``bastion keys export-public`` verifies it.

Invariants: the file is created new with mode 0600 (it holds personal data:
addresses, account ids) and written whole or not at all (a temporary file
renamed into place); no secret value of the configuration is in it.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from bastion.security import digest

if TYPE_CHECKING:
    from bastion.db import Database
    from bastion.secrets import Keyrings
    from bastion.settings import Settings

FORMAT = "bastion-incident-export/1"
MASK = "**********"


async def write_bundle(
    settings: Settings, keys: Keyrings, db: Database, *, start: dt.datetime, end: dt.datetime, out: Path
) -> dict[str, int]:
    """Collect the parts, write the bundle to ``out``, audit the export; the size of each part.

    The audit part is ``bastion audit export``'s bundle (events with inclusion
    proofs against a checkpoint signed now, the checkpoints, the vkeys), so
    ``bastion audit verify --bundle audit.json`` checks it offline.
    """
    from bastion.audit import EventTag, Origin, record_event
    from bastion.audit.export import export_bundle
    from bastion.audit.notary import notary_of
    from bastion.audit.sinks import sinks_of
    from bastion.audit.tree import AuditLog, origin_of
    from bastion.clock import SystemClock
    from bastion.db import transaction
    from bastion.incident.state import read_lockdown
    from bastion.secrets import checkpoint_origin

    clock = SystemClock()
    origin = origin_of(settings)
    log = AuditLog(settings, db, clock, keys.hmac, notary_of(keys, origin), sinks=sinks_of(settings))
    # Cover the newest events: sequence what is pending and sign a checkpoint of it.
    await log.sequence_now()
    await log.checkpoint_now()
    await log.ship_pending()
    audit = await export_bundle(
        db, notary_of(keys, origin).vkeys(), origin=origin, since=start, until=end, now=clock.now()
    )
    # The manifest is signed under the name `bastion keys export-public` publishes its vkeys for.
    name = checkpoint_origin(settings)
    notary = notary_of(keys, name)
    vkeys = notary.vkeys()
    parts: dict[str, bytes] = {
        "audit.json": _json(audit),
        "alerts.json": _json(await _alerts(db, start, end)),
        "blocks.json": _json(await _blocks(db, start, end)),
        "posture.json": _json(await _posture(settings, clock.now())),
        "config.json": _json(redacted_config(settings)),
    }
    lockdown = await read_lockdown(db)
    parts["incident.json"] = _json(
        {
            "format": FORMAT,
            "created": clock.now().isoformat(),
            "since": start.isoformat(),
            "until": end.isoformat(),
            "signer": name,
            "vkeys": vkeys,
            "lockdown": {
                "on": lockdown.on,
                "reason": lockdown.reason,
                "since": lockdown.since.isoformat() if lockdown.since else None,
                "by": lockdown.by,
            },
        }
    )
    manifest = manifest_of(parts)
    kid, signed = notary.sign(manifest)
    parts["MANIFEST"] = manifest.encode()
    parts["MANIFEST.sig"] = signed.encode()
    _write_new(out, parts)
    async with transaction(db) as tx:
        record_event(
            tx,
            clock,
            EventTag.INCIDENT_EXPORT,
            origin=Origin.cli(),
            details={
                "since": start.isoformat(),
                "until": end.isoformat(),
                "file": out.name,
                "events": len(audit["events"]),
                "kid": kid,
                "manifest": digest(manifest.encode()).hex(),
            },
        )
    return {name: len(data) for name, data in parts.items()}


def manifest_of(parts: dict[str, bytes]) -> str:
    """``sha256sum`` lines (two spaces), sorted by name."""
    return "".join(f"{digest(parts[name]).hex()}  {name}\n" for name in sorted(parts))


async def _alerts(db: Database, start: dt.datetime, end: dt.datetime) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from bastion.monitor.models import Alert

    rows = await db.all(
        select(Alert).where(Alert.last_seen >= start, Alert.first_seen <= end).order_by(Alert.first_seen)
    )
    return _rows(rows, Alert)


async def _blocks(db: Database, start: dt.datetime, end: dt.datetime) -> list[dict[str, Any]]:
    from sqlalchemy import or_, select

    from bastion.network.models import Block

    rows = await db.all(
        select(Block)
        .where(Block.created_at <= end, or_(Block.expires_at.is_(None), Block.expires_at >= start))
        .order_by(Block.created_at)
    )
    return _rows(rows, Block)


async def _posture(settings: Settings, now: dt.datetime) -> list[dict[str, str]]:
    """The whole report of ``bastion check`` (settings, key ages, permissions, backups, audit, alerts, advisories)."""
    from bastion.posture.report import posture_report

    return [
        {"severity": f.severity, "setting": f.setting, "message": f.message, "fix": f.fix}
        for f in await posture_report(settings, now=now)
    ]


def redacted_config(settings: Settings) -> Any:
    """The settings as JSON with every ``Secret`` masked (pydantic's JSON form of a SecretStr,
    the database and Redis URLs included) and every webhook URL cut to its origin
    (``settings.WebhookUrls``' JSON form): whatever is typed so is masked, so a new
    secret or webhook setting cannot be forgotten here."""
    value: Any = settings.model_dump(mode="json")
    return value


def _rows(rows: list[Any], model: Any) -> list[dict[str, Any]]:
    """Rows of ``select(model)`` as plain JSON values, by the table's column names."""
    keys = [column.key for column in model.__table__.columns]
    return [{key: _plain(getattr(row, key)) for key in keys} for row in rows]


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, (str, int, float, bool, list, dict)) or value is None:
        return value
    return str(value)


def _json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def _write_new(out: Path, parts: dict[str, bytes]) -> None:
    """A new file, 0600, renamed into place once complete."""
    temporary = out.with_name(f".{out.name}.partial")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as archive:
            for name, data in parts.items():
                info = tarfile.TarInfo(f"incident/{name}")
                info.size, info.mode, info.mtime = len(data), 0o600, 0
                archive.addfile(info, io.BytesIO(data))
        if out.exists():
            raise FileExistsError(out)
        temporary.rename(out)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
