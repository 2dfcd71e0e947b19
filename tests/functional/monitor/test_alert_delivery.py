"""Alert delivery (bastion.monitor.delivery) against a real HTTP receiver and a real SMTP server.

The receiver (tests/webhook_receiver.py) is an ``http.server`` in a thread
that checks every signature with a verifier written from the Standard
Webhooks spec, not with Bastion's signing code. Mail goes to aiosmtpd.
Retries and dead letters run on the injected clock (``deliver_due``); only
the promptness test runs the job's own loop and measures, with a generous
deadline, against the issue's bound.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from sqlalchemy import insert, select, update

from bastion.clock import FrozenClock
from bastion.db import Database, open_database, transaction
from bastion.mail import build_mailer
from bastion.monitor.alerts import AlertInfo
from bastion.monitor.delivery import Dispatcher, list_deliveries, retry_dead
from bastion.monitor.models import Alert, AlertDelivery
from bastion.settings import Settings
from smtp_server import Inbox
from webhook_receiver import SPEC_SECRET, SignatureRefused, WebhookReceiver, verify_standard_webhook, webhook_receiver

SettingsFactory = Callable[..., Settings]  # tests/conftest.py's make_settings
# Many receivers (chat services) carry their credential in the path: it must never be logged.
PATH_TOKEN = "/hooks/T0KEN-in-the-path-4c1d"
# Near the wall clock: the reference ``standardwebhooks`` verifier reads it.
pytestmark = pytest.mark.clock_now
CONTACT = "security@example.com"


def alert_settings(receiver: WebhookReceiver | None, smtp_port: int | None, **alerts: Any) -> dict[str, Any]:
    section: dict[str, Any] = {"webhook_secret": SPEC_SECRET, "retry_after": "5s", "max_attempts": 4, **alerts}
    if receiver is not None:
        section.setdefault("webhook_urls", [receiver.url(PATH_TOKEN)])
    overrides: dict[str, Any] = {"alerts": section}
    if smtp_port is not None:
        section.setdefault("mail_to", [CONTACT])
        overrides["mail"] = {
            "backend": "smtp",
            "sender": "Bastion <bastion@example.com>",
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp_port,
            "smtp_starttls": False,
        }
    return overrides


def dispatcher_for(settings: Settings, clock: FrozenClock, db: Database) -> Dispatcher:
    return Dispatcher(settings, clock, db, build_mailer(settings))


async def raise_alert(db: Database, dispatcher: Dispatcher, clock: FrozenClock) -> tuple[AlertInfo, list[uuid.UUID]]:
    """Store an alert and enqueue its deliveries in one transaction, as the alert store does."""
    now = clock.now()
    alert = AlertInfo(
        id=uuid.uuid4(),
        rule="spraying",
        severity="high",
        group_key="global",
        status="open",
        first_seen=now - dt.timedelta(seconds=40),
        last_seen=now,
        count=20,
        details={"window_seconds": 600.0, "note": "password=hunter2 token:abc"},
    )
    async with transaction(db) as tx:
        # One open alert per rule and group (ux_alerts_open): the previous one is over.
        await tx.execute(
            update(Alert)
            .where(Alert.rule == alert.rule, Alert.group_key == alert.group_key, Alert.status == "open")
            .values(status="superseded")
        )
        await tx.execute(
            insert(Alert).values(
                id=alert.id, rule=alert.rule, severity=alert.severity, group_key=alert.group_key,
                status=alert.status, first_seen=alert.first_seen, last_seen=alert.last_seen, count=alert.count,
                details=alert.details,
            )
        )  # fmt: skip
        await dispatcher.enqueue(tx, alert)
    return alert, [d.id for d in await list_deliveries(db, alert_id=alert.id)]


@pytest.fixture
async def make(make_settings: SettingsFactory, clock: FrozenClock) -> AsyncIterator[Any]:
    """Settings, a database and a dispatcher whose loop does not run (the test drives ``deliver_due``)."""
    opened: list[tuple[Dispatcher, Database]] = []

    async def build(**overrides: Any) -> tuple[Settings, Database, Dispatcher]:
        settings = make_settings(**overrides)
        db = open_database(settings.sqlalchemy_url)
        dispatcher = dispatcher_for(settings, clock, db)
        opened.append((dispatcher, db))
        return settings, db, dispatcher

    yield build
    for dispatcher, db in opened:
        await dispatcher.stop()
        await db.close()


def verified(receiver: WebhookReceiver, clock: FrozenClock, index: int) -> dict[str, Any]:
    """The request's JSON body, once both verifiers (ours from the spec, and the reference package) accept it."""
    request = receiver.requests[index]
    assert verify_standard_webhook(SPEC_SECRET, request.headers, request.body, now=clock.now().timestamp())
    body: dict[str, Any] = orjson.loads(request.body)
    return body


