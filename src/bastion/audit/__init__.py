"""The audit log: typed, append-only security events."""

from bastion.audit.events import EventTag, Outcome
from bastion.audit.service import Origin, events_for, record_event

__all__ = ["EventTag", "Origin", "Outcome", "events_for", "record_event"]
