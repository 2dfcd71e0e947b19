"""Prometheus metrics: what every listener and worker of ``bastion serve`` counts, in one scrape.

The metrics (docs/metrics.md lists them with their labels):

- ``bastion_http_requests_total{route,method,status}`` and
  ``bastion_http_request_duration_seconds{route}``: one observation per
  answer, from the request spine's observers (``HttpObserver``);
- ``bastion_sign_ins_total{outcome}``: from the audit events of sign-in
  (``event_recorded``, called by ``bastion.audit.record_event``);
- ``bastion_throttled_total{throttle}``: every 429 a throttle answers
  (``throttled``, called by the rate limiter's refusal log);
- ``bastion_alerts_total{rule,severity}``: alerts raised (``alert_raised``,
  called by the detection engine's alert store);
- gauges read from the database at scrape time, not kept in any process:
  ``bastion_audit_tree_size``, ``bastion_audit_checkpoint_age_seconds``,
  ``bastion_alerts_open`` (``ScrapeGauges``, filled by the ``/metrics`` route).

Bounded labels. A label value is never something a client chose: ``route``
is the matched route's template (``/api/v1/collections/{name}/records``),
never the raw path, and ``unmatched`` for every path no route matched, so a
scanner trying a million paths adds one series, not a million. ``method``
is one of the HTTP methods the app serves or ``other``; ``status`` is a
three-digit code. Labels fed by configuration or by extensions (throttle
scopes, rule names) pass through ``_Bounded``, which maps every value after
the first ``_MAX_VALUES`` distinct ones to ``other``.

Processes. ``bastion serve`` runs a supervisor, one process per listener and,
with ``server.workers`` > 1, several public workers. prometheus_client's
multiprocess mode has each process write its samples to memory-mapped files
in one directory (``PROMETHEUS_MULTIPROC_DIR``) and the scrape sums them.
``start_multiprocess`` makes that directory (fresh, 0700, removed by the
supervisor when it stops) and switches this process over before
``bastion serve`` forks its listeners; the processes it spawns inherit the
variable and start in that mode. Anywhere else (tests, the command line) the
metrics live in this process's memory and a scrape shows this process only.

Cost: one observation is a dictionary lookup for the label children (cached
per route, method and status) and two value updates, each a lock and, in
multiprocess mode, a write into a memory-mapped file: a few microseconds
per request (measured by bench/metrics.py; figures in docs/metrics.md).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The text exposition format Prometheus has always read (0.0.4); the newer
# 1.0.0 content type is not what every scraper in the field expects.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "unmatched"
OTHER = "other"
# Distinct values one configurable label may take before the rest become "other".
_MAX_VALUES = 64
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Request latency, seconds: from a cached read (~1 ms) to a deadline (10 s),
# few enough buckets that each route costs a dozen series.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# The metrics are this module's, in a registry of its own (not the library's
# global one, which also carries process and GC collectors nobody asked for).
REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "bastion_http_requests_total",
    "HTTP answers, by route template, method and status.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "bastion_http_request_duration_seconds",
    "Time from the request's arrival to its answer, by route template.",
    ["route"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
SIGN_INS = Counter(
    "bastion_sign_ins_total",
    "Sign-in attempts by outcome: success, failure, mfa_required, mfa_success, mfa_failure, refused.",
    ["outcome"],
    registry=REGISTRY,
)
THROTTLED = Counter(
    "bastion_throttled_total",
    "Requests refused with 429 by a throttle, by the throttle's scope.",
    ["throttle"],
    registry=REGISTRY,
)
ALERTS = Counter(
    "bastion_alerts_total",
    "Alerts raised by the detection rules, by rule and severity.",
    ["rule", "severity"],
    registry=REGISTRY,
)
_LABELLED: tuple[Counter | Histogram, ...] = (HTTP_REQUESTS, HTTP_DURATION, SIGN_INS, THROTTLED, ALERTS)
# The standard library's logger (bastion.logging is this module's sibling
# layer): the server's logging configuration formats it like every line.
_log = logging.getLogger("bastion.metrics")
_failed = threading.Event()


def _lost(exc: Exception) -> None:
    """A sample could not be written (the multiprocess directory removed under a
    running server, a full disk): logged once per process, and the request goes on.
    Counting must never fail what it counts."""
    if not _failed.is_set():
        _failed.set()
        _log.error("metrics sample lost: %s", exc)


class _Bounded:
    """A label's values as given, up to ``limit`` distinct ones; ``other`` after that."""

    def __init__(self, limit: int = _MAX_VALUES) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) >= self.limit:
                return OTHER
            self._seen.add(value)
        return value