# --- webhooks -----------------------------------------------------------------


async def test_a_new_alert_is_posted_signed_within_the_bound(
    make_settings: SettingsFactory, receiver: WebhookReceiver, clock: FrozenClock
) -> None:
    """V16.4.3 (security events sent to a separate system for alerting): the job's
    own loop sends a new alert promptly, signed per Standard Webhooks."""
    settings = make_settings(**alert_settings(receiver, None))
    db = open_database(settings.sqlalchemy_url)
    dispatcher = dispatcher_for(settings, clock, db)
    await dispatcher.start()
    try:
        await asyncio.sleep(0.1)  # the lease taken, the loop idle: the measure starts with the alert
        began = time.monotonic()
        alert, ids = await raise_alert(db, dispatcher, clock)
        (request,) = await asyncio.to_thread(receiver.wait_for, 1)
        latency = request.at - began
    finally:
        await dispatcher.stop()
        await db.close()
    assert latency < 1.0, f"delivered {latency:.3f} s after the alert"
    print(f"webhook latency after the alert: {latency * 1000:.1f} ms")
    body = verified(receiver, clock, 0)
    assert request.path == PATH_TOKEN
    assert request.headers["webhook-id"] == str(ids[0])
    assert request.headers["webhook-timestamp"] == str(int(clock.now().timestamp()))
    assert request.headers["content-type"] == "application/json"
    data = body["data"]
    assert body["type"] == "alert.raised"
    assert data["id"] == str(alert.id)
    assert (data["rule"], data["severity"], data["count"], data["group"]) == ("spraying", "high", 20, "global")
    assert data["window_seconds"] == 600.0
    assert data["first_seen"] == alert.first_seen.isoformat()
    assert data["link"] == f"https://127.0.0.1:8444/admin/api/v1/alerts/{alert.id}"
    # The details are the rules' to fill: only the window is copied, never free text.
    assert b"hunter2" not in request.body
    assert b"token:" not in request.body
    assert SPEC_SECRET.encode() not in request.body
    assert SPEC_SECRET.removeprefix("whsec_").encode() not in request.body


async def test_the_independent_verifier_refuses_forged_and_tampered_requests(
    make: Any, receiver: WebhookReceiver, clock: FrozenClock
) -> None:
    """The receiver side is a real check: a tampered body, another secret or id, a late replay are refused."""
    _, db, dispatcher = await make(**alert_settings(receiver, None))
    await raise_alert(db, dispatcher, clock)
    await dispatcher.deliver_due()
    request = receiver.requests[0]
    now = clock.now().timestamp()
    assert verify_standard_webhook(SPEC_SECRET, request.headers, request.body, now=now)
    with pytest.raises(SignatureRefused):
        verify_standard_webhook(SPEC_SECRET, request.headers, request.body.replace(b"high", b"info"), now=now)
    with pytest.raises(SignatureRefused):
        verify_standard_webhook("whsec_" + "A" * 32, request.headers, request.body, now=now)
    with pytest.raises(SignatureRefused):
        verify_standard_webhook(SPEC_SECRET, {**request.headers, "webhook-id": "other"}, request.body, now=now)
    with pytest.raises(SignatureRefused):
        verify_standard_webhook(SPEC_SECRET, request.headers, request.body, now=now + 301)


