"""``bastion collections …`` and ``bastion keys …``: thin commands over the data service.

The services are imported inside the commands, so ``--help`` does not load them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bastion.cli.common import CommandError, DataDir, one_line_errors, out

if TYPE_CHECKING:
    from bastion.audit import EventTag
    from bastion.data.tables import Plan
    from bastion.secrets import Keyrings
    from bastion.security import Keyring
    from bastion.settings import Settings

collections = typer.Typer(help="Collections declared in bastion.toml.", no_args_is_help=True)
keys = typer.Typer(
    help="The keystore: list, status, rotate, rewrap, remove, revoke, export-public.", no_args_is_help=True
)

# Rotating the HMAC key would change every blind index at once (lookups would
# miss until all were recomputed), so only these rotate.
ROTATABLE = ("encryption", "signing", "notary")
_ROTATABLE_TEXT = "encryption, signing and notary"
# Keys whose signatures others verify: a leaked one is revoked (a tombstone
# keeps its place), never silently deleted.
REVOCABLE = ("signing", "notary")


def _settings(data_dir: Path | None) -> Settings:
    from bastion.settings import load_settings

    with one_line_errors():
        return load_settings(data_dir)


def show(changes: Plan, *, applied: bool = False) -> None:
    """Each change on a line; once applied, that running servers follow it."""
    if changes.empty:
        out.print("collections are up to date")
    for change in changes.changes:
        colour = "red" if change.destructive else "green"
        out.print(f"[{colour}]{'!' if change.destructive else '+'}[/] {change.description}", highlight=False)
    if applied and not changes.empty:
        # Servers look at the definitions again every CATALOG_RELOAD_SECONDS.
        out.print("[green]applied:[/] running servers use the new definitions within a second; no restart needed")


@collections.command("plan")
def plan_command(data_dir: DataDir = None) -> None:
    """Show what `apply` would change, without changing anything."""
    from bastion.clock import SystemClock
    from bastion.data.service import apply_configured

    settings = _settings(data_dir)
    with one_line_errors():
        show(apply_configured(settings, SystemClock(), dry_run=True))


@collections.command("apply")
def apply_command(
    data_dir: DataDir = None,
    force: Annotated[bool, typer.Option("--force", help="Also make changes that drop data.")] = False,
) -> None:
    """Bring the tables to bastion.toml; refuses changes that drop data without --force."""
    from bastion.clock import SystemClock
    from bastion.data.service import apply_configured

    settings = _settings(data_dir)
    with one_line_errors():
        # Refused as a whole, before any change, when it would drop data without --force.
        changes = apply_configured(settings, SystemClock(), force=force)
    show(changes, applied=True)


@keys.command("list")
def list_keys(data_dir: DataDir = None) -> None:
    """Every key of every keyring (ids and dates, never material), how many
    sealed values each encryption key still protects, which signing keys
    sign now and which are only published in the JWKS, and which notary key
    signs audit checkpoints."""
    from rich.table import Table

    from bastion.rewrap import count_all
    from bastion.secrets import KEY_PURPOSES, open_keyrings, token_signer
    from bastion.security import KEYRING_PURPOSES

    settings = _settings(data_dir)
    with one_line_errors():
        rings = open_keyrings(settings)
        sealed = asyncio.run(count_all(settings, rings))
        signer = token_signer(settings, rings)
    now = int(time.time())
    published = {key["kid"] for key in signer.public_jwks(now=now)["keys"]}
    signing = {signer.signing_kid(alg, now=now) for alg in KEYRING_PURPOSES}
    table = Table("purpose", "kid", "created", "status", "use", title="Bastion keystore")
    for purpose in KEY_PURPOSES:
        for info in rings.purpose(purpose).kids():
            colour = {"active": "green", "revoked": "red"}.get(info.status, "dim")
            if purpose == "encryption":
                values = str(sealed.pop(info.kid, 0))
            elif purpose in KEYRING_PURPOSES.values():
                # What the JWKS shows now: a new key is published before it signs.
                values = "signing" if info.kid in signing else "published" if info.kid in published else ""
            elif purpose == "notary":
                # Retired notary keys stay to verify the checkpoints they signed.
                values = {"active": "signs notes", "retired": "verifies"}.get(info.status, "")
            else:
                values = ""
            table.add_row(purpose, info.kid, info.created_at.isoformat(), f"[{colour}]{info.status}[/]", values)
    out.print(table)
    for kid, count in sorted(sealed.items()):  # left over: under no key of the keyring
        out.print(f"[red]{count} sealed values under {kid}, which the keyring does not hold[/]", highlight=False)


@keys.command("status")
def status(
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document instead of the table.")] = False,
) -> None:
    """Each keyring's active key: its age, its [rotation] interval and when it is
    due. Signing, encryption and notary keys rotate by themselves in `serve`
    once due; hmac is only reported (a new hmac key would break every blind
    index). Also says whether a background rewrap is still under way."""
    import json
    from datetime import UTC, datetime

    from rich.table import Table

    from bastion.db import open_database
    from bastion.rotation import key_statuses
    from bastion.rotation.rewrap import rewrap_pending
    from bastion.secrets import open_keyrings

    settings = _settings(data_dir)
    with one_line_errors():
        rings = open_keyrings(settings)
        statuses = key_statuses(rings, settings.rotation)

        async def pending() -> str | None:
            db = open_database(settings.sqlalchemy_url)
            try:
                return await rewrap_pending(db, rings)
            finally:
                await db.close()

        rewrapping = asyncio.run(pending())
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [
        {
            "purpose": item.purpose,
            "kid": item.kid,
            "created": item.created_at.isoformat(),
            "age_days": round(item.age(now).total_seconds() / 86400, 1),
            "every_days": round(item.every.total_seconds() / 86400, 1),
            "due_at": item.due_at.isoformat(),
            "due": item.due(now),
            "automatic": item.automatic,
        }
        for item in statuses
    ]

    def item_due(row: dict[str, object]) -> datetime:
        return datetime.fromisoformat(str(row["due_at"]))

    if as_json:
        typer.echo(json.dumps({"keys": rows, "rewrap_pending": rewrapping}, indent=2))
        return
    table = Table("purpose", "active kid", "age", "every", "due", "rotation", title="Key rotation")
    for row in rows:
        when = "[red]now (overdue)[/]" if row["due"] else f"{item_due(row):%Y-%m-%d %H:%M}"
        table.add_row(
            str(row["purpose"]), str(row["kid"]), f"{row['age_days']}d", f"{row['every_days']}d", when,
            "automatic" if row["automatic"] else "[yellow]manual[/]",
        )  # fmt: skip
    out.print(table)
    if rewrapping:
        out.print(f"[yellow]background rewrap to {rewrapping} not finished yet[/]", highlight=False)


@keys.command("rotate")
def rotate(
    purpose: Annotated[str, typer.Argument(help="encryption, signing or notary")],
    data_dir: DataDir = None,
) -> None:
    """Make a new active key; old ones stay to read what they wrote. Running servers switch at once.

    For signing, every algorithm's keyring (EdDSA, RS256, ES256) rotates: the
    new keys are in the JWKS at once and sign after auth.signing_publish_seconds;
    the old ones stay published until the last token they signed has expired.
    For notary, the next audit checkpoint is signed with the new key; the old
    one stays to verify earlier checkpoints (run `keys export-public` again
    for verifiers off the box)."""
    if purpose not in ROTATABLE:
        with one_line_errors():
            raise CommandError(f"only {_ROTATABLE_TEXT} keys rotate (hmac would change every blind index)")
    from bastion.audit import EventTag
    from bastion.secrets import SIGNING_PURPOSES, open_keyrings

    settings = _settings(data_dir)
    # "signing" means every signing algorithm's keyring: one rotation of the JWKS.
    purposes = SIGNING_PURPOSES if purpose == "signing" else (purpose,)
    with one_line_errors():
        rings = open_keyrings(settings)
        for name in purposes:
            kid = rings.purpose(name).rotate()
            asyncio.run(_audit(settings, EventTag.KEY_ROTATE, {"purpose": name, "kid": kid}))
            out.print(f"[green]new active {name} key:[/] {kid}", highlight=False)
    if purpose == "encryption":
        out.print("run `bastion keys rewrap` to move existing values to it")
    if purpose == "notary":
        out.print("run `bastion keys export-public` to give verifiers the new public key")


@keys.command("rewrap")
def rewrap(
    data_dir: DataDir = None,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="Records per transaction.")] = 500,
) -> None:
    """Re-encrypt every sealed value (encrypted fields, TOTP secrets, the CA key)
    under the active key, in batches. Safe to interrupt and run again; the
    server keeps serving meanwhile."""
    from rich.progress import Progress, TaskID

    from bastion.audit import EventTag
    from bastion.rewrap import rewrap_all
    from bastion.secrets import open_keyrings

    settings = _settings(data_dir)
    with one_line_errors():
        rings = open_keyrings(settings)
    with Progress(transient=False) as progress:
        tasks: dict[str, TaskID] = {}

        def report(collection: str, done: int, total: int) -> None:
            if collection not in tasks:
                tasks[collection] = progress.add_task(collection, total=total)
            progress.update(tasks[collection], completed=done)

        result = asyncio.run(rewrap_all(settings, rings, batch_size=batch_size, report=report))
    with one_line_errors():
        asyncio.run(_audit(settings, EventTag.KEYS_REWRAP, {"rewrapped": result.rewrapped, "corrupt": result.corrupt}))
    out.print(f"[green]rewrapped {result.rewrapped} values[/]", highlight=False)
    if result.corrupt:
        out.print(f"[red]{result.corrupt} values failed their integrity check and were left as they are[/]")
        raise typer.Exit(1)


@keys.command("remove")
def remove(
    purpose: Annotated[str, typer.Argument(help="encryption, signing or notary")],
    kid: Annotated[str, typer.Argument(help="a retired key's id (see `bastion keys list`)")],
    data_dir: DataDir = None,
) -> None:
    """Delete a retired key for good, e.g. one that may be compromised. An
    encryption key is refused while sealed values remain under it (run
    `bastion keys rewrap` first). A signing or notary key is revoked instead
    (see `keys revoke`): what it signed stops verifying at once."""
    if purpose not in ROTATABLE:
        with one_line_errors():
            raise CommandError(f"only {_ROTATABLE_TEXT} keys rotate, so only they have keys to remove")
    from bastion.audit import EventTag
    from bastion.rewrap import count_all
    from bastion.secrets import open_keyrings

    settings = _settings(data_dir)
    with one_line_errors():
        rings = open_keyrings(settings)
        if purpose == "encryption" and (left := asyncio.run(count_all(settings, rings))[kid]):
            raise CommandError(f"{left} sealed values are still under {kid}; run `bastion keys rewrap` first")
        keyring = _holding(rings, purpose, kid)
        if purpose in REVOCABLE:
            # Deleting the entry would lose its place in the rotation schedule
            # (jose._schedule); a tombstone keeps it. The active key stays refused.
            if keyring.active_kid == kid:
                raise CommandError(f"{kid} is the active {keyring.purpose} key; rotate first (or `keys revoke`)")
            keyring.revoke(kid)
        else:
            keyring.remove(kid)
        asyncio.run(_audit(settings, EventTag.KEY_REMOVE, {"purpose": keyring.purpose, "kid": kid}))
    out.print(f"[green]removed {keyring.purpose} key[/] {kid}", highlight=False)


@keys.command("revoke")
def revoke(
    purpose: Annotated[str, typer.Argument(help="signing or notary")],
    kid: Annotated[str, typer.Argument(help="the leaked key's id (see `bastion keys list`)")],
    data_dir: DataDir = None,
) -> None:
    """For a leaked signing key: every token it signed is refused at once (running
    servers within a second, remembered verifications included) and it leaves
    the JWKS. For a leaked notary key: it leaves `keys export-public`, so what it
    signed no longer verifies. Revoking the active key first makes a new one,
    which signs at once."""
    if purpose not in REVOCABLE:
        with one_line_errors():
            raise CommandError(
                "only signing and notary keys are revoked (for others: rotate, rewrap, then `keys remove`)"
            )
    from bastion.audit import EventTag
    from bastion.secrets import open_keyrings

    settings = _settings(data_dir)
    with one_line_errors():
        keyring = _holding(open_keyrings(settings), purpose, kid)
        new_kid = keyring.revoke(kid)
        details: dict[str, object] = {"purpose": keyring.purpose, "kid": kid}
        if new_kid is not None:
            details["new_kid"] = new_kid
        asyncio.run(_audit(settings, EventTag.KEY_REVOKE, details))
    out.print(f"[green]revoked {keyring.purpose} key[/] {kid}", highlight=False)
    if new_kid is not None:
        out.print(f"[green]new active {keyring.purpose} key:[/] {new_kid}", highlight=False)


@keys.command("export-public")
def export_public(
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write here (replaced if it exists); default: standard output.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """The current and retired PUBLIC keys, as JSON, for verifiers off the box:
    the notary's (kid, status, created, the signed-note `vkey` of audit
    checkpoints, raw base64 and PEM) and the token signing keys (a JWK Set).
    Never a private key. Run it again after each rotation."""
    import json

    from bastion.secrets import open_keyrings, public_keys_document

    settings = _settings(data_dir)
    with one_line_errors():
        document = public_keys_document(settings, open_keyrings(settings))
        text = json.dumps(document, indent=2) + "\n"
        if out_file is None:
            typer.echo(text, nl=False)
            return
        try:
            _write_public(out_file, text)
        except OSError as exc:
            raise CommandError(f"{out_file} cannot be written ({exc.strerror})") from None
    count = len(document["notary"]["keys"]) + len(document["signing"]["keys"])
    out.print(f"[green]wrote {count} public keys to[/] {out_file}", highlight=False)


def _write_public(path: Path, text: str) -> None:
    """Write ``text`` next to ``path`` then rename it into place: a reader never sees half a file."""
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(tmp, 0o644)  # public keys: readable by the verifiers' tooling
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _holding(rings: Keyrings, purpose: str, kid: str) -> Keyring:
    """The keyring of ``purpose`` holding ``kid``; "signing" looks in every signing keyring."""
    from bastion.secrets import SIGNING_PURPOSES

    for name in SIGNING_PURPOSES if purpose == "signing" else (purpose,):
        keyring = rings.purpose(name)
        if any(info.kid == kid for info in keyring.kids()):
            return keyring
    raise CommandError(f"no {purpose} key {kid} (see `bastion keys list`)")


async def _audit(settings: Settings, tag: EventTag, details: dict[str, object]) -> None:
    from bastion.audit import Origin, record_event
    from bastion.clock import SystemClock
    from bastion.db import open_database, transaction

    db = open_database(settings.sqlalchemy_url)
    try:
        async with transaction(db) as tx:
            record_event(tx, SystemClock(), tag, origin=Origin.cli(), details=details)
    finally:
        await db.close()
