"""``backup create``: snapshot, stage, sign, encrypt, write to every destination, sync the ledger.

The order is what makes a backup trustworthy when anything fails midway:

1. everything is staged in ``<data dir>/.backup-<id>`` (0700): the database
   snapshot and copies of the keystore files, ``bastion.toml``, the TLS
   files, the admin CA's files (``ca/``) and the erasure ledger, so no part
   changes between being hashed and being archived. The master key is never staged (a keystore file that is
   the master key's path is refused);
2. the manifest is signed (``manifest.sig``) and the archive written to
   ``<name>.partial`` in the first local destination, fsynced, renamed;
3. the sidecar ``<name>.manifest`` is written last: a backup without it is
   not complete (``list`` says so; ``prune`` removes such leftovers);
4. copies to the other destinations (file, then sidecar), then the erasure
   ledger beside them.

A crash (even ``kill -9``) leaves at most a ``.partial`` file or a file
without sidecar, and the staging directory, which the next run removes once
it is an hour old.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from bastion.backups.archive import PARTIAL_SUFFIX, write_archive
from bastion.backups.destinations import Destination, LocalDestination, destinations_of
from bastion.backups.errors import BackupUnavailable
from bastion.backups.ledger_sync import LEDGER_NAME, sync_ledger_to
from bastion.backups.manifest import SIDECAR_SUFFIX, Manifest, Part, file_digest, manifest_note, sidecar_note
from bastion.backups.snapshot import take_snapshot
from bastion.security import token_bytes
from bastion.settings import read_toml

if TYPE_CHECKING:
    from bastion.secrets import Keyrings
    from bastion.security import Notary
    from bastion.settings import Settings

__all__ = ["CreatedBackup", "NotarySigner", "Reporter", "create_backup", "new_backup_id", "trusted_vkeys"]

STAGING_PREFIX = ".backup-"
# A staging directory or partial file older than this is a crashed run's leftover.
STALE_SECONDS = 3600.0


class Reporter(Protocol):
    """Where long work reports its progress (the CLI draws a bar; ``serve`` reports nothing)."""

    def stage(self, label: str, total: int | None) -> None:
        """A new stage begins: ``total`` bytes to go, or None when unknown."""

    def advance(self, amount: int) -> None:
        """``amount`` more bytes of the current stage are done."""


class SilentReporter:
    """Reports nowhere."""

    def stage(self, label: str, total: int | None) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass


class NotarySigner:
    """The keystore's notary key signing under the audit checkpoint origin, so that the vkeys of
    ``bastion keys export-public`` verify backups too."""

    def __init__(self, notary: Notary, name: str) -> None:
        self._notary = notary
        self._name = name

    @property
    def kid(self) -> str:
        return self._notary.active_kid

    def sign(self, body: str) -> str:
        return self._notary.sign(body, self._name).note


def trusted_vkeys(settings: Settings, keys: Keyrings) -> list[str]:
    """The live keystore's notary verifier keys (active and retired) under the checkpoint origin."""
    from bastion.secrets import checkpoint_origin

    return keys.notary_signer().vkeys(checkpoint_origin(settings))


@dataclass(frozen=True)
class CreatedBackup:
    """A complete backup: where it is (the first destination's copy: a path, or an s3:// URL, and
    ``path`` when it is a local file), its manifest, size, time taken and every destination holding it."""

    location: str
    path: Path | None
    manifest: Manifest
    size: int
    seconds: float
    copies: tuple[str, ...]


def new_backup_id(at: dt.datetime) -> str:
    """``bastion-<YYYYmmddTHHMMSSZ>-<8 hex>``: sorts by time, unique within the second."""
    return f"bastion-{at.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{token_bytes(4).hex()}"


def _remove_stale(data_dir: Path, now: float) -> None:
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(data_dir):
            stale = now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS
            if entry.name.startswith(STAGING_PREFIX) and entry.is_dir(follow_symlinks=False) and stale:
                shutil.rmtree(entry.path, ignore_errors=True)


def _copy_in(source: Path, target: Path) -> None:
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with source.open("rb") as file, os.fdopen(fd, "wb") as copy:
        shutil.copyfileobj(file, copy, 1 << 20)


def _regular_files(directory: Path) -> list[Path]:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    return [Path(e.path) for e in entries if e.is_file(follow_symlinks=False) and not e.name.startswith(".")]


def _stage_files(settings: Settings, staging: Path) -> list[tuple[str, Path]]:
    """Copies of the keystore, the configuration, the TLS and CA files and the ledger, as (archive path, copy)."""
    _, master_file = settings.master_key_source()
    forbidden = {master_file.resolve()} if master_file is not None else set()
    wanted: list[tuple[str, Path]] = []
    if settings.config_file.is_file():
        wanted.append(("bastion.toml", settings.config_file))
    wanted.extend((f"keys/{path.name}", path) for path in _regular_files(settings.keys_dir))
    wanted.extend((f"tls/{path.name}", path) for path in _regular_files(settings.data_dir / "tls"))
    # The admin CA: ca.pem, crl.pem, issued.json (its key is sealed in keys/, staged above).
    wanted.extend((f"ca/{path.name}", path) for path in _regular_files(settings.data_dir / "ca"))
    ledger = settings.data_dir / LEDGER_NAME
    if ledger.is_file():
        wanted.append((LEDGER_NAME, ledger))
    staged: list[tuple[str, Path]] = []
    for name, source in wanted:
        if source.resolve() in forbidden:
            raise BackupUnavailable(f"{source} is the master key: it never goes into a backup")
        target = staging / name
        _copy_in(source, target)
        staged.append((name, target))
    if (staging / "bastion.toml").is_file() and "master_key" in read_toml(staging / "bastion.toml"):
        raise BackupUnavailable(
            f"{settings.config_file} holds master_key: move it to BASTION_MASTER_KEY_FILE before backing up"
        )
    return staged


