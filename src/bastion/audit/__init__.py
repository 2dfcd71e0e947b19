"""The audit log: typed, append-only security events, and the tamper-evident
Merkle tree over them (``bastion.audit.tree``: sequencer and checkpoints;
``verify``, ``export``: checking and bundling it; ``retention``: erasure that
keeps it verifiable)."""

from bastion.audit.events import EventTag, Outcome
from bastion.audit.export import ExportRefused, export_bundle
from bastion.audit.retention import purge_events_before, redact_events
from bastion.audit.service import Origin, events_after, events_for, last_event_id, record_event

__all__ = [
    "EventTag",
    "ExportRefused",
    "Origin",
    "Outcome",
    "events_after",
    "events_for",
    "export_bundle",
    "last_event_id",
    "purge_events_before",
    "record_event",
    "redact_events",
]
