"""Applying the erasure ledgers to a restored instance, before it first starts.

An old backup still holds the users erased since it was made. ``restore``
gathers every ledger it can find — beside the backup file, inside the
archive, in every destination the restored settings name, and the data
directory being replaced (``--force``) — merges them (each line is one signed
entry: the union of ledgers is a ledger), checks every line's signature with
the notary keys trusted for the backup, writes the merged ledger into the
restored data directory (so its next backups carry it on) and erases each
listed user from the restored instance exactly as erasure does
(``bastion.privacy.ledger.apply_ledger``). A destination that cannot be read
stops the restore: a ledger missed is an erased user back.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.backups.errors import BackupInvalid, BackupUnavailable
from bastion.backups.ledger_sync import LEDGER_NAME
from bastion.privacy.ledger import LedgerInvalid, apply_ledger, merge_ledgers, read_ledger

if TYPE_CHECKING:
    from bastion.backups.destinations import Destination
    from bastion.settings import Settings

__all__ = ["apply_erasure_ledgers", "gather_ledgers"]


def gather_ledgers(files: Iterable[Path], destinations: Iterable[Destination]) -> list[bytes]:
    """Every ledger text found in ``files`` (missing ones skipped) and beside the backups of ``destinations``."""
    texts: list[bytes] = []
    for path in files:
        try:
            texts.append(path.read_bytes())
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise BackupUnavailable(f"{path}: cannot be read ({exc.strerror})") from None
    for destination in destinations:
        data = destination.read_bytes(LEDGER_NAME)
        if data is not None:
            texts.append(data)
    return texts


async def apply_erasure_ledgers(restored: Settings, texts: Sequence[bytes], vkeys: Sequence[str]) -> int:
    """Merge ``texts``, check every line, write the ledger into the restored data dir, erase; how many."""
    try:
        merged = merge_ledgers(*texts)
        entries = read_ledger(merged, list(vkeys))
    except LedgerInvalid as exc:
        raise BackupInvalid(str(exc)) from None
    if not entries:
        return 0
    target = restored.data_dir / LEDGER_NAME
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(merged)
    return await apply_ledger(restored, entries)
