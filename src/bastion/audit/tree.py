"""The sequencer and the checkpointer: ``AuditLog``, a background job of the
serving process.

Invariants:

- ``audit_events.seq`` is 0, 1, 2, … without gaps, in the order the
  sequencer took the rows; ``audit_tree`` ('main') holds the size and right
  edge (RFC 6962 compact range) of the tree over the leaves in ``seq`` order,
  and is changed in the same transaction as the rows it covers: a batch
  first takes the tree's row (locked until it commits), and its final update
  is a compare-and-set on the size, so two sequencers (a lease that ran out
  under a stalled holder) take turns and cannot both extend it.
- Each sequenced row is sealed: ``seal`` = the keyed hash (HMAC, "hmac"
  keyring) of ``"<seq>:<id>:<leaf hex>"``. Someone with only the database
  can recompute leaves and the tree, but not seals: a moved, swapped or
  renumbered row no longer matches its seal.
- A row is adopted only if its ``at`` is no older than the newest sequenced
  event's (the latest ``at`` in the tree, ``log_head``) by more than
  ``BACKDATE_TOLERANCE`` (10 minutes): an event inserted "into the past"
  with SQL stays unsequenced, and ``bastion audit verify`` names it.
  The judgement is in effect made when the sequencer first sees the row:
  ``record_event`` inserts its rows as their transaction commits (ids and
  visibility come then), every pass takes every visible row inside the
  tolerance, and the head only moves forward, so a row is refused only if
  it was already that far behind when it first appeared. The head is the
  latest ``at``, not the last ``seq``: a lagging row taken last does not
  pull the tolerance back (nor can rows inserted a step at a time).
  The tolerance is generous so that honest rows are never refused: ``at`` is
  taken as the event is recorded, so it lags its commit by the transaction's
  length (seconds), plus the skew between the clocks of the instances that
  write (keep them NTP-synchronised; more than ten minutes of skew is a
  fault, and then shows up as below).
- A row left pending behind the tolerance is never silent: each pass looks
  for such rows, and each new one is logged as an error and recorded as an
  ``audit:backdated`` event (ids named in its details), which the monitor's
  built-in rule ``audit-backdated`` alerts on.
- A checkpoint (C2SP tlog-checkpoint signed note, Ed25519 notary key) is
  signed at least every ``audit.checkpoint_interval`` while the tree grew,
  and after every ``audit.checkpoint_every`` events; it is stored in
  ``audit_checkpoints`` and then shipped to the sinks (``bastion.audit.sinks``).
  A sink that fails never undoes the stored checkpoint: it is logged and
  recorded as an ``audit:sink_failed`` event.

The job holds lease "audit-sequencer", so one process of the cluster runs it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import structlog

from bastion.audit.entry import format_at
from bastion.audit.models import AuditCheckpoint, AuditEvent, AuditTreeState
from bastion.audit.notary import Notary
from bastion.audit.sinks import Sink
from bastion.clock import Clock
from bastion.db import Database, leases, transaction
from bastion.secrets import checkpoint_origin
from bastion.security import keyed_hash
from bastion.security.keyed import KeyedHashes
from bastion.security.keys import Keyring
from bastion.security.merkle import Frontier
from bastion.security.notes import checkpoint_body
from bastion.settings import Settings

log = structlog.get_logger("bastion.audit")

TREE = "main"
LEASE = "audit-sequencer"
LEASE_SECONDS = 10.0
POLL_SECONDS = 0.3
# Rows per sequencing transaction: on SQLite it holds the one writer, so a
# batch stays short (~50 ms) next to the requests that write.
BATCH = 1000
# An unsequenced row older than the log's newest event by more than this when
# it appears was not written by record_event (whose transactions last seconds,
# on clocks kept in sync): inserted. Generous, so honest rows are never refused.
BACKDATE_TOLERANCE = dt.timedelta(minutes=10)
# How many refused rows one pass reports (one event per pass names them).
REPORT_LIMIT = 100
REPORT_EVERY = 100  # passes (~30 s at the default poll)
SEAL_CONTEXT = "audit.seal"


def seal_of(hmac_ring: Keyring, seq: int, event_id: int, leaf: bytes) -> str:
    """The seal of the row ``event_id`` at index ``seq`` with leaf ``leaf``."""
    return keyed_hash(hmac_ring, seal_message(seq, event_id, leaf), SEAL_CONTEXT)


def seal_message(seq: int, event_id: int, leaf: bytes) -> str:
    return f"{seq}:{event_id}:{leaf.hex()}"


def origin_of(settings: Settings) -> str:
    """The checkpoint's origin line and key name: ``audit.origin``, else the public URL's host + "/audit"
    (``bastion.secrets.checkpoint_origin``, which ``keys export-public`` names the vkeys by)."""
    return checkpoint_origin(settings)


@dataclass(frozen=True)
class Checkpoint:
    size: int
    root: bytes
    at: dt.datetime
    key_id: str
    note: str


class _Lost(Exception):
    """Another sequencer extended the tree first: this batch is rolled back."""


async def log_head(db: Any) -> dt.datetime | None:
    """The time of the newest sequenced event (the latest ``at``, not the last ``seq``: a
    lagging row taken last must not pull the tolerance back; ``at`` is indexed)."""
    value: dt.datetime | None = await db.value(
        sa.select(AuditEvent.at).where(AuditEvent.seq.is_not(None)).order_by(AuditEvent.at.desc()).limit(1)
    )
    return value


async def tree_state(db: Any) -> Any:
    return await db.one(sa.select(AuditTreeState).where(AuditTreeState.name == TREE))


class AuditLog:
    """The job (``Services.jobs``) and the API the command line and tests call."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        clock: Clock,
        hmac_ring: Keyring,
        notary: Notary,
        *,
        sinks: Sequence[Sink] = (),
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        self.hmac = hmac_ring
        self._seals = KeyedHashes(hmac_ring, SEAL_CONTEXT)
        self.notary = notary
        self.sinks = list(sinks)
        self.origin = origin_of(settings)
        self.loop = leases.LeasedLoop(
            db, LEASE, self._pass, interval=poll_seconds, lease_seconds=LEASE_SECONDS, stop_timeout=5.0
        )
        self._shipping: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        # Rows already reported as left pending behind the tolerance (once per process).
        self._reported: set[int] = set()
        self._passes = 0

    # -- job ---------------------------------------------------------------

    async def start(self) -> None:
        await self.loop.start()

    async def stop(self) -> None:
        await self.loop.stop()
        if self._shipping:
            await asyncio.gather(*self._shipping, return_exceptions=True)

    async def _pass(self) -> None:
        await self.sequence_now()
        await self.checkpoint_if_due()

    # -- sequencing ----------------------------------------------------------

    async def sequence_now(self) -> int:
        """Give every committed, unsequenced event its place in the tree; how many were placed."""
        async with self._lock:
            total = 0
            while True:
                try:
                    placed, more, pending = await self._sequence_batch()
                except _Lost:
                    continue  # the other sequencer's rows are in; go on from its tree
                total += placed
                if not more:
                    # Quiet polls stay one read: the look for rows left behind runs when
                    # rows were pending, and every REPORT_EVERY passes (rows with no leaf).
                    self._passes += 1
                    if pending or self._passes % REPORT_EVERY == 1:
                        await self._report_backdated()
                    return total

    async def _sequence_batch(self) -> tuple[int, bool, bool]:
        """(rows placed, whether a full batch was placed, whether any row was pending)."""
        # A cheap read first: most polls find nothing and must not take the writer.
        pending = await self.db.value(
            sa.select(AuditEvent.id).where(AuditEvent.seq.is_(None), AuditEvent.leaf_hash.is_not(None)).limit(1)
        )
        if pending is None:
            return 0, False, False
        async with transaction(self.db) as tx:
            # Take the tree's row first (a row lock on PostgreSQL, the writer on
            # SQLite): a second sequencer waits here, then reads the tree this
            # one left, instead of numbering the same seq and failing on it.
            await tx.execute(sa.update(AuditTreeState).where(AuditTreeState.name == TREE).values(name=TREE))
            state = await tree_state(tx)
            newest = await log_head(tx) if state.size > 0 else None
            horizon = newest - BACKDATE_TOLERANCE if newest is not None else None
            query = sa.select(AuditEvent.id, AuditEvent.at, AuditEvent.leaf_hash).where(
                AuditEvent.seq.is_(None), AuditEvent.leaf_hash.is_not(None)
            )
            if horizon is not None:
                query = query.where(AuditEvent.at >= horizon)
            rows = await tx.all(query.order_by(AuditEvent.id).limit(BATCH))
            frontier = Frontier.from_bytes(state.size, state.frontier)
            seal = self._seals.maker()
            updates: list[dict[str, Any]] = []
            for row in rows:
                leaf = bytes(row.leaf_hash)
                if len(leaf) != 32:
                    continue
                seq = frontier.size
                frontier.append(leaf)
                updates.append({"_id": row.id, "_seq": seq, "_seal": seal(seal_message(seq, row.id, leaf))})
            if not updates:
                return 0, False, True
            await tx.execute_many(
                sa.update(AuditEvent)
                .where(AuditEvent.id == sa.bindparam("_id"), AuditEvent.seq.is_(None))
                .values(seq=sa.bindparam("_seq"), seal=sa.bindparam("_seal")),
                updates,
            )
            moved = await tx.execute(
                sa.update(AuditTreeState)
                .where(AuditTreeState.name == TREE, AuditTreeState.size == state.size)
                .values(
                    size=frontier.size,
                    frontier=frontier.to_bytes(),
                    root_hash=frontier.root(),
                    updated_at=self.clock.now(),
                )
            )
            if moved != 1:
                raise _Lost
        return len(updates), len(rows) == BATCH, True

    async def _report_backdated(self) -> None:
        """Log and record the rows left pending behind the tolerance that were not reported yet."""
        newest = await log_head(self.db)
        if newest is None:
            return
        ids = await self.db.all(
            sa.select(AuditEvent.id)
            .where(AuditEvent.seq.is_(None), AuditEvent.at < newest - BACKDATE_TOLERANCE)
            .order_by(AuditEvent.id)
            .limit(REPORT_LIMIT)
        )
        new = [int(row.id) for row in ids if int(row.id) not in self._reported]
        if not new:
            return
        log.error("audit events left out of the tree: dated behind the log", events=new)
        from bastion.audit.events import EventTag, Outcome
        from bastion.audit.service import Origin, record_event

        try:
            async with transaction(self.db) as tx:
                record_event(
                    tx,
                    self.clock,
                    EventTag.AUDIT_BACKDATED,
                    origin=Origin(request_id="audit-sequencer"),
                    outcome=Outcome.FAILURE,
                    details={"events": new, "tolerance_seconds": int(BACKDATE_TOLERANCE.total_seconds())},
                )
        except Exception:
            log.exception("audit backdated rows could not be recorded")
            return
        self._reported.update(new)

    # -- checkpoints ---------------------------------------------------------

    async def latest_checkpoint(self) -> Any:
        return await self.db.one(
            sa.select(AuditCheckpoint).order_by(AuditCheckpoint.size.desc(), AuditCheckpoint.id.desc()).limit(1)
        )

    async def checkpoint_if_due(self) -> Checkpoint | None:
        """A checkpoint when the tree grew and the interval passed, or ``checkpoint_every`` events came."""
        state = await tree_state(self.db)
        last = await self.latest_checkpoint()
        if state.size == 0 or (last is not None and last.size >= state.size):
            return None
        now = self.clock.now()
        audit = self.settings.audit
        due = (
            last is None
            or state.size - last.size >= audit.checkpoint_every
            or now - last.at >= dt.timedelta(seconds=audit.checkpoint_interval)
        )
        return await self.checkpoint_now() if due else None

    async def checkpoint_now(self) -> Checkpoint | None:
        """Sign, store and ship a checkpoint of the tree as it is (None if the tree is empty
        or the latest checkpoint already covers it)."""
        state = await tree_state(self.db)
        last = await self.latest_checkpoint()
        if state.size == 0 or (last is not None and last.size >= state.size):
            return None
        root = bytes(state.root_hash)
        at = self.clock.now()
        # The signing time rides as an extension line (C2SP tlog-checkpoint allows them).
        body = checkpoint_body(self.origin, state.size, root, [f"time {format_at(at)}"])
        kid, note = self.notary.sign(body)
        checkpoint = Checkpoint(size=state.size, root=root, at=at, key_id=kid, note=note)
        async with transaction(self.db) as tx:
            await tx.execute(
                sa.insert(AuditCheckpoint).values(
                    size=checkpoint.size,
                    root_hash=checkpoint.root,
                    at=checkpoint.at,
                    key_id=checkpoint.key_id,
                    note=checkpoint.note,
                )
            )
        log.info("audit checkpoint", size=checkpoint.size, key_id=kid)
        if self.sinks:
            task = asyncio.create_task(self._ship(checkpoint))
            self._shipping.add(task)
            task.add_done_callback(self._shipping.discard)
        return checkpoint

    async def ship_pending(self) -> None:
        """Wait for the sinks of the checkpoints signed so far (tests, the command line)."""
        while self._shipping:
            await asyncio.gather(*list(self._shipping), return_exceptions=True)

    async def _ship(self, checkpoint: Checkpoint) -> None:
        for sink in self.sinks:
            try:
                await sink.send(checkpoint.size, checkpoint.note)
            except Exception as exc:  # noqa: BLE001 - a sink failure is logged and recorded, never fatal
                log.warning("audit checkpoint sink failed", sink=sink.name, size=checkpoint.size, error=str(exc))
                await self._record_sink_failure(sink.name, checkpoint.size, exc)

    async def _record_sink_failure(self, sink: str, size: int, exc: Exception) -> None:
        from bastion.audit.events import EventTag, Outcome
        from bastion.audit.service import Origin, record_event

        try:
            async with transaction(self.db) as tx:
                record_event(
                    tx,
                    self.clock,
                    EventTag.AUDIT_SINK_FAILED,
                    origin=Origin(request_id="audit-sequencer"),
                    outcome=Outcome.FAILURE,
                    details={"sink": sink, "size": size, "error": type(exc.__cause__ or exc).__name__},
                )
        except Exception:
            log.exception("audit sink failure could not be recorded")
