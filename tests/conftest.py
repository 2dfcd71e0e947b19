"""Shared fixtures: a fresh data directory per test, on SQLite and, when
``BASTION_TEST_DATABASE_URL`` is set, on a PostgreSQL database created for
the test and dropped after it; and the one ``harness`` (tests/harness.py).

A test that makes its settings with ``make_settings`` (so ``bastion init``'s
``initialise``) starts from a copy of a database the migrations brought to
head once per session, a file copy on SQLite and ``CREATE DATABASE ...
TEMPLATE`` on PostgreSQL: running every migration again for each of the
suite's ~1,700 database tests cost about a second each. ``initialise`` still
runs in full and finds the schema current, as on a restarted instance. A
test that asks for ``database_url`` alone gets an empty database (the
migration tests), and ``bastion init`` from the command line (tests/functional
/test_cli.py, every end-to-end test) still migrates an empty one.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bastion.app import create_app
from bastion.clock import FrozenClock
from bastion.instance import initialise
from bastion.logging import configure_logging
from bastion.migrations import upgrade
from bastion.settings import Settings, load_settings
from databases import PG_SKIP, admin, sibling
from harness import CHEAP_ARGON2, Harness, open_harness
from private_redis import PrivateRedis

REDIS_SKIP = "BASTION_TEST_REDIS_URL not set: Redis tests need a server (.ci/run sets it)"


@pytest.fixture(autouse=True)
def _logging() -> None:
    # As in a served process: structlog through the stdlib, so caplog sees it.
    # Per test, because CLI tests reconfigure logging onto their own streams.
    configure_logging("info")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own BASTION_* settings must not leak into the suite.
    for name in list(os.environ):
        if name.startswith("BASTION_") and not name.startswith("BASTION_TEST_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def _migrated_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The databases the migrations built once this session, made on first use:
    "sqlite" is a file, "postgresql" the name of a database on the test server."""
    made: dict[str, str] = {}
    yield made
    if "postgresql" in made:
        admin(os.environ["BASTION_TEST_DATABASE_URL"], f'DROP DATABASE IF EXISTS "{made["postgresql"]}"')