async def test_failures_are_retried_with_backoff_under_one_id_then_delivered(
    make: Any, receiver: WebhookReceiver, clock: FrozenClock
) -> None:
    """500 twice, then 200: three attempts 5 s and 10 s apart, one webhook-id, each freshly signed."""
    receiver.answers[:] = [500, 500, 200]
    _, db, dispatcher = await make(**alert_settings(receiver, None))
    _, (delivery_id,) = await raise_alert(db, dispatcher, clock)
    assert await dispatcher.deliver_due() == 1
    clock.advance(seconds=4.9)
    assert await dispatcher.deliver_due() == 0  # not due before retry_after
    clock.advance(seconds=0.1)
    assert await dispatcher.deliver_due() == 1
    clock.advance(seconds=9.9)
    assert await dispatcher.deliver_due() == 0  # the delay doubled
    clock.advance(seconds=0.1)
    assert await dispatcher.deliver_due() == 1
    clock.advance(days=2)
    assert await dispatcher.deliver_due() == 0  # delivered: never sent again
    (delivery,) = await list_deliveries(db)
    assert len(receiver.requests) == 3
    assert {r.headers["webhook-id"] for r in receiver.requests} == {str(delivery_id)}
    stamps = [int(r.headers["webhook-timestamp"]) for r in receiver.requests]
    assert stamps[1] - stamps[0] == 5
    assert stamps[2] - stamps[1] == 10
    for request, stamp in zip(receiver.requests, stamps, strict=True):
        verify_standard_webhook(SPEC_SECRET, request.headers, request.body, now=stamp)
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("delivered", 3, None)
    assert delivery.delivered_at is not None


