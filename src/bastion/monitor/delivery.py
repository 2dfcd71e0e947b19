"""Alert delivery: signed webhooks and mail to the security contacts.

``Dispatcher.enqueue(tx, alert)`` writes one ``alert_deliveries`` row per
``alerts.webhook_urls`` entry and one per ``alerts.mail_to`` address, in the
transaction that stored the alert: a delivery exists exactly when its alert
does, and survives a restart. The ``Dispatcher`` job (lease
``alert-delivery``, one sender cluster-wide) sends the rows that are due:

- a webhook is a JSON POST signed per Standard Webhooks
  (https://www.standardwebhooks.com, "Signature scheme"): headers
  ``webhook-id`` (the delivery's id, the same on every retry, so a receiver
  drops duplicates), ``webhook-timestamp`` (Unix seconds of this attempt) and
  ``webhook-signature`` (``v1,`` base64 HMAC-SHA256 of ``id.timestamp.body``
  under ``alerts.webhook_secret``). Any 2xx is delivered; redirects are not
  followed (a receiver that moved is an error to fix, not a hop to take);
- a mail goes through the configured mailer (the Postman's: outbox or SMTP),
  its subject naming the rule and the severity.

A failed attempt is retried after ``retry_after · 2^(attempt-1)`` seconds (at
most a day); after ``max_attempts`` the row becomes ``dead``: a dead-letter
record that keeps the last error, logged at error level.

Invariants:

- The payload is built once, at enqueue, from the alert's columns only (rule,
  severity, group, count, first and last seen, window, a link to the admin
  API): never a secret, a password or a token. The secret signs; it is never
  sent, stored in a row, or logged.
- Logs and ``last_error`` name a webhook by its origin only
  (``https://host:port``): many receivers carry a token in their path.
- A row is claimed before it is sent (compare-and-set on its attempt count,
  moving ``next_attempt_at`` past the send's timeout), so two senders (a lease
  lost mid-send) never send one attempt twice.
- Promptness: ``enqueue`` wakes this process's loop; until the enqueuing
  transaction commits the rows are invisible, so the loop looks again every
  few milliseconds for the rows it was told about (for at most
  ``WAKE_SECONDS``), and otherwise every ``POLL_SECONDS`` for rows other
  processes enqueued.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson
import structlog
from sqlalchemy import insert, select, update

from bastion.clock import Clock
from bastion.db import Database, Transaction, leases, transaction
from bastion.http.urls import shown_url
from bastion.mail import Mail, Mailer, MailError
from bastion.monitor.models import AlertDelivery
from bastion.security import signature_headers
from bastion.settings import Settings

log = structlog.get_logger("bastion.monitor.delivery")

LEASE = "alert-delivery"
LEASE_SECONDS = 10.0
# Rows written by other processes are found within this, so their alerts go out promptly.
POLL_SECONDS = 0.5
# After enqueue, how often and how long the loop looks for the rows it was told about.
WAKE_STEP_SECONDS = 0.005
WAKE_SECONDS = 2.0
MAX_BACKOFF_SECONDS = 86400.0
# Deliveries sent at once per pass; each one is bounded by alerts.timeout.
BATCH = 32
USER_AGENT = "Bastion-Alerts/1 (Standard Webhooks)"
PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"


class AlertRow(Protocol):
    """What ``enqueue`` reads of an alert: the ``alerts`` table's columns (a row or the model)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def rule(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def group_key(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def first_seen(self) -> dt.datetime: ...
    @property
    def last_seen(self) -> dt.datetime: ...
    @property
    def count(self) -> int: ...
    @property
    def details(self) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True)
class Delivery:
    """One row of ``alert_deliveries`` as read back (the CLI, the admin API, tests)."""

    id: uuid.UUID
    alert_id: uuid.UUID
    channel: str
    target: str
    status: str
    attempts: int
    next_attempt_at: dt.datetime
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    last_error: str | None

    @property
    def shown_target(self) -> str:
        """The target as logs and listings show it (a webhook's origin only)."""
        return shown_target(self.channel, self.target)


def shown_target(channel: str, target: str) -> str:
    """A webhook URL reduced to its origin (``https://host:port/…``); a mail address as is."""
    if channel != "webhook":
        return target
    return shown_url(target)


def admin_base(settings: Settings) -> str:
    """Where the links in alerts point: ``alerts.admin_url``, else the admin listener."""
    if settings.alerts.admin_url:
        return settings.alerts.admin_url
    host = settings.admin.host
    host = f"[{host}]" if ":" in host else host
    return f"https://{host}:{settings.admin.port}"


def build_payload(alert: AlertRow, *, base: str, now: dt.datetime) -> dict[str, Any]:
    """The alert as receivers read it (Standard Webhooks' ``type``/``timestamp``/``data`` shape).

    Only the alert's own columns, named explicitly: ``details`` is not copied
    whole (it is the rules' to fill), only its ``window_seconds``.
    """
    details = alert.details or {}
    window = details.get("window_seconds")
    return {
        "type": "alert.raised",
        "timestamp": now.isoformat(),
        "data": {
            "id": str(alert.id),
            "rule": alert.rule,
            "severity": alert.severity,
            "group": alert.group_key,
            "status": alert.status,
            "count": alert.count,
            "first_seen": alert.first_seen.isoformat(),
            "last_seen": alert.last_seen.isoformat(),
            "window_seconds": float(window) if isinstance(window, (int, float)) else None,
            "link": f"{base}/admin/api/v1/alerts/{alert.id}",
        },
    }


