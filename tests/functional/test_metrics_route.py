"""``GET /metrics`` through the app: admin listener only, bounded labels, the counters and the scrape-time gauges.

The counters are this process's (no multiprocess directory in tests) and
live as long as it, so every test compares a scrape after with one before.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import httpx
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from bastion.audit.models import AuditCheckpoint, AuditTreeState
from bastion.db import transaction
from bastion.monitor.models import Alert
from harness import PASSWORD, Harness

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(admin: httpx.AsyncClient) -> Samples:
    response = await admin.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for (sample, labels) in samples if sample == name]


async def test_metrics_answer_on_the_admin_listener_only(harness: Harness) -> None:
    """V13.4.5 (no monitoring endpoint exposed to the public): 404 on the public listener, text on the admin one."""
    assert harness.admin_client is not None
    public = await harness.client.get("/metrics")
    assert public.status_code == 404
    assert public.headers["content-type"] == "application/problem+json"
    samples = await scrape(harness.admin_client)
    assert value(samples, "bastion_audit_tree_size") == 0
    assert value(samples, "bastion_alerts_open") == 0
    # No checkpoint yet: no age sample rather than a made-up one.
    assert not series(samples, "bastion_audit_checkpoint_age_seconds")


async def test_requests_are_counted_by_route_template_and_status(harness: Harness) -> None:
    assert harness.admin_client is not None
    tokens = await harness.signed_in("alice@example.com")
    before = await scrape(harness.admin_client)
    for _ in range(3):
        assert (await harness.client.get("/healthz")).status_code == 200
    # A parameterised route: the template, never the collection's name.
    await harness.client.get(harness.records("notes-secret-name"), headers=harness.bearer(tokens))
    after = await scrape(harness.admin_client)
    assert (
        value(after, "bastion_http_requests_total", route="/healthz", method="GET", status="200")
        - value(before, "bastion_http_requests_total", route="/healthz", method="GET", status="200")
        == 3
    )
    routes = {labels["route"] for labels in series(after, "bastion_http_requests_total")}
    assert "/api/v1/collections/{name}/records" in routes
    assert not any("notes-secret-name" in route for route in routes)
    assert (
        value(after, "bastion_http_request_duration_seconds_count", route="/healthz")
        - value(before, "bastion_http_request_duration_seconds_count", route="/healthz")
        == 3
    )
    # The public 404 for /metrics is not routed: "unmatched", like any scan.
    assert "/metrics" in routes  # the scrapes themselves, on the admin listener


async def test_a_path_scan_adds_one_series(harness: Harness) -> None:
    """V16.3.2-style resource bound: 1,000 random paths make one "unmatched" series, not a thousand."""
    assert harness.admin_client is not None
    before = await scrape(harness.admin_client)
    for _ in range(1000):
        response = await harness.client.get(f"/{uuid.uuid4().hex}/{uuid.uuid4().hex}.php")
        assert response.status_code == 404
    after = await scrape(harness.admin_client)
    unmatched = value(after, "bastion_http_requests_total", route="unmatched", method="GET", status="404") - value(
        before, "bastion_http_requests_total", route="unmatched", method="GET", status="404"
    )
    assert unmatched == 1000
    assert len(series(after, "bastion_http_requests_total")) - len(series(before, "bastion_http_requests_total")) <= 1
    assert not any(".php" in labels["route"] for labels in series(after, "bastion_http_requests_total"))


async def test_sign_ins_are_counted_by_outcome(harness: Harness) -> None:
    assert harness.admin_client is not None
    await harness.user("carol@example.com")
    before = await scrape(harness.admin_client)
    await harness.login("carol@example.com")
    wrong = await harness.client.post("/api/v1/auth/login", json={"email": "carol@example.com", "password": "nope-1"})
    assert wrong.status_code == 401
    unknown = await harness.client.post(
        "/api/v1/auth/login", json={"email": "nobody@example.com", "password": PASSWORD}
    )
    assert unknown.status_code == 401
    after = await scrape(harness.admin_client)

    def delta(outcome: str) -> float:
        return value(after, "bastion_sign_ins_total", outcome=outcome) - value(
            before, "bastion_sign_ins_total", outcome=outcome
        )

    assert delta("success") == 1
    assert delta("failure") == 2


async def test_throttled_requests_are_counted_by_throttle(harness: Harness) -> None:
    assert harness.admin_client is not None
    await harness.user("dave@example.com")
    before = await scrape(harness.admin_client)
    statuses = [
        (
            await harness.client.post(
                "/api/v1/auth/login", json={"email": "dave@example.com", "password": f"guess-{attempt}"}
            )
        ).status_code
        for attempt in range(12)
    ]
    refused = statuses.count(429)
    assert refused >= 1
    after = await scrape(harness.admin_client)
    total_after = sum(v for (name, _), v in after.items() if name == "bastion_throttled_total")
    total_before = sum(v for (name, _), v in before.items() if name == "bastion_throttled_total")
    assert total_after - total_before == refused
    # Named by the throttle's scope, never by the account it counted.
    assert not any("dave" in labels["throttle"] for labels in series(after, "bastion_throttled_total"))


async def test_gauges_are_read_from_the_database_at_scrape_time(harness: Harness) -> None:
    assert harness.admin_client is not None
    now = harness.clock.now()
    db = harness.app.state.db
    async with transaction(db) as tx:
        await tx.execute(sa.update(AuditTreeState).where(AuditTreeState.name == "main").values(size=42))
        await tx.execute(
            sa.insert(AuditCheckpoint).values(
                size=42, root_hash=b"\0" * 32, at=now - dt.timedelta(seconds=30), key_id="k", note="n"
            )
        )
        # Two groups: one rule and group has at most one open alert (ux_alerts_open).
        for group, status in (("g1", "open"), ("g2", "open"), ("g1", "acknowledged")):
            await tx.execute(
                sa.insert(Alert).values(
                    id=uuid.uuid4(),
                    rule="brute_force",
                    severity="high",
                    group_key=group,
                    status=status,
                    first_seen=now,
                    last_seen=now,
                    count=1,
                    details={},
                )
            )
    samples = await scrape(harness.admin_client)
    assert value(samples, "bastion_audit_tree_size") == 42
    assert value(samples, "bastion_audit_checkpoint_age_seconds") == 30
    assert value(samples, "bastion_alerts_open") == 2
    harness.clock.advance(seconds=15)
    assert value(await scrape(harness.admin_client), "bastion_audit_checkpoint_age_seconds") == 45


async def test_concurrent_answers_are_each_counted_once(harness: Harness) -> None:
    """200 requests in flight together: the count moves by exactly 200 (no lost or doubled update)."""
    assert harness.admin_client is not None
    labels = {"route": "/healthz", "method": "GET", "status": "200"}
    before = value(await scrape(harness.admin_client), "bastion_http_requests_total", **labels)
    answers = await asyncio.gather(*(harness.client.get("/healthz") for _ in range(200)))
    assert {answer.status_code for answer in answers} == {200}
    after = value(await scrape(harness.admin_client), "bastion_http_requests_total", **labels)
    assert after - before == 200
