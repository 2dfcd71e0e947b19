"""One age identity for the backup tests (made once per run): backups are encrypted to RECIPIENT."""

from __future__ import annotations

from bastion.security.age import new_identity

__all__ = ["IDENTITY", "RECIPIENT"]

IDENTITY, RECIPIENT = new_identity()
