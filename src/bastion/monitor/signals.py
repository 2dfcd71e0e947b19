"""What the detection rules read and what they produce.

``Signal`` is one observation: an audit event read back from the table (the
tail, ``bastion.monitor.tail``), or an HTTP answer the spine saw (a 5xx, a
403/404 on records, a 401 on an API key), which is counted without writing
an event per attacker request. ``Fired`` is a rule crossing its threshold
for one group; the alert store, the delivery and the automatic responses
take it from there.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Signal:
    at: dt.datetime
    # An audit tag ("auth:login") or an HTTP signal ("http:5xx", "http:records_denied", "http:api_key_401").
    tag: str
    outcome: str = "success"
    # The account concerned (the event's subject, else its actor), when known.
    account_id: uuid.UUID | None = None
    # A keyed hash of the sign-in address as typed (``details["login"]``), for
    # unknown and unverified accounts too: spraying counts these.
    login: str | None = None
    address: str | None = None
    # Who made the request: "user:<id>", "api_key:<id>", "client:<id>".
    principal: str | None = None
    api_key: str | None = None
    user_agent: str | None = None
    # The audit event's id, for the alert's link; None for HTTP signals.
    event_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Fired:
    """Rule ``rule`` crossed ``threshold`` for ``group_key`` ("address:203.0.113.7")."""

    rule: str
    severity: str
    group_key: str
    count: int
    window_seconds: float
    first_seen: dt.datetime
    last_seen: dt.datetime
    actions: tuple[str, ...]
    # The signal that crossed the threshold: who and where, for the actions.
    signal: Signal
    block_for: float = 900.0