_throttles = _Bounded()
_rules = _Bounded()
_SEVERITIES = frozenset({"info", "low", "medium", "high", "critical"})

# Audit tags and outcomes that are sign-ins (bastion.audit.events.EventTag
# values; this module sits below audit, so it knows them by value).
_SIGN_IN_OUTCOMES: dict[tuple[str, str], str] = {
    ("auth:login", "success"): "success",
    ("auth:login", "failure"): "failure",
    ("auth:login", "denied"): "refused",
    ("auth:login:mfa_required", "success"): "mfa_required",
    ("auth:mfa", "success"): "mfa_success",
    ("auth:mfa", "failure"): "mfa_failure",
    ("auth:mfa", "denied"): "refused",
}


def event_recorded(tag: str, outcome: str) -> None:
    """Count an audit event that is a sign-in (``bastion_sign_ins_total``); other events are ignored.

    Counted when the event is recorded: a sign-in whose transaction then
    fails was still attempted.
    """
    label = _SIGN_IN_OUTCOMES.get((tag, outcome))
    if label is not None:
        try:
            SIGN_INS.labels(label).inc()
        except Exception as exc:  # noqa: BLE001 - see _lost
            _lost(exc)


def throttled(scope: str) -> None:
    """Count one 429 answered by the throttle ``scope`` (``bastion_throttled_total``)."""
    try:
        THROTTLED.labels(_throttles(scope)).inc()
    except Exception as exc:  # noqa: BLE001 - see _lost
        _lost(exc)


def alert_raised(rule: str, severity: str) -> None:
    """Count one new alert (``bastion_alerts_total``). The detection rules call this."""
    try:
        ALERTS.labels(_rules(rule), severity if severity in _SEVERITIES else OTHER).inc()
    except Exception as exc:  # noqa: BLE001 - see _lost
        _lost(exc)


class HttpObserver:
    """The request spine's observer (``app.state.response_observers``): one count and one latency per answer.

    The label children are looked up once per (route, method, status) and
    kept: ``labels()`` builds a tuple and takes a lock every call, this a dict
    lookup. The cache is bounded as the labels are.
    """

    def __init__(self, routes: Iterable[Any] = ()) -> None:
        """``routes``: the app's (``app.routes``), to name the routes inside a ``Mount`` by their whole template."""
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        # scope["route"] is the innermost route, whose template is relative to
        # its mount ("/{name}/records"); the mount's own prefix is in the scope
        # only as the path it matched, with any parameter's value in it.
        self._mounted: dict[int, str] = dict(_mounted_templates(routes, ""))

    def __call__(self, scope: Any, status: int, seconds: float) -> None:
        try:
            self._observe(scope, status, seconds)
        except Exception as exc:  # noqa: BLE001 - an observer never raises (bastion.http.middleware)
            _lost(exc)

    def _observe(self, scope: Any, status: int, seconds: float) -> None:
        route = scope.get("route")
        path = UNMATCHED
        if route is not None:
            template = self._mounted.get(id(route)) or getattr(route, "path", None)
            if isinstance(template, str):
                path = template
        method = scope.get("method", "")
        key = (path, method, status)
        children = self._children.get(key)
        if children is None:
            label_method = method if method in _METHODS else OTHER
            label_status = str(status) if 100 <= status <= 599 else "0"
            children = (HTTP_REQUESTS.labels(path, label_method, label_status), HTTP_DURATION.labels(path))
            if method in _METHODS:
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


