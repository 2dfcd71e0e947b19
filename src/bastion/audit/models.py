"""The audit log: append-only rows, one per security event, and the Merkle
tree over them (RFC 6962) with its signed checkpoints."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, LargeBinary, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    tag: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    subject_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    ip: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # RFC 6962 leaf hash of the event's entry, computed as it is written. The
    # entry commits to the personal fields (actor, subject, address, details)
    # through a salted hash, so erasing the salt and the fields (redacted) or
    # the whole row's content (purged) leaves the tree verifiable.
    leaf_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    personal_salt: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    # The leaf's index in the tree, given by the sequencer once committed
    # (unique; None until then), and its seal over (seq, leaf_hash).
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True, index=True)
    seal: Mapped[str | None] = mapped_column(String(128))
    redacted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    purged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class AuditTreeState(Base):
    """The tree as the sequencer left it: its size and right edge (compact range)."""

    __tablename__ = "audit_tree"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    # Concatenated 32-byte hashes of the tree's right edge, largest subtree first.
    frontier: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    root_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class AuditCheckpoint(Base):
    """A signed checkpoint (C2SP tlog-checkpoint signed note) of the tree at ``size``."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    size: Mapped[int] = mapped_column(BigInteger, index=True)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    key_id: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text)