def mail_of(target: str, payload: Mapping[str, Any]) -> Mail:
    """The mail to a security contact: the subject names the rule and the severity."""
    data = payload["data"]
    window = data.get("window_seconds")
    lines = [
        f"Bastion raised an alert: rule {data['rule']}, severity {data['severity']}.",
        "",
        f"Group:      {data['group']}",
        f"Count:      {data['count']}",
        f"First seen: {data['first_seen']}",
        f"Last seen:  {data['last_seen']}",
    ]
    if window is not None:
        lines.append(f"Window:     {window:g} s")
    lines += [
        "",
        "See it and acknowledge it in the admin API:",
        data["link"],
        "or on the server: bastion alerts list, bastion alerts ack ID",
    ]
    return Mail(
        to=target,
        subject=f"[Bastion] {data['severity']} alert: {data['rule']}",
        text="\n".join(lines) + "\n",
    )


def body_of(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes sent and signed (sorted keys: the same on every retry)."""
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)


class Dispatcher:
    """The alert-delivery job: ``enqueue`` in the alert's transaction, ``start``/``stop`` with the app."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        db: Database,
        mailer: Mailer,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        holder: str | None = None,
    ) -> None:
        self.settings = settings
        self.alerts = settings.alerts
        self.clock = clock
        self.db = db
        self.mailer = mailer
        self.loop = leases.LeasedLoop(
            db,
            LEASE,
            self._pass,
            interval=POLL_SECONDS,
            lease_seconds=LEASE_SECONDS,
            stop_timeout=self.alerts.timeout + 1,  # a send is not cut between the POST and its record
            holder=holder,
        )
        self._base = admin_base(settings)
        self._secret = self.alerts.webhook_secret.get_secret_value() if self.alerts.webhook_secret else None
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        # Rows enqueued here that the loop has not seen yet: id -> monotonic deadline.
        self._expected: dict[uuid.UUID, float] = {}

    # --- enqueue ------------------------------------------------------------

    async def enqueue(self, tx: Transaction, alert: AlertRow) -> None:
        """One delivery per webhook URL and per security contact, in ``tx``.

        Nothing is sent here: the loop sends once ``tx`` has committed (a
        rolled-back alert is never announced).
        """
        now = self.clock.now()
        payload = build_payload(alert, base=self._base, now=now)
        targets = [("webhook", url) for url in self.alerts.webhook_urls]
        targets += [("mail", address) for address in self.alerts.mail_to]
        if not targets:
            return
        ids = [uuid.uuid4() for _ in targets]
        rows = [
            {
                "id": delivery_id,
                "alert_id": alert.id,
                "channel": channel,
                "target": target,
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "payload": payload,
            }
            for delivery_id, (channel, target) in zip(ids, targets, strict=True)
        ]
        await tx.execute_many(insert(AlertDelivery), rows)
        now_mono = asyncio.get_running_loop().time()
        self._expected = {key: until for key, until in self._expected.items() if until > now_mono}
        deadline = now_mono + WAKE_SECONDS
        for delivery_id in ids:
            self._expected[delivery_id] = deadline
        self.loop.wake()

    # --- the job --------------------------------------------------------------

    async def start(self) -> None:
        if self.alerts.webhook_urls and self._secret is None:
            log.warning("alert webhooks are sent unsigned: set alerts.webhook_secret")
        # Made now, not at the first alert: building its TLS context takes tens of milliseconds.
        self._client = self._client or self._open_client()
        await self.loop.start()

    async def stop(self) -> None:
        """Finish the pass under way, give the lease up, close the client."""
        await self.loop.stop()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _open_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=self._transport,
            timeout=self.alerts.timeout,
            follow_redirects=False,
            headers={"user-agent": USER_AGENT},
        )

    async def _pass(self) -> float | None:
        """The loop's tick: deliver what is due; poll quickly while enqueued rows are not visible yet."""
        await self.deliver_due()
        now = asyncio.get_running_loop().time()
        self._expected = {key: until for key, until in self._expected.items() if until > now}
        return WAKE_STEP_SECONDS if self._expected else None

    async def deliver_due(self) -> int:
        """One pass: send every delivery that is due now; how many were attempted (tests call it directly)."""
        now = self.clock.now()
        rows = await self.db.all(
            select(AlertDelivery.id, AlertDelivery.channel, AlertDelivery.target, AlertDelivery.attempts,
                   AlertDelivery.payload)
            .where(AlertDelivery.status == PENDING, AlertDelivery.next_attempt_at <= now)
            .order_by(AlertDelivery.next_attempt_at)
            .limit(BATCH)
        )  # fmt: skip
        claimed = [row for row in rows if await self._claim(row.id, row.attempts, now)]
        for row in rows:
            self._expected.pop(row.id, None)
        if claimed:
            await asyncio.gather(*(self._attempt(row, now) for row in claimed))
        return len(claimed)

    async def _claim(self, delivery_id: uuid.UUID, attempts: int, now: dt.datetime) -> bool:
        """Take this attempt: the row moves past the send's timeout, so nobody else sends it meanwhile."""
        hold = dt.timedelta(seconds=self.alerts.timeout + LEASE_SECONDS)
        async with transaction(self.db) as tx:
            taken = await tx.execute(
                update(AlertDelivery)
                .where(
                    AlertDelivery.id == delivery_id,
                    AlertDelivery.status == PENDING,
                    AlertDelivery.attempts == attempts,
                    AlertDelivery.next_attempt_at <= now,
                )
                .values(next_attempt_at=now + hold)
            )
        return bool(taken)

    async def _attempt(self, row: Any, now: dt.datetime) -> None:
        error: str | None
        try:
            if row.channel == "webhook":
                error = await self._send_webhook(row.id, row.target, row.payload)
            else:
                await self.mailer.send(mail_of(row.target, row.payload))
                error = None
        except MailError as exc:
            error = f"mail not accepted: {exc}"[:500]
        except Exception as exc:  # noqa: BLE001 - any failure of one delivery is that delivery's error
            error = f"{type(exc).__name__}"
        await self._record(row, now, error)

    async def _send_webhook(self, delivery_id: uuid.UUID, url: str, payload: Mapping[str, Any]) -> str | None:
        """POST the signed payload; None when a 2xx answered, else what went wrong (no URL path in it)."""
        if self._client is None:
            self._client = self._open_client()
        body = body_of(payload)
        msg_id = str(delivery_id)
        timestamp = int(self.clock.now().timestamp())
        headers = {"content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(timestamp)}
        if self._secret is not None:
            headers |= signature_headers(self._secret, msg_id, timestamp, body)
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.TimeoutException:
            return "timed out"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}"
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    async def _record(self, row: Any, now: dt.datetime, error: str | None) -> None:
        attempts = row.attempts + 1
        values: dict[str, Any] = {"attempts": attempts, "last_error": error}
        shown = shown_target(row.channel, row.target)
        if error is None:
            values |= {"status": DELIVERED, "delivered_at": self.clock.now()}
            log.info("alert delivered", delivery=str(row.id), channel=row.channel, target=shown, attempts=attempts)
        elif attempts >= self.alerts.max_attempts:
            values |= {"status": DEAD}
            log.error(
                "alert delivery failed for good (dead letter kept)",
                delivery=str(row.id), channel=row.channel, target=shown, attempts=attempts, error=error,
            )  # fmt: skip
        else:
            delay = min(self.alerts.retry_after * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)
            values |= {"next_attempt_at": now + dt.timedelta(seconds=delay)}
            log.warning(
                "alert delivery failed, will retry",
                delivery=str(row.id), channel=row.channel, target=shown, attempts=attempts, error=error,
                retry_in=delay,
            )  # fmt: skip
        async with transaction(self.db) as tx:
            await tx.execute(update(AlertDelivery).where(AlertDelivery.id == row.id).values(**values))