def _mounted_templates(routes: Iterable[Any], prefix: str) -> Iterator[tuple[int, str]]:
    """(id of a route inside a mount, its whole template) for every such route, at any depth."""
    for route in routes:
        inner = getattr(route, "routes", None)
        path = getattr(route, "path", "")
        if inner is not None and isinstance(path, str):
            for child in inner:
                child_path = getattr(child, "path", None)
                if isinstance(child_path, str):
                    yield id(child), prefix + path + child_path
            yield from _mounted_templates(inner, prefix + path)


@dataclass(frozen=True)
class ScrapeGauges:
    """Values read from the database for one scrape (None: no value, the sample is left out)."""

    audit_tree_size: int | None = None
    audit_checkpoint_age_seconds: float | None = None
    alerts_open: int | None = None

    def collect(self) -> Iterator[Metric]:
        facts: Sequence[tuple[str, str, float | None]] = (
            ("bastion_audit_tree_size", "Events in the audit log's Merkle tree.", self.audit_tree_size),
            (
                "bastion_audit_checkpoint_age_seconds",
                "Seconds since the audit log's latest signed checkpoint.",
                self.audit_checkpoint_age_seconds,
            ),
            ("bastion_alerts_open", "Alerts not yet acknowledged.", self.alerts_open),
        )
        for name, documentation, value in facts:
            if value is not None:
                yield GaugeMetricFamily(name, documentation, value=float(value))


class _Chain:
    """A collector that yields what other collectors yield."""

    def __init__(self, collectors: Iterable[Collector | ScrapeGauges]) -> None:
        self.collectors = tuple(collectors)

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


def multiprocess_dir() -> Path | None:
    """The directory the processes of this ``bastion serve`` share their samples in, if any."""
    configured = os.environ.get(MULTIPROC_ENV)
    return Path(configured) if configured else None


def exposition(gauges: ScrapeGauges | None = None) -> bytes:
    """The Prometheus text (format 0.0.4) of every process sharing the directory, or of this one."""
    directory = multiprocess_dir()
    source: Collector = REGISTRY
    if directory is not None:
        source = MultiProcessCollector(None, path=str(directory))  # type: ignore[no-untyped-call]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Chain((source, *((gauges,) if gauges else ()))))
    return generate_latest(registry)


_PREFIX = "bastion-metrics-"
# In each directory: the pid of the `bastion serve` that made it (its
# supervisor keeps that pid), so a later start can tell a dead one's leftovers.
_OWNER = "owner.pid"


def _sweep(parent: Path) -> None:
    """Remove the directories of instances that died without cleaning up (``kill -9``).

    Only directories this user owns, that carry an owner pid, and whose owner
    no longer runs; anything else is left alone.
    """
    for directory in parent.glob(_PREFIX + "*"):
        try:
            if directory.is_symlink() or not directory.is_dir() or directory.stat().st_uid != os.getuid():
                continue
            pid = int((directory / _OWNER).read_text(encoding="ascii"))
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(directory, ignore_errors=True)
        except (OSError, ValueError):  # no owner file, not ours to signal, unreadable: keep
            continue


def start_multiprocess(parent: Path | None = None) -> Path:
    """Make a fresh private directory for this instance's samples and count into it from now on.

    Called by ``bastion serve`` before it starts its listeners: the processes
    it forks or spawns after this write their samples there, and any of them
    can answer the scrape. The directory is new (``mkdtemp``: 0700, empty), so
    counts start at zero with every start and nothing is read from a
    directory someone else could have prepared. The supervisor removes it at
    stop; the directories of instances killed outright are swept here.
    """
    base = parent or Path(tempfile.gettempdir())
    _sweep(base)
    directory = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=base))
    (directory / _OWNER).write_text(str(os.getpid()), encoding="ascii")
    # Samples this process took in memory would be lost at the switch, and a
    # child made before it would point at the in-memory values: start clean.
    for metric in _LABELLED:
        metric.clear()
    os.environ[MULTIPROC_ENV] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    return directory
