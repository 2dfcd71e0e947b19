"""Fixtures of the security tier (tests/security/attack.py says how the target is set up)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from e2e.serving import clean_env, init, serve
from security.attack import (
    SCANNED,
    TIMES,
    Namespace,
    Target,
    namespace,
    prepare,
    scratch_database,
    short_lived_certificate,
)


@pytest.fixture(scope="session")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """One server for the tier (SQLite, the intermediate TLS profile), prepared once."""
    with serve(tmp_path_factory.mktemp("security") / "data", **SCANNED) as served:
        yield prepare(served)


@pytest.fixture(scope="session")
def scan_namespace() -> Iterator[Namespace]:
    with namespace() as made:
        yield made


@pytest.fixture(scope="session")
def modern(tmp_path_factory: pytest.TempPathFactory, scan_namespace: Namespace) -> Iterator[Target]:
    """A second server, on the modern TLS profile (TLS 1.3 only) and on PostgreSQL when there
    is one, listening on the host's end of the scanner's veth pair (wapiti reaches it from its
    namespace, sslyze and sqlmap from here)."""
    data = tmp_path_factory.mktemp("security-modern") / "data"
    with scratch_database() as database:
        init(data, clean_env(**database))
        settings = {"BASTION_TLS__PROFILE": "modern", **short_lived_certificate(data), **database, **SCANNED}
        with serve(data, host=scan_namespace.host_address, **settings) as served:
            yield prepare(served, scan_namespace.host_address, database)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMES:
        figures = ", ".join(f"{label} {seconds:.1f} s" for label, seconds in TIMES.items())
        terminalreporter.write_line(f"security tier: {figures}; tools {sum(TIMES.values()):.1f} s in all")