async def test_after_max_attempts_a_dead_letter_is_kept_and_logged_without_secrets(
    make: Any, receiver: WebhookReceiver, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    """V16.4.3 / V16.2.5 (no credentials in logs): every attempt fails; the row
    becomes a dead letter, and can be sent again."""
    receiver.default = 503
    _, db, dispatcher = await make(**alert_settings(receiver, None, max_attempts=3))
    caplog.set_level(logging.INFO)
    await raise_alert(db, dispatcher, clock)
    for _ in range(10):
        await dispatcher.deliver_due()
        clock.advance(hours=1)
    (delivery,) = await list_deliveries(db, statuses=["dead"])
    assert await list_deliveries(db, statuses=["pending"]) == []
    assert len(receiver.requests) == 3
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("dead", 3, "HTTP 503")
    assert delivery.shown_target == f"http://127.0.0.1:{receiver.port}/…"
    assert any("dead letter" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    logged = caplog.text
    assert "T0KEN" not in logged
    assert SPEC_SECRET.removeprefix("whsec_") not in logged
    assert "hunter2" not in logged
    # An operator fixed the receiver: the dead letter goes out again.
    receiver.default = 204
    async with transaction(db) as tx:
        assert await retry_dead(tx, delivery.id, now=clock.now())
    assert await dispatcher.deliver_due() == 1
    (again,) = await list_deliveries(db)
    assert again.status == "delivered"
    assert len(receiver.requests) == 4


async def test_redirects_are_not_followed(make: Any, receiver: WebhookReceiver, clock: FrozenClock) -> None:
    """A 3xx is a failure to retry, never a hop to another host."""
    receiver.answers[:] = [307]
    _, db, dispatcher = await make(**alert_settings(receiver, None))
    await raise_alert(db, dispatcher, clock)
    await dispatcher.deliver_due()
    (delivery,) = await list_deliveries(db)
    assert len(receiver.requests) == 1
    assert (delivery.status, delivery.last_error) == ("pending", "HTTP 307")


async def test_an_unreachable_receiver_is_retried(make: Any, clock: FrozenClock) -> None:
    with webhook_receiver() as gone:
        url = gone.url(PATH_TOKEN)
    _, db, dispatcher = await make(**alert_settings(None, None, webhook_urls=[url]))
    await raise_alert(db, dispatcher, clock)
    await dispatcher.deliver_due()
    (delivery,) = await list_deliveries(db)
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("pending", 1, "ConnectError")


async def test_a_rolled_back_alert_is_never_announced(make: Any, receiver: WebhookReceiver, clock: FrozenClock) -> None:
    _, db, dispatcher = await make(**alert_settings(receiver, None))
    alert = AlertInfo(uuid.uuid4(), "r", "low", "global", "open", clock.now(), clock.now(), 1, {})

    async def store_then_fail() -> None:
        async with transaction(db) as tx:
            await tx.execute(
                insert(Alert).values(
                    id=alert.id, rule="r", severity="low", group_key="global",
                    first_seen=alert.first_seen, last_seen=alert.last_seen,
                )
            )  # fmt: skip
            await dispatcher.enqueue(tx, alert)
            raise RuntimeError("the alert store failed after enqueue")

    with pytest.raises(RuntimeError):
        await store_then_fail()
    assert await dispatcher.deliver_due() == 0
    assert receiver.requests == []


async def test_two_senders_racing_send_each_attempt_once(
    make: Any, receiver: WebhookReceiver, clock: FrozenClock
) -> None:
    """Two dispatchers (a lease lost mid-pass) on the same rows: each delivery is claimed by one of them."""
    urls = [receiver.url(f"/{i}") for i in range(6)]
    settings, db, first = await make(**alert_settings(receiver, None, webhook_urls=urls))
    second_db = open_database(settings.sqlalchemy_url)
    second = dispatcher_for(settings, clock, second_db)
    try:
        for _ in range(3):
            await raise_alert(db, first, clock)
        counts = await asyncio.gather(first.deliver_due(), second.deliver_due(), first.deliver_due())
    finally:
        await second.stop()
        await second_db.close()
    assert sum(counts) == 18
    assert len(receiver.requests) == 18
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 18


async def test_no_destination_enqueues_nothing(make: Any, clock: FrozenClock) -> None:
    _, db, dispatcher = await make()
    _, ids = await raise_alert(db, dispatcher, clock)
    assert ids == []
    assert await db.all(select(AlertDelivery.id)) == []


# --- mail -----------------------------------------------------------------------


async def test_security_contacts_get_a_mail_naming_rule_and_severity(
    make: Any, smtp: tuple[int, Inbox], clock: FrozenClock
) -> None:
    """V16.4.3: mail to alerts.mail_to over SMTP (aiosmtpd), retried while the server refuses."""
    port, inbox = smtp
    inbox.refuse = True
    _, db, dispatcher = await make(**alert_settings(None, port, mail_to=[CONTACT, "soc@example.com"]))
    alert, _ = await raise_alert(db, dispatcher, clock)
    assert await dispatcher.deliver_due() == 2
    assert inbox.envelopes == []
    pending = await list_deliveries(db, statuses=["pending"])
    assert len(pending) == 2
    assert all(d.last_error and d.last_error.startswith("mail not accepted") for d in pending)
    inbox.refuse = False
    clock.advance(seconds=5)
    assert await dispatcher.deliver_due() == 2
    assert len(await list_deliveries(db, statuses=["delivered"])) == 2
    messages = {str(m["To"]): m for m in inbox.messages()}
    assert set(messages) == {CONTACT, "soc@example.com"}
    message = messages[CONTACT]
    assert message["Subject"] == "[Bastion] high alert: spraying"
    text = message.get_content()
    assert f"/admin/api/v1/alerts/{alert.id}" in text
    assert "Count:      20" in text
    assert "hunter2" not in text
    assert SPEC_SECRET.removeprefix("whsec_") not in text


async def test_the_app_delivers_through_its_services(
    make_settings: SettingsFactory, receiver: WebhookReceiver, smtp: tuple[int, Inbox], clock: FrozenClock
) -> None:
    """The app's lifespan runs the Dispatcher (Services.dispatcher, in Services.jobs): webhook and mail arrive."""
    from bastion.app import create_app

    port, inbox = smtp
    settings = make_settings(**alert_settings(receiver, port))
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        dispatcher = app.state.dispatcher
        assert dispatcher in app.state.jobs
        await raise_alert(app.state.db, dispatcher, clock)
        await asyncio.to_thread(receiver.wait_for, 1)
        deadline = time.monotonic() + 10
        while not inbox.envelopes and time.monotonic() < deadline:  # noqa: ASYNC110 - another thread's list
            await asyncio.sleep(0.01)
    verified(receiver, clock, 0)
    assert len(inbox.envelopes) == 1


# --- the command line -------------------------------------------------------------


def test_cli_lists_dead_letters_and_sends_one_again(
    make_settings: SettingsFactory,
    receiver: WebhookReceiver,
    clock: FrozenClock,
    database_url: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`bastion alerts deliveries --status dead` shows the dead letter (webhook by origin only);
    `bastion alerts redeliver ID` queues it again; bad ids are one-line errors (exit 2)."""
    from typer.testing import CliRunner

    from bastion.cli import app as cli

    receiver.default = 500
    settings = make_settings(**alert_settings(receiver, None, max_attempts=1))
    if database_url is not None:
        monkeypatch.setenv("BASTION_DATABASE_URL", database_url)

    async def dead_letter() -> uuid.UUID:
        db = open_database(settings.sqlalchemy_url)
        dispatcher = dispatcher_for(settings, clock, db)
        try:
            _, (delivery_id,) = await raise_alert(db, dispatcher, clock)
            await dispatcher.deliver_due()
        finally:
            await dispatcher.stop()
            await db.close()
        return delivery_id

    delivery_id = asyncio.run(dead_letter())  # a sync test: the CLI runs its own loop
    runner = CliRunner()

    def bastion(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(cli, ["alerts", *args, "--data-dir", str(settings.data_dir)])
        return result.exit_code, result.stdout, result.stderr

    code, out, err = bastion("deliveries", "--status", "dead", "--json")
    assert code == 0, err
    (listed,) = orjson.loads(out)
    assert listed["id"] == str(delivery_id)
    assert (listed["status"], listed["attempts"], listed["last_error"]) == ("dead", 1, "HTTP 500")
    assert listed["target"] == f"http://127.0.0.1:{receiver.port}/…"
    code, out, _ = bastion("deliveries")
    assert code == 0
    assert str(delivery_id) in out
    assert "dead" in out
    assert "T0KEN" not in out
    assert bastion("redeliver", str(delivery_id))[0] == 0
    code, out, _ = bastion("deliveries", "--status", "pending", "--json")
    assert [d["id"] for d in orjson.loads(out)] == [str(delivery_id)]
    code, _, err = bastion("redeliver", str(delivery_id))  # no longer dead
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    code, _, err = bastion("redeliver", "not-an-id")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert bastion("deliveries", "--status", "lost")[0] == 2


async def test_the_receiver_code_in_the_docs_verifies_a_real_delivery(
    make: Any, receiver: WebhookReceiver, clock: FrozenClock
) -> None:
    """docs/monitoring.md's standard-library verifier accepts what Bastion sends and refuses a tampered body."""
    from pathlib import Path

    doc = (Path(__file__).parents[3] / "docs" / "monitoring.md").read_text()
    section = doc.split("## Alert delivery", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/monitoring.md", "exec"), namespace)  # noqa: S102 - our own documentation
    verify = namespace["verify"]
    _, db, dispatcher = await make(**alert_settings(receiver, None))
    await raise_alert(db, dispatcher, clock)
    await dispatcher.deliver_due()
    request = receiver.requests[0]
    verify(SPEC_SECRET, request.headers, request.body)
    with pytest.raises(ValueError, match="bad signature"):
        verify(SPEC_SECRET, request.headers, request.body + b" ")
    with pytest.raises(ValueError, match="timestamp"):
        verify(SPEC_SECRET, {**request.headers, "webhook-timestamp": str(int(time.time()) - 301)}, request.body)


async def test_one_process_sends_and_another_takes_over_when_it_stops(
    make: Any, receiver: WebhookReceiver, clock: FrozenClock
) -> None:
    """Two processes' jobs (lease alert-delivery): one holds the lease and sends; once it stops
    (releasing the lease) the other takes over and sends what is pending. Nothing is sent twice."""
    settings, db, first = await make(**alert_settings(receiver, None))
    second_db = open_database(settings.sqlalchemy_url)
    second = Dispatcher(settings, clock, second_db, build_mailer(settings), holder="second")
    first.loop.holder = "first"
    await first.start()
    await asyncio.sleep(0.05)  # first takes the lease
    await second.start()
    try:
        await raise_alert(db, second, clock)  # enqueued by the process that does not send
        await asyncio.to_thread(receiver.wait_for, 1)
        await first.stop()
        await raise_alert(db, first, clock)
        await asyncio.to_thread(receiver.wait_for, 2, 30.0)  # the lease renewal period, generously
        await asyncio.sleep(0.2)
    finally:
        await second.stop()
        await second_db.close()
    assert len(receiver.requests) == 2
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 2
    assert [d.status for d in await list_deliveries(db)] == ["delivered", "delivered"]