def _first_local(destinations: Sequence[Destination]) -> LocalDestination | None:
    first = destinations[0]
    return first if isinstance(first, LocalDestination) else None


async def _catch_up_ledger(settings: Settings) -> None:
    """Every erasure the database records in the ledger file before it is copied (``catch_up``)."""
    from bastion.db import open_database
    from bastion.privacy.ledger import catch_up

    db = open_database(settings.sqlalchemy_url)
    try:
        await catch_up(settings, db)
    except OSError as exc:
        raise BackupUnavailable(f"the erasure ledger cannot be written ({exc.strerror or exc})") from None
    finally:
        await db.close()


async def create_backup(
    settings: Settings,
    keys: Keyrings,
    *,
    destinations: Sequence[Destination] | None = None,
    reporter: Reporter | None = None,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> CreatedBackup:
    """Make one backup of the instance ``settings`` names and copy it to every destination
    (``[backups] dir`` then ``destinations``, or the ``destinations`` given); BackupUnavailable
    when it cannot (no recipients, a destination unreachable, ``pg_dump`` missing)."""
    import asyncio

    from bastion import __version__
    from bastion.secrets import checkpoint_origin

    recipients = [str(r) for r in settings.backups.recipients]
    if not recipients:
        raise BackupUnavailable(
            "no recipients: set [backups] recipients to the age1… line `bastion backup keygen` printed"
        )
    report = reporter or SilentReporter()
    targets = list(destinations) if destinations is not None else destinations_of(settings)
    started = time.monotonic()
    created_at = now().astimezone(dt.UTC).replace(microsecond=0)
    backup_id = new_backup_id(created_at)
    await asyncio.to_thread(_remove_stale, settings.data_dir, time.time())
    await _catch_up_ledger(settings)
    staging = settings.data_dir / f"{STAGING_PREFIX}{backup_id}"
    staging.mkdir(mode=0o700)
    try:
        report.stage("snapshot", None)
        snapshot = await take_snapshot(settings.sqlalchemy_url, staging)
        parts = [(snapshot.path.name, snapshot.path), *await asyncio.to_thread(_stage_files, settings, staging)]
        report.stage("hashing", sum(path.stat().st_size for _, path in parts))
        digests: dict[str, Part] = {}
        for name, path in parts:
            digests[name] = await asyncio.to_thread(file_digest, path)
            report.advance(digests[name].size)
        signer = NotarySigner(keys.notary_signer(), checkpoint_origin(settings))
        manifest = Manifest(
            id=backup_id,
            created_at=created_at,
            bastion_version=__version__,
            schema_revision=snapshot.schema_revision,
            database=snapshot.database,
            tables=snapshot.tables,
            parts=digests,
            recipients=recipients,
            notary_kid=signer.kid,
        )
        manifest_json = manifest.to_json()
        manifest_sig = manifest_note(manifest_json, backup_id, signer).encode()
        local = _first_local(targets)
        out_dir = local.path if local is not None else staging
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        final = out_dir / manifest.name
        partial = final.with_name(final.name + PARTIAL_SUFFIX)
        report.stage("encrypting", sum(p.size for p in digests.values()))
        try:
            encrypted = await asyncio.to_thread(
                lambda: write_archive(
                    partial,
                    manifest_json,
                    manifest_sig,
                    parts,
                    recipients,
                    mtime=created_at.timestamp(),
                    progress=report.advance,
                )
            )
            os.replace(partial, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            raise
        sidecar = sidecar_note(final.name, encrypted, manifest_json, signer).encode()
        copies = await asyncio.to_thread(_distribute, targets, local, final, sidecar, report)
        await asyncio.to_thread(lambda: sync_ledger_to(settings, targets, keys=keys))
    finally:
        # Off the event loop: unlinking a large snapshot takes a while (~0.3 s for 200 MB, measured).
        await asyncio.to_thread(shutil.rmtree, staging, ignore_errors=True)
    location = str(final) if local is not None else f"{targets[0].name.rstrip('/')}/{final.name}"
    return CreatedBackup(
        location, final if local is not None else None, manifest, encrypted.size, time.monotonic() - started, copies
    )


def _distribute(
    targets: Sequence[Destination],
    local: LocalDestination | None,
    final: Path,
    sidecar: bytes,
    report: Reporter,
) -> tuple[str, ...]:
    """The sidecar beside the local file, then file and sidecar to every other destination."""
    if local is not None:
        local.write_bytes(final.name + SIDECAR_SUFFIX, sidecar)
    copies = []
    for target in targets:
        if target is local:
            copies.append(target.name)
            continue
        report.stage(f"copying to {target.name}", None)
        target.put(final, final.name)
        target.write_bytes(final.name + SIDECAR_SUFFIX, sidecar)
        copies.append(target.name)
    return tuple(copies)
