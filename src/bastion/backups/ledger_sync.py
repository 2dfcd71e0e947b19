"""The erasure ledger beside the backups: the data directory's copy merged into every destination's.

A restore applies the ledgers it finds beside the backup, so each must hold
every erasure made before it: ``backup create`` syncs after each backup, and
the erasure service calls :func:`sync_ledger` right after an erasure.

The merge is ``bastion.privacy.ledger.merge_ledgers``: a union of lines by
their exact content, oldest first. Every line, the data directory's and the
destination's, is first verified on its own against the live keystore's
notary keys (``read_ledger``, active and retired keys): a line that does not
parse or verify is left out with a warning, never copied, so one bad line
cannot make every destination's ledger unreadable to a restore (which
refuses a ledger holding one).

Two syncs at once (a backup and an erasure, or two processes) take a lock
file in the data directory, so neither writes a merge that misses the
other's line. That lock is one host's: on S3, where several hosts may sync
into one prefix, each write is a conditional PUT (``If-Match`` on the ETag
read), and a sync that lost the race reads and merges again. A directory
destination shared by several hosts (NFS) has only the local lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

from bastion.logging import get_logger
from bastion.privacy.ledger import LEDGER_NAME, LedgerInvalid, ledger_path, locked, merge_ledgers, read_ledger

if TYPE_CHECKING:
    from bastion.backups.destinations import Destination
    from bastion.secrets import Keyrings
    from bastion.settings import Settings

__all__ = ["LEDGER_NAME", "complete_lines", "ledger_path", "sync_ledger", "sync_ledger_to", "verified_lines"]

# Each lost race is another writer's one successful merge: ten attempts serve up to ten hosts at once.
_S3_ATTEMPTS = 10
log = get_logger(__name__)


def verified_lines(text: bytes, keys: Keyrings, where: str) -> bytes:
    """The lines of ``text`` that parse and verify against ``keys``' notary keys; each other
    (non-blank) line is left out, with a warning naming ``where`` and its line number."""
    kept: list[bytes] = []
    for number, line in enumerate(text.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            read_ledger(line, keys)
        except LedgerInvalid as exc:
            reason = str(exc).partition(": ")[2] or str(exc)
            log.warning("erasure ledger: a line left out", where=where, line=number, reason=reason)
            continue
        kept.append(line + b"\n")
    return b"".join(kept)


def complete_lines(text: bytes) -> bytes:
    """``text`` without a last line that has no newline yet: an entry being appended (the erasure
    writes each line with one ``write``, which a reader may see half done) or cut by a crash. Carried
    to every destination, half a line would make every restore's ledger unreadable."""
    end = text.rfind(b"\n")
    return text[: end + 1]


def sync_ledger_to(settings: Settings, destinations: Iterable[Destination], *, keys: Keyrings | None = None) -> int:
    """Merge the data directory's ledger into each destination's, every line verified against
    ``keys`` (default: the live keystore's); how many destinations changed."""
    from bastion.secrets import open_keyrings

    with locked(settings.data_dir):
        try:
            raw = complete_lines(ledger_path(settings).read_bytes())
        except FileNotFoundError:
            return 0  # nothing erased yet: nothing to carry
        keyrings = keys if keys is not None else open_keyrings(settings)
        local = verified_lines(raw, keyrings, str(ledger_path(settings)))
        return sum(_merge_into(destination, local, keyrings) for destination in destinations)


def _merge_into(destination: Destination, local: bytes, keys: Keyrings) -> bool:
    """Merge ``local`` into the destination's ledger; whether it changed. On S3 each write is a
    conditional PUT on the ETag read (another host's sync in between: read and merge again)."""
    from bastion.backups.destinations import S3Destination
    from bastion.backups.errors import BackupUnavailable

    where = f"{destination.name}/{LEDGER_NAME}"
    if not isinstance(destination, S3Destination):
        current = destination.read_bytes(LEDGER_NAME) or b""
        merged = merge_ledgers(verified_lines(current, keys, where), local)
        if merged == current:
            return False
        destination.write_bytes(LEDGER_NAME, merged)
        return True
    for _ in range(_S3_ATTEMPTS):
        found, etag = destination.read_tagged(LEDGER_NAME)
        current = found or b""
        merged = merge_ledgers(verified_lines(current, keys, where), local)
        if merged == current:
            return False
        if destination.write_if(LEDGER_NAME, merged, etag):
            return True
    raise BackupUnavailable(f"{where}: changed by another writer {_S3_ATTEMPTS} times in a row; run again")


async def sync_ledger(settings: Settings) -> None:
    """The hook erasure calls after an erasure, and ``backup create`` after a backup: every configured
    destination gets the data directory's ledger lines; BackupUnavailable if one cannot be written."""
    from bastion.backups.destinations import destinations_of

    await asyncio.to_thread(sync_ledger_to, settings, destinations_of(settings))
