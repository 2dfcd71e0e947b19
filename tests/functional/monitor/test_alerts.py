"""The alert store, the admin API over it, ``bastion alerts``, and the hooks delivery and responses plug into."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from bastion.audit.models import AuditEvent
from bastion.cli import app as cli
from bastion.db import Transaction, transaction
from bastion.monitor.alerts import AlertInfo
from bastion.monitor.models import Alert, AlertDelivery
from bastion.monitor.signals import Fired, Signal
from harness import ADDRESS, Harness, open_harness

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def harness_settings() -> dict[str, Any]:
    # The job stays off: these tests drive the store and the engine themselves.
    return {"server": {"trusted_proxies": [f"{ADDRESS}/32"]}, "monitor": {"enabled": False}}


def fired(rule: str = "address-burst", group: str = "address:192.0.2.9", at: dt.datetime = T0, count: int = 6) -> Fired:
    signal = Signal(at=at, tag="auth:login", outcome="failure", address="192.0.2.9")
    return Fired(
        rule=rule,
        severity="high",
        group_key=group,
        count=count,
        window_seconds=10,
        first_seen=at,
        last_seen=at,
        actions=("alert", "block_address"),
        signal=signal,
    )


class Recorder:
    """Stands in for the Dispatcher and the Responder: what they were handed."""

    def __init__(self) -> None:
        self.enqueued: list[AlertInfo] = []
        self.acted: list[Fired] = []
        self.in_transaction: list[bool] = []

    async def enqueue(self, tx: Transaction, alert: AlertInfo) -> None:
        # Inside the alert's transaction: the alert row is visible to it.
        row = await tx.one(sa.select(Alert.id).where(Alert.id == alert.id))
        self.in_transaction.append(row is not None)
        self.enqueued.append(alert)

    async def act(self, one: Fired) -> None:
        self.acted.append(one)


async def test_one_alert_per_incident_window_delivered_and_acted_on_once(harness: Harness) -> None:
    """V16.3.3 (one security event per incident, not per request): firings of one rule and group within its window count
    into one alert; only the new alert reaches the Dispatcher (in its transaction) and the Responder."""
    monitor = harness.app.state.monitor
    recorder = Recorder()
    monitor.dispatcher, monitor.responder = recorder, recorder
    first = await monitor.raise_alert(fired())
    assert first is not None
    again = await monitor.raise_alert(fired(at=T0 + dt.timedelta(seconds=5), count=3))
    assert again is None
    later = await monitor.raise_alert(fired(at=T0 + dt.timedelta(seconds=30)))
    assert later is not None
    assert later.id != first.id
    assert [a.id for a in recorder.enqueued] == [first.id, later.id]
    assert recorder.in_transaction == [True, True]
    assert [f.rule for f in recorder.acted] == ["address-burst", "address-burst"]
    stored = await monitor.store.get(harness.app.state.db, first.id)
    assert stored.count == 9
    assert stored.last_seen == T0 + dt.timedelta(seconds=5)


async def test_a_failing_responder_never_loses_the_alert(harness: Harness) -> None:
    monitor = harness.app.state.monitor

    class Broken:
        async def act(self, one: Fired) -> None:
            raise RuntimeError("responder down")

    monitor.responder = Broken()
    alert = await monitor.raise_alert(fired())
    assert alert is not None
    assert await monitor.store.get(harness.app.state.db, alert.id) is not None


async def test_concurrent_firings_count_into_one_alert(harness: Harness) -> None:
    """Counted in SQL: firings racing into one open alert all add up."""
    monitor = harness.app.state.monitor
    first = await monitor.raise_alert(fired())
    await asyncio.gather(*(monitor.raise_alert(fired(at=T0 + dt.timedelta(seconds=1), count=1)) for _ in range(10)))
    stored = await monitor.store.get(harness.app.state.db, first.id)
    assert stored.count == 16


async def test_admin_api_lists_pages_and_acknowledges(harness: Harness, admin_client: httpx.AsyncClient) -> None:
    """V8.2.1, V16.3.3: alerts are listed (filters, cursor pages) and acknowledged (audited) by
    an admin with two factors; a plain user and a single-factor admin are refused."""
    monitor = harness.app.state.monitor
    for n in range(5):
        await monitor.raise_alert(fired(group=f"address:192.0.2.{n}", at=T0 + dt.timedelta(minutes=n)))
    await monitor.raise_alert(fired(rule="login-spraying", group="global"))
    admin = harness.bearer(await harness.admin())

    page = await admin_client.get("/admin/api/v1/alerts", params={"limit": 2, "rule": "address-burst"}, headers=admin)
    assert page.status_code == 200, page.text
    body = page.json()
    assert [a["group"] for a in body["alerts"]] == ["address:192.0.2.4", "address:192.0.2.3"]
    seen = [a["id"] for a in body["alerts"]]
    while body["next_cursor"]:
        body = (
            await admin_client.get(
                "/admin/api/v1/alerts",
                params={"limit": 2, "rule": "address-burst", "cursor": body["next_cursor"]},
                headers=admin,
            )
        ).json()
        seen += [a["id"] for a in body["alerts"]]
    assert len(seen) == len(set(seen)) == 5

    target = seen[0]
    acked = await admin_client.post(f"/admin/api/v1/alerts/{target}/ack", headers=admin)
    assert acked.status_code == 200
    assert acked.json()["status"] == "acknowledged"
    assert acked.json()["acknowledged_by"].startswith("user:")
    still_open = (await admin_client.get("/admin/api/v1/alerts", params={"status": "open"}, headers=admin)).json()
    assert target not in [a["id"] for a in still_open["alerts"]]
    assert len(still_open["alerts"]) == 5
    events = await harness.app.state.db.all(sa.select(AuditEvent.details).where(AuditEvent.tag == "monitor:alert:ack"))
    assert [e.details["alert_id"] for e in events] == [target]

    assert (await admin_client.post(f"/admin/api/v1/alerts/{uuid.uuid4()}/ack", headers=admin)).status_code == 404
    bad = await admin_client.get("/admin/api/v1/alerts", params={"cursor": "not-a-cursor"}, headers=admin)
    assert bad.status_code == 422
    forged = await admin_client.get("/admin/api/v1/alerts", params={"cursor": "WyJ4IiwieSJd"}, headers=admin)
    assert forged.status_code == 422
    assert (await admin_client.get("/admin/api/v1/alerts", params={"status": "gone"}, headers=admin)).status_code == 422

    user = harness.bearer(await harness.signed_in("plain@example.com"))
    assert (await admin_client.get("/admin/api/v1/alerts", headers=user)).status_code == 403
    assert (await admin_client.post(f"/admin/api/v1/alerts/{target}/ack", headers=user)).status_code == 403
    single = harness.bearer(await harness.admin("single@example.com", mfa=False))
    assert (await admin_client.get("/admin/api/v1/alerts", headers=single)).status_code == 403
    # Not on the public listener.
    assert (await harness.client.get("/admin/api/v1/alerts", headers=admin)).status_code == 404


async def test_records_probing_by_one_principal(harness: Harness) -> None:
    """V8.2.2 (BOLA probing): a burst of 403/404 on records from one principal alerts;
    the observer feeds the engine without writing an event per request."""
    monitor = harness.app.state.monitor
    monitor.listening = True  # the job is off here: this test drains the signals itself
    tokens = await harness.signed_in("prober@example.com")
    before = await harness.app.state.db.value(sa.select(sa.func.count()).select_from(AuditEvent))
    for _ in range(20):
        response = await harness.client.get(
            f"/api/v1/collections/nothing/records/{uuid.uuid4()}", headers=harness.bearer(tokens)
        )
        assert response.status_code in (403, 404)
    new = await monitor.drain()
    assert [a.rule for a in new] == ["records-probing"]
    assert new[0].group_key.startswith("principal:user:")
    after = await harness.app.state.db.value(sa.select(sa.func.count()).select_from(AuditEvent))
    assert after - before == 1  # the alert's own event only


@pytest.mark.clock_now  # the command line dates its audit events by the real clock
async def test_cli_lists_and_acknowledges(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """``bastion alerts list [--json] [--all]`` and ``alerts ack ID``; bad ids fail with one line, exit 2."""
    monkeypatch.setenv("BASTION_DATABASE_URL", harness.settings.sqlalchemy_url)
    monitor = harness.app.state.monitor
    one = await monitor.raise_alert(fired())
    await monitor.raise_alert(fired(rule="login-spraying", group="global", at=T0 + dt.timedelta(seconds=1)))
    data_dir = str(harness.settings.data_dir)
    runner = CliRunner()

    async def invoke(*args: str) -> Any:
        return await asyncio.to_thread(runner.invoke, cli, [*args, "--data-dir", data_dir])

    listed = await invoke("alerts", "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert len(lines) == 2
    assert "login-spraying" in lines[0]
    assert "address-burst" in lines[1]

    parsed = orjson.loads((await invoke("alerts", "list", "--json")).stdout)
    assert {a["rule"] for a in parsed} == {"login-spraying", "address-burst"}
    assert {"rule", "severity", "first_seen", "last_seen", "count", "status"} <= set(parsed[0])

    acked = await invoke("alerts", "ack", str(one.id))
    assert acked.exit_code == 0, acked.output
    assert len((await invoke("alerts", "list")).stdout.splitlines()) == 1
    assert len((await invoke("alerts", "list", "--all")).stdout.splitlines()) == 2

    for bad in ("nope", str(uuid.uuid4())):
        refused = await invoke("alerts", "ack", bad)
        assert refused.exit_code == 2
        assert len(refused.stderr.strip().splitlines()) == 1


async def test_replaying_a_day_of_ordinary_sign_ins_through_the_tail_raises_nothing(harness: Harness) -> None:
    """V6.3.1 (no false alarms): 10,000 ordinary sign-ins over a day (a few typos among them), written as events
    with their own times (no Argon2id) and read back through the tail: no alert."""
    monitor = harness.app.state.monitor
    await monitor.tail.start_at_end()
    rows: list[dict[str, Any]] = []
    people = [(uuid.uuid4(), f"{n:016x}", f"10.{n % 200}.{n // 200}.{n % 13 + 1}") for n in range(2500)]
    at = T0
    for n in range(10_000):
        at += dt.timedelta(seconds=8.6)
        account, login, address = people[(n * 7919) % len(people)]
        if n % 37 == 0:  # a typo, now and then twice
            for typo in range(1 + (n % 2)):
                rows.append(_event(at - dt.timedelta(seconds=5 - typo), "failure", account, address, login))
        rows.append(_event(at, "success", account, address, None))
    async with transaction(harness.app.state.db) as tx:
        await tx.execute_many(sa.insert(AuditEvent), rows)
    judged, raised = 0, []
    while batch := await monitor.tail.read():
        judged += len(batch)
        raised += await monitor.judge(batch)
    assert judged == len(rows) > 10_000
    assert raised == []


def _event(at: dt.datetime, outcome: str, account: uuid.UUID, address: str, login: str | None) -> dict[str, Any]:
    details = {"login": login} if login else {"mfa": False}
    return {
        "at": at,
        "tag": "auth:login",
        "outcome": outcome,
        "actor_id": account if outcome == "success" else None,
        "subject_id": account,
        "ip": address,
        "request_id": None,
        "details": details,
    }


@pytest.mark.parametrize(
    "harness_settings", [{"monitor": {"enabled": False}, "alerts": {"mail_to": ["soc@example.com"]}}]
)
async def test_racing_processes_open_one_alert_and_deliver_it_once(harness: Harness) -> None:
    """V16.3.3 (one security event per incident): HTTP signals are recorded by every worker
    process, so several apps (each its own database connections, as separate processes) record
    one rule and group at once: exactly one open alert, counting every firing, one delivery and
    one automatic response."""
    apps = [harness]
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(2):
            apps.append(await stack.enter_async_context(open_harness(harness.settings, harness.clock)))
        recorders = []
        for one in apps:
            recorder = Recorder()
            one.app.state.monitor.responder = recorder
            recorders.append(recorder)
        calls = 30
        new = await asyncio.gather(
            *(apps[n % len(apps)].app.state.monitor.raise_alert(fired(count=1)) for n in range(calls))
        )
    db = harness.app.state.db
    rows = await db.all(sa.select(Alert.id, Alert.count, Alert.status))
    assert [(row.count, row.status) for row in rows] == [(calls, "open")]
    assert [alert.id for alert in new if alert is not None] == [rows[0].id]
    deliveries = await db.all(sa.select(AlertDelivery.alert_id))
    assert [d.alert_id for d in deliveries] == [rows[0].id]
    assert sum(len(r.acted) for r in recorders) == 1
    raised = await db.value(sa.select(sa.func.count()).select_from(AuditEvent).where(AuditEvent.tag == "monitor:alert"))
    assert raised == 1


async def test_a_stale_open_alert_is_superseded_and_a_second_open_one_is_refused(harness: Harness) -> None:
    """The group quiet for a whole window fires again: the old alert is closed ("superseded"),
    the new one is open; the schema itself refuses two open alerts of one rule and group."""
    monitor = harness.app.state.monitor
    first = await monitor.raise_alert(fired())
    later = await monitor.raise_alert(fired(at=T0 + dt.timedelta(seconds=30)))
    assert first is not None
    assert later is not None
    db = harness.app.state.db
    assert (await monitor.store.get(db, first.id)).status == "superseded"
    assert (await monitor.store.get(db, later.id)).status == "open"
    with pytest.raises(Exception, match=r"(?i)unique"):
        async with transaction(db) as tx:
            await tx.execute(
                sa.insert(Alert).values(
                    id=uuid.uuid4(),
                    rule="address-burst",
                    severity="high",
                    group_key="address:192.0.2.9",
                    status="open",
                    first_seen=T0,
                    last_seen=T0,
                    count=1,
                    details={},
                )
            )
    long_group = "login:" + "x" * 300
    assert await monitor.raise_alert(fired(group=long_group)) is not None
    assert await monitor.raise_alert(fired(group=long_group, at=T0 + dt.timedelta(seconds=1))) is None
