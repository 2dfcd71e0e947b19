"""bastion.metrics: bounded labels, sign-in outcomes, mounted route templates, and the multiprocess sum."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Mount, Route

from bastion import metrics


def _total(name: str, text: str | None = None, **labels: str) -> float:
    text = text if text is not None else metrics.exposition().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def _series(name: str) -> list[dict[str, str]]:
    text = metrics.exposition().decode()
    return [
        sample.labels
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def test_sign_in_events_map_to_outcomes_and_other_events_are_ignored() -> None:
    before = {o: _total("bastion_sign_ins_total", outcome=o) for o in ("success", "failure", "mfa_required")}
    metrics.event_recorded("auth:login", "success")
    metrics.event_recorded("auth:login", "failure")
    metrics.event_recorded("auth:login:mfa_required", "success")
    metrics.event_recorded("auth:register", "success")
    metrics.event_recorded("data:record:create", "success")
    assert _total("bastion_sign_ins_total", outcome="success") - before["success"] == 1
    assert _total("bastion_sign_ins_total", outcome="failure") - before["failure"] == 1
    assert _total("bastion_sign_ins_total", outcome="mfa_required") - before["mfa_required"] == 1
    assert {labels["outcome"] for labels in _series("bastion_sign_ins_total")} <= {
        "success",
        "failure",
        "mfa_required",
        "mfa_success",
        "mfa_failure",
        "refused",
    }


def test_configurable_labels_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A thousand rule names or throttle scopes make at most _MAX_VALUES series each, the rest "other"."""
    # Caps of this test's own, so the real rule names of later tests keep their labels.
    monkeypatch.setattr(metrics, "_rules", metrics._Bounded())
    monkeypatch.setattr(metrics, "_throttles", metrics._Bounded())
    alerts_before, throttles_before = len(_series("bastion_alerts_total")), len(_series("bastion_throttled_total"))
    for _ in range(1000):
        metrics.alert_raised(f"rule-{uuid.uuid4().hex}", "high")
        metrics.throttled(f"scope-{uuid.uuid4().hex}")
    metrics.alert_raised("brute_force", "made-up-severity")
    assert len(_series("bastion_alerts_total")) - alerts_before <= metrics._MAX_VALUES + 2
    assert len(_series("bastion_throttled_total")) - throttles_before <= metrics._MAX_VALUES + 1
    assert _total("bastion_alerts_total", rule="other") >= 1000 - metrics._MAX_VALUES
    assert {labels["severity"] for labels in _series("bastion_alerts_total")} <= {
        "info",
        "low",
        "medium",
        "high",
        "critical",
        "other",
    }


def test_observer_names_routes_by_template_and_unmatched_paths_alike() -> None:
    inner = Route("/{name}/records", lambda request: None)
    app_routes = [Mount("/api/v1/collections", routes=[inner]), Route("/healthz", lambda request: None)]
    observe = metrics.HttpObserver(app_routes)
    template = "/api/v1/collections/{name}/records"
    # The same labels before and after: earlier tests in the run answered other statuses on this route.
    before = _total("bastion_http_requests_total", route=template, method="GET", status="200")
    observe({"route": inner, "method": "GET"}, 200, 0.002)
    observe({"method": "GET"}, 404, 0.001)  # no route matched
    observe({"method": "BREW"}, 405, 0.001)  # a method nobody serves
    observe({"method": "GET"}, 0, 0.001)  # no answer at all (client gone)
    assert _total("bastion_http_requests_total", route=template, method="GET", status="200") - before == 1
    labels = _series("bastion_http_requests_total")
    assert {"route": "unmatched", "method": "other", "status": "405"} in labels
    assert {"route": "unmatched", "method": "GET", "status": "0"} in labels
    assert _total("bastion_http_request_duration_seconds_count", route=template) >= 1


def test_the_scrape_sums_processes_sharing_the_directory(tmp_path: Path) -> None:
    """Two processes count into one directory; the exposition of a third shows the sum, gauges added."""
    script = (
        "import os, sys; from bastion import metrics; "
        "metrics.start_multiprocess(); "
        "[metrics.event_recorded('auth:login', 'failure') for _ in range(int(sys.argv[1]))]; "
        "print(os.environ['PROMETHEUS_MULTIPROC_DIR'])"
    )
    first = subprocess.run([sys.executable, "-c", script, "3"], capture_output=True, text=True, check=True)
    directory = first.stdout.strip()
    env_script = (
        "import os, sys; os.environ['PROMETHEUS_MULTIPROC_DIR'] = sys.argv[2]; from bastion import metrics; "
        "[metrics.event_recorded('auth:login', 'failure') for _ in range(int(sys.argv[1]))]; "
        "sys.stdout.write(metrics.exposition(metrics.ScrapeGauges(audit_tree_size=7)).decode())"
    )
    second = subprocess.run(
        [sys.executable, "-c", env_script, "4", directory], capture_output=True, text=True, check=True
    )
    try:
        assert _total("bastion_sign_ins_total", second.stdout, outcome="failure") == 7
        assert _total("bastion_audit_tree_size", second.stdout) == 7
        assert len(list(Path(directory).glob("counter_*.db"))) == 2
    finally:
        for file in Path(directory).iterdir():
            file.unlink()
        Path(directory).rmdir()


def test_a_lost_sample_never_fails_what_it_counts() -> None:
    """The directory gone under a running process: counting logs once and returns, the request goes on."""
    script = (
        "import shutil; from bastion import metrics; "
        "shutil.rmtree(metrics.start_multiprocess()); "
        "metrics.event_recorded('auth:login', 'failure'); metrics.throttled('auth:login:ip'); "
        "metrics.alert_raised('brute_force', 'high'); "
        "metrics.HttpObserver()({'method': 'GET'}, 404, 0.001); print('went on')"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "went on"
    assert done.stderr.count("metrics sample lost") == 1


def test_a_start_sweeps_the_directories_of_dead_instances(tmp_path: Path) -> None:
    """`kill -9` leaves a directory behind; the next start removes it, and nothing of a live or foreign one."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    leftover = tmp_path / "bastion-metrics-dead"
    leftover.mkdir()
    (leftover / "owner.pid").write_text(dead.stdout.strip())
    (leftover / "counter_1.db").write_bytes(b"")
    alive = tmp_path / "bastion-metrics-alive"
    alive.mkdir()
    (alive / "owner.pid").write_text(str(os.getpid()))
    unowned = tmp_path / "bastion-metrics-unknown"
    unowned.mkdir()
    script = (
        "import sys; from pathlib import Path; from bastion import metrics; "
        "print(metrics.start_multiprocess(Path(sys.argv[1])))"
    )
    made = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True)
    assert not leftover.exists()
    assert alive.exists()
    assert unowned.exists()
    fresh = Path(made.stdout.strip())
    assert fresh.parent == tmp_path
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