async def list_deliveries(
    db: Database | Transaction, *, alert_id: uuid.UUID | None = None, statuses: Sequence[str] = (), limit: int = 200
) -> list[Delivery]:
    """Deliveries, newest first (``statuses`` empty: all); dead letters are the ``dead`` ones."""
    query = select(
        AlertDelivery.id, AlertDelivery.alert_id, AlertDelivery.channel, AlertDelivery.target,
        AlertDelivery.status, AlertDelivery.attempts, AlertDelivery.next_attempt_at,
        AlertDelivery.created_at, AlertDelivery.delivered_at, AlertDelivery.last_error,
    )  # fmt: skip
    if alert_id is not None:
        query = query.where(AlertDelivery.alert_id == alert_id)
    if statuses:
        query = query.where(AlertDelivery.status.in_(list(statuses)))
    rows = await db.all(query.order_by(AlertDelivery.created_at.desc(), AlertDelivery.id).limit(limit))
    return [
        Delivery(
            id=row.id, alert_id=row.alert_id, channel=row.channel, target=row.target, status=row.status,
            attempts=row.attempts, next_attempt_at=row.next_attempt_at, created_at=row.created_at,
            delivered_at=row.delivered_at, last_error=row.last_error,
        )
        for row in rows
    ]  # fmt: skip


async def retry_dead(tx: Transaction, delivery_id: uuid.UUID, *, now: dt.datetime) -> bool:
    """Send a dead letter again (the operator fixed the receiver): back to pending, attempts from zero."""
    changed = await tx.execute(
        update(AlertDelivery)
        .where(AlertDelivery.id == delivery_id, AlertDelivery.status == DEAD)
        .values(status=PENDING, attempts=0, next_attempt_at=now)
    )
    return bool(changed)
