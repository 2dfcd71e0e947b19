"""``/metrics`` of a real ``bastion serve``: one scrape sums every listener and worker.

V13.4.5 (the monitoring endpoint on the admin plane only), V12.3.1 (scraped
over the admin listener's TLS).

The public listener runs two granian workers (with Redis, which several
workers need) or one, and the admin listener is a process of its own; each
writes its samples into the instance's multiprocess directory, and the
admin listener's scrape reads them all. V13.4.5: the public listener
answers 404 for ``/metrics``.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving import Served, free_port, serve

pytestmark = pytest.mark.e2e


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _metrics_dir(served: Served) -> Path:
    """The directory `bastion serve` made, as its supervisor's environment names it."""
    environ = Path(f"/proc/{served.process.pid}/environ").read_bytes().split(b"\0")
    found = [item.split(b"=", 1)[1] for item in environ if item.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    assert found, "bastion serve set no PROMETHEUS_MULTIPROC_DIR"
    return Path(found[0].decode())


def test_one_scrape_sums_every_process_of_bastion_serve(tmp_path: Path) -> None:
    redis = os.environ.get("BASTION_TEST_REDIS_URL")
    workers = "2" if redis else "1"
    admin_port = free_port()
    settings = {
        "BASTION_ADMIN__ENABLED": "true",
        "BASTION_ADMIN__PORT": str(admin_port),
        "BASTION_SERVER__WORKERS": workers,
        **({"BASTION_REDIS_URL": redis} if redis else {}),
    }
    with serve(tmp_path / "data", **settings) as served:
        directory = _metrics_dir(served)
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        admin = httpx.Client(base_url=f"https://localhost:{admin_port}", verify=served.tls(), timeout=30)
        healthz = (("method", "GET"), ("route", "/healthz"), ("status", "200"))
        with admin:
            before = _samples(admin.get("/metrics").text).get(("bastion_http_requests_total", healthz), 0.0)
        requests = 60
        for _ in range(requests):
            # A new connection each time, so that both workers take some.
            with served.client() as client:
                assert client.get("/healthz").status_code == 200
        with served.client() as client:
            assert client.get("/metrics").status_code == 404
            assert client.get("/no-such-page-1").status_code == 404
        admin = httpx.Client(base_url=f"https://localhost:{admin_port}", verify=served.tls(), timeout=30)
        with admin:
            first = admin.get("/metrics")
            assert first.status_code == 200, first.text
            assert first.headers["content-type"].startswith("text/plain; version=0.0.4")
            # The admin listener's own answer is counted by its process, the
            # health checks by the public workers': the next scrape shows both.
            samples = _samples(admin.get("/metrics").text)
        assert samples[("bastion_http_requests_total", healthz)] - before == requests
        scrapes = (("method", "GET"), ("route", "/metrics"), ("status", "200"))
        assert samples[("bastion_http_requests_total", scrapes)] >= 1
        unmatched = (("method", "GET"), ("route", "unmatched"), ("status", "404"))
        assert samples[("bastion_http_requests_total", unmatched)] == 2  # /metrics and the unknown page, public side
        assert samples[("bastion_audit_tree_size", ())] >= 0
        # One file per process and kind: at least a public worker and the admin
        # listener (which worker the kernel hands each connection is its choice).
        pids = {name.stem.rsplit("_", 1)[1] for name in directory.glob("counter_*.db")}
        assert len(pids) >= 2, pids
    deadline = time.monotonic() + 10
    while directory.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not directory.exists(), "the supervisor left the metrics directory behind"
