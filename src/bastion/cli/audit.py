"""``bastion audit verify | prove | export``: check the tamper-evident log,
prove an event is in it, and hand a verifiable bundle to someone off the box.

``verify`` exits 0 when the log is intact, 1 when it was tampered with (the
first bad event's id is the last line of standard output), 2 when it cannot
run (one line on stderr).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from bastion.cli.common import CommandError, DataDir, err, fail, one_line_errors, out, parse_when, read_key_file

if TYPE_CHECKING:
    from bastion.audit.verify import Report
    from bastion.db import Database
    from bastion.secrets import Keyrings
    from bastion.settings import Settings

audit = typer.Typer(help="Verify, prove and export the tamper-evident audit log.", no_args_is_help=True)
T = TypeVar("T")

Checkpoints = Annotated[
    list[Path] | None,
    typer.Option(
        "--checkpoints", help="Another directory of shipped checkpoint files (repeatable).", show_default=False
    ),
]
KeyFile = Annotated[
    Path | None,
    typer.Option(
        "--key", help="Public keys to trust (the file `bastion keys export-public` writes).", show_default=False
    ),
]


def _run(data_dir: Path | None, work: Callable[[Settings, Keyrings, Database], Awaitable[T]]) -> T:
    import asyncio

    from bastion.db import DatabaseUnavailable, open_database
    from bastion.secrets import open_keyrings
    from bastion.settings import load_settings

    async def main() -> T:
        settings = load_settings(data_dir)
        keys = open_keyrings(settings)
        db = open_database(settings.sqlalchemy_url)
        try:
            return await work(settings, keys, db)
        finally:
            await db.close()

    with one_line_errors():
        try:
            return asyncio.run(main())
        except DatabaseUnavailable as exc:
            raise CommandError(f"the database cannot be read: {exc}") from None
        except Exception as exc:
            from sqlalchemy.exc import SQLAlchemyError

            from bastion.audit.export import ExportRefused

            if isinstance(exc, ExportRefused):
                raise CommandError(str(exc)) from None
            if isinstance(exc, SQLAlchemyError):
                raise CommandError(
                    f"the database cannot be read (run `bastion migrate`?): {type(exc).__name__}"
                ) from None
            raise


def _trusted_vkeys(settings: Settings, keys: Keyrings, key_file: Path | None) -> list[str]:
    from bastion.audit.notary import notary_of
    from bastion.audit.tree import origin_of

    vkeys = notary_of(keys, origin_of(settings)).vkeys()
    if key_file is not None:
        vkeys = [*vkeys, *read_key_file(key_file)]
    return vkeys


def _print_report(report: Report, *, bundle: bool = False) -> None:
    out.print(
        f"events: {report.events} (sequenced {report.sequenced}, pending {report.pending}, "
        f"redacted {report.redacted}, purged {report.purged})",
        highlight=False,
    )
    out.print(
        f"tree: size {report.size}; checkpoints: {report.checkpoints} in the bundle"
        if bundle
        else f"tree: size {report.size}; checkpoints: {report.checkpoints} in the database, "
        f"{report.checkpoint_files} shipped files",
        highlight=False,
    )
    if report.intact:
        out.print("intact", highlight=False)
        return
    for finding in sorted(report.findings, key=lambda f: f.position):
        out.print(f"TAMPERED {finding.kind}: {finding.message}", highlight=False, markup=False)
    first = report.first()
    out.print(str(first.event_id if first is not None and first.event_id is not None else "-"), highlight=False)


@audit.command("verify")
def verify(
    data_dir: DataDir = None,
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="Check an exported bundle offline instead.", show_default=False)
    ] = None,
    checkpoints: Checkpoints = None,
    key: KeyFile = None,
) -> None:
    """Recompute the log and check it against its seals and every signed checkpoint.

    Exit 0 intact; 1 tampered (the first bad event's id is the last line); 2 cannot run.
    """
    if bundle is not None:
        _verify_bundle(data_dir, bundle, key)
        return
    from rich.progress import Progress

    from bastion.audit.tree import origin_of
    from bastion.audit.verify import verify_log

    directories = list(checkpoints or [])

    async def work(settings: Settings, keys: Keyrings, db: Database) -> Report:
        if settings.audit.checkpoint_dir is not None:
            directories.insert(0, settings.audit.checkpoint_dir)
        for directory in directories:
            if not directory.is_dir() and directory != settings.audit.checkpoint_dir:
                raise CommandError(f"{directory}: not a directory")
        vkeys = _trusted_vkeys(settings, keys, key)
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task("verifying", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=max(total, done))

            report = await verify_log(
                db,
                keys.hmac,
                vkeys,
                origin=origin_of(settings),
                now=dt.datetime.now(dt.UTC),
                directories=directories,
                progress=advance,
            )
        await _record(db, "verify", report)
        return report

    report = _run(data_dir, work)
    _print_report(report)
    if not report.intact:
        raise typer.Exit(1)


async def _record(db: Database, what: str, report: Report | None = None, **details: Any) -> None:
    """The AUDIT_VERIFY / AUDIT_EXPORT event (a verification failure is what the monitor alerts on)."""
    from bastion.audit import EventTag, Origin, Outcome, record_event
    from bastion.audit.verify import verdict
    from bastion.clock import SystemClock
    from bastion.db import transaction

    tag = EventTag.AUDIT_VERIFY if what == "verify" else EventTag.AUDIT_EXPORT
    outcome = Outcome.SUCCESS
    if report is not None:
        outcome, found = verdict(report)
        details = {**details, **found}
    try:
        async with transaction(db) as tx:
            record_event(tx, SystemClock(), tag, origin=Origin.cli(), outcome=outcome, details=details)
    except Exception as exc:  # noqa: BLE001 - the verdict is printed either way; the record is best effort
        err.print(f"warning: the {what} could not be recorded ({type(exc).__name__})", highlight=False)


def _verify_bundle(data_dir: Path | None, path: Path, key: Path | None) -> None:
    from bastion.audit.verify import verify_bundle

    try:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(bundle, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        fail(f"{path}: not an audit bundle ({exc})")
    with one_line_errors():
        vkeys: list[str] | None = read_key_file(key) if key is not None else _instance_vkeys(data_dir)
        if vkeys is None:
            vkeys = [str(v) for v in bundle.get("vkeys", [])]
            err.print(
                "warning: checked against the keys the bundle names; pass --key with keys you trust",
                highlight=False,
            )
    report = verify_bundle(bundle, vkeys)
    _print_report(report, bundle=True)
    if not report.intact:
        raise typer.Exit(1)


def _instance_vkeys(data_dir: Path | None) -> list[str] | None:
    """The notary keys of the instance in ``data_dir``, or None when there is none to read."""
    from bastion.audit.notary import notary_of
    from bastion.audit.tree import origin_of
    from bastion.secrets import open_keyrings
    from bastion.security import KeyringError
    from bastion.settings import ConfigError, load_settings

    try:
        settings = load_settings(data_dir)
        return notary_of(open_keyrings(settings), origin_of(settings)).vkeys()
    except (ConfigError, KeyringError, OSError):
        return None


@audit.command("prove")
def prove(
    event_id: Annotated[int | None, typer.Argument(help="The event's id.", show_default=False)] = None,
    consistency: Annotated[
        tuple[int, int] | None,
        typer.Option("--consistency", help="OLD NEW: prove the tree of size NEW extends that of size OLD."),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Print an inclusion proof of EVENT_ID against the latest checkpoint (JSON), or a consistency proof."""
    if (event_id is None) == (consistency is None):
        fail("give an EVENT_ID, or --consistency OLD NEW")
    if consistency is not None:
        document = _run(data_dir, lambda s, k, db: _consistency(db, *consistency))
    else:
        assert event_id is not None  # noqa: S101 - checked above
        document = _run(data_dir, lambda s, k, db: _inclusion(db, event_id))
    typer.echo(json.dumps(document, indent=2))


async def _inclusion(db: Database, event_id: int) -> dict[str, Any]:
    import sqlalchemy as sa

    from bastion.audit.export import tree_at_latest_checkpoint
    from bastion.audit.models import AuditEvent

    row = await db.one(sa.select(AuditEvent).where(AuditEvent.id == event_id))
    if row is None:
        raise CommandError(f"no event {event_id}")
    checkpoint, levels = await tree_at_latest_checkpoint(db)
    if row.seq is None or row.seq >= checkpoint.size:
        raise CommandError(f"event {event_id} is not covered by a checkpoint yet; retry after the next one")
    return {
        "event_id": event_id,
        "leaf_index": int(row.seq),
        "leaf_hash": bytes(row.leaf_hash).hex(),
        "tree_size": int(checkpoint.size),
        "root_hash": bytes(checkpoint.root_hash).hex(),
        "proof": [node.hex() for node in levels.inclusion(int(row.seq))],
        "checkpoint": checkpoint.note,
    }


async def _consistency(db: Database, old: int, new: int) -> dict[str, Any]:
    import sqlalchemy as sa

    from bastion.audit.export import leaves_to
    from bastion.audit.models import AuditCheckpoint
    from bastion.security.merkle import consistency_proof, root

    if not 0 < old <= new:
        raise CommandError("--consistency needs 0 < OLD <= NEW")
    leaves = await leaves_to(db, new)
    if len(leaves) != new:
        raise CommandError(f"the tree holds {len(leaves)} events, fewer than {new}")
    notes = {
        int(r.size): r.note
        for r in await db.all(
            sa.select(AuditCheckpoint.size, AuditCheckpoint.note).where(AuditCheckpoint.size.in_([old, new]))
        )
    }
    return {
        "old_size": old,
        "new_size": new,
        "old_root": root(leaves[:old]).hex(),
        "new_root": root(leaves).hex(),
        "proof": [node.hex() for node in consistency_proof(old, leaves)],
        "old_checkpoint": notes.get(old),
        "new_checkpoint": notes.get(new),
    }


@audit.command("export")
def export(
    since: Annotated[str, typer.Option("--since", help="RFC 3339 time, or a duration ago (24h).")],
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the bundle (JSON).")],
    until: Annotated[str | None, typer.Option("--until", help="RFC 3339 time, or a duration ago.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Write the events since T with their inclusion proofs, the checkpoints and the public keys."""
    import os

    from bastion.audit.export import export_bundle
    from bastion.audit.notary import notary_of
    from bastion.audit.sinks import sinks_of
    from bastion.audit.tree import AuditLog, origin_of
    from bastion.clock import SystemClock

    now = dt.datetime.now(dt.UTC)
    with one_line_errors():
        start = parse_when(since, now)
        end = parse_when(until, now) if until is not None else None
    if out_file.exists():
        fail(f"{out_file}: already exists")

    async def work(settings: Settings, keys: Keyrings, db: Database) -> dict[str, Any]:
        notary = notary_of(keys, origin_of(settings))
        log = AuditLog(settings, db, SystemClock(), keys.hmac, notary, sinks=sinks_of(settings))
        # Cover the newest events: sequence what is pending and sign a checkpoint of it.
        await log.sequence_now()
        await log.checkpoint_now()
        await log.ship_pending()
        bundle = await export_bundle(db, notary.vkeys(), origin=origin_of(settings), since=start, until=end, now=now)
        await _record(db, "export", events=len(bundle["events"]), tree_size=bundle["tree_size"])
        return bundle

    bundle = _run(data_dir, work)
    with one_line_errors():
        # Personal data: readable by the owner only.
        descriptor = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(bundle, handle, indent=1, ensure_ascii=False)
            handle.write("\n")
    out.print(f"{len(bundle['events'])} events, tree size {bundle['tree_size']}: {out_file}", highlight=False)