def _sqlite_template(made: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "sqlite" not in made:
        path = tmp_path_factory.mktemp("migrated") / "bastion.db"
        upgrade(f"sqlite+aiosqlite:///{path}")
        assert not path.with_name("bastion.db-wal").exists(), "the template must be one file to copy"
        made["sqlite"] = str(path)
    return Path(made["sqlite"])


def _postgresql_template(made: dict[str, str], base: str) -> str:
    if "postgresql" not in made:
        name = f"bastion_template_{uuid.uuid4().hex[:12]}"
        admin(base, f'CREATE DATABASE "{name}"')
        made["postgresql"] = name  # dropped at the end of the session even if the upgrade fails
        upgrade(sibling(base, name))
    return made["postgresql"]


# The keys of a fresh init are at most this old (seconds) when a test gets a copy of them.
INSTANCE_TEMPLATE_AGE = 30.0


def _instance_template(made: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir as ``initialise`` leaves it (config, dev master key, keyrings, dev
    certificates), without its database; made again when older than
    INSTANCE_TEMPLATE_AGE, so that a test's keys are (nearly) as new as its own init's.
    Generating the keyrings (an RSA key among them) cost ~0.25 s a test."""
    if "instance" not in made or time.monotonic() - float(made["instance_at"]) > INSTANCE_TEMPLATE_AGE:
        data = tmp_path_factory.mktemp("instance") / "data"
        settings = load_settings(data)
        data.mkdir(mode=0o700, parents=True)
        shutil.copy2(_sqlite_template(made, tmp_path_factory), data / "bastion.db")
        initialise(settings)
        for database in data.glob("bastion.db*"):
            database.unlink()
        made["instance"], made["instance_at"] = str(data), str(time.monotonic())
    return Path(made["instance"])


def _made_as_the_template(settings: Settings) -> bool:
    """Whether initialise would make this data dir as it made the template's: dev,
    with the master key it generates, and the certificates in the data dir."""
    return (
        settings.mode == "dev"
        and settings.master_key_source()[0] is None
        and settings.server.cert_file is None
        and settings.server.key_file is None
    )


@pytest.fixture(scope="session")
def _dropped_later() -> Iterator[Callable[[str, str], None]]:
    """Drops a test's PostgreSQL database on a thread of its own: DROP DATABASE waits
    for a checkpoint (a second or two on a busy server), which the next test need not
    wait for. Every drop is done, and any failure raised, when the session ends."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="drop-database")
    pending: list[Future[None]] = []

    def drop(base: str, name: str) -> None:
        pending.append(pool.submit(admin, base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    yield drop
    pool.shutdown(wait=True)
    for future in pending:
        future.result()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest,
    _migrated_templates: dict[str, str],
    _dropped_later: Callable[[str, str], None],
) -> Iterator[str | None]:
    """``None`` means the embedded SQLite file in the data dir."""
    if request.param == "sqlite":
        yield None
        return
    base = os.environ.get("BASTION_TEST_DATABASE_URL")
    if not base:
        pytest.skip(PG_SKIP)
    name = f"bastion_test_{uuid.uuid4().hex[:12]}"
    if "make_settings" in request.fixturenames:  # initialised: start from the migrated schema
        template = _postgresql_template(_migrated_templates, base)
        admin(base, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    else:
        admin(base, f'CREATE DATABASE "{name}"')
    try:
        yield sibling(base, name)
    finally:
        _dropped_later(base, name)


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("BASTION_TEST_REDIS_URL")
    if not url:
        pytest.skip(REDIS_SKIP)
    return url


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(
    tmp_path: Path,
    database_url: str | None,
    _migrated_templates: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> SettingsFactory:
    """Initialised settings in a fresh data dir; keyword arguments override settings."""

    def make(**overrides: Any) -> Settings:
        if database_url is not None:
            overrides.setdefault("database_url", database_url)
        settings = load_settings(tmp_path / "data", **overrides)
        if not settings.data_dir.exists() and _made_as_the_template(settings):
            # copytree keeps the modes (the dir and keys private) and leaves out the database.
            shutil.copytree(_instance_template(_migrated_templates, tmp_path_factory), settings.data_dir)
        embedded = settings.sqlalchemy_url.removeprefix("sqlite+aiosqlite:///")
        if embedded != settings.sqlalchemy_url and not Path(embedded).exists():
            # As initialise makes it: the data dir private, the file as SQLite creates it
            # (copy2 keeps the template's mode), at the head revision.
            settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            shutil.copy2(_sqlite_template(_migrated_templates, tmp_path_factory), embedded)
        initialise(settings)
        return settings

    return make


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings()


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver") as client,
    ):
        yield client


@pytest.fixture
def clock(request: pytest.FixtureRequest) -> FrozenClock:
    """2026-01-01, or now (whole seconds) under ``pytest.mark.clock_now``: for a peer that reads the
    wall clock (a webhook verifier), and where the command line writes on the harness's database
    (it dates its audit events by the real clock, and the audit tree leaves out, and logs, events
    dated far behind its newest)."""
    if request.node.get_closest_marker("clock_now"):
        return FrozenClock(dt.datetime.now(dt.UTC).replace(microsecond=0))
    return FrozenClock()


@pytest.fixture
def harness_settings() -> dict[str, Any]:
    """Settings of the harness's app beyond cheap hashing; a directory's conftest overrides this."""
    return {}


@pytest.fixture
async def harness(
    make_settings: SettingsFactory, clock: FrozenClock, harness_settings: dict[str, Any]
) -> AsyncIterator[Harness]:
    # The detection job stays off unless a test turns it on (tests/functional/monitor):
    # its polls would run statements in the middle of tests that count them.
    # So does the rotation job (its first tick reads the keys, notices and audit log).
    defaults = {"passwords": CHEAP_ARGON2, "monitor": {"enabled": False}, "rotation": {"enabled": False}}
    async with open_harness(make_settings(**{**defaults, **harness_settings}), clock) as opened:
        yield opened


@pytest.fixture
def admin_client(harness: Harness) -> httpx.AsyncClient:
    """The harness's app through the admin listener, over mTLS from loopback."""
    assert harness.admin_client is not None
    return harness.admin_client


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of the test's own on a spare port, for tests that stop and start Redis."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
