"""The migrations build exactly the schema the models describe.

``bastion.models`` is the one registry of every domain's tables; the
migrations' environment compares against it. If a domain's models were left
out (as ``access`` once was), ``alembic revision --autogenerate`` would
propose dropping its tables; if a migration and a model disagree, the models
describe a database nobody has. Both show up here as a difference, on SQLite
and, when ``BASTION_TEST_DATABASE_URL`` is set, on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.runtime.environment import NameFilterParentNames, NameFilterType
from sqlalchemy.ext.asyncio import create_async_engine as create_engine

import bastion
from bastion import models
from bastion.data.models import DEFINITIONS
from bastion.migrations import alembic_config, head_revision, is_current, upgrade
from bastion.oauth.models import OAuthClient
from bastion.settings import Settings

SettingsFactory = Callable[..., Settings]


def _owned(name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames) -> bool:
    return type_ != "table" or name is None or models.owned_by_migrations(name)


def _differences(url: str, metadata: sa.MetaData) -> list[Any]:
    async def compare() -> list[Any]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(
                    lambda sync: compare_metadata(
                        MigrationContext.configure(sync, opts={"include_name": _owned}), metadata
                    )
                )
        finally:
            await engine.dispose()

    return list(asyncio.run(compare()))


def test_migrated_schema_matches_the_models(make_settings: SettingsFactory) -> None:
    # initialise migrates to head and applies bastion.toml's `notes` collection,
    # whose c_notes table belongs to the data domain, not to the migrations.
    settings = make_settings()
    assert _differences(settings.sqlalchemy_url, models.metadata) == []
    # The same through the migrations' own environment, as `alembic check` runs it.
    command.check(alembic_config(settings.sqlalchemy_url))


def test_a_model_the_migrations_lack_is_a_difference(make_settings: SettingsFactory) -> None:
    """The comparison is not vacuous: a registry without access's tables would
    propose dropping roles, user_roles and api_keys, and a model with a column
    no migration made is a difference too."""
    settings = make_settings()
    without_access = sa.MetaData()
    for table in models.metadata.sorted_tables:
        if table.name not in ("roles", "user_roles", "api_keys"):
            table.to_metadata(without_access)
    differences = _differences(settings.sqlalchemy_url, without_access)
    dropped = {diff[1].name for diff in differences if diff[0] == "remove_table"}
    assert dropped == {"roles", "user_roles", "api_keys"}

    extended = sa.MetaData()
    for table in models.metadata.sorted_tables:
        table.to_metadata(extended)
    extended.tables["users"].append_column(sa.Column("nickname", sa.String(40)))
    added = [diff for diff in _differences(settings.sqlalchemy_url, extended) if diff[0] == "add_column"]
    assert [(diff[2], diff[3].name) for diff in added] == [("users", "nickname")]


def test_the_registry_names_every_models_module() -> None:
    """A domain that adds a ``models`` module must register it in ``bastion.models``."""
    found = set()
    for info in pkgutil.walk_packages(bastion.__path__, "bastion."):
        if info.name.endswith(".models") and info.name != "bastion.models":
            found.add(importlib.import_module(info.name).__name__)
    assert found == {module.__name__ for module in models.MODULES}


def test_a_database_whose_data_domain_made_its_table_keeps_it(tmp_path: Path, database_url: str | None) -> None:
    """Before revision 0004 the data domain created ``data_collections`` on first
    use; upgrading such a database keeps the table and the definitions in it."""
    url = database_url or f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0003")

    async def old_data_domain() -> None:
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(DEFINITIONS.create)
                await connection.execute(
                    sa.insert(DEFINITIONS).values(
                        name="notes", source="config", definition={"fields": {}}, applied_at=dt.datetime.now(dt.UTC)
                    )
                )
        finally:
            await engine.dispose()

    asyncio.run(old_data_domain())
    upgrade(url)

    async def read() -> list[str]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                return list((await connection.scalars(sa.select(DEFINITIONS.c.name))).all())
        finally:
            await engine.dispose()

    assert asyncio.run(read()) == ["notes"]
    assert _differences(url, models.metadata) == []


def _client_row(client_id: str, secret_hash: str | None, method: str) -> dict[str, Any]:
    return {
        "id": client_id, "name": client_id, "secret_hash": secret_hash, "public": method == "none",
        "first_party": False, "token_endpoint_auth_method": method, "redirect_uris": ["https://app.example/cb"],
        "post_logout_redirect_uris": [], "grant_types": ["authorization_code"], "scopes": ["openid"],
        "require_par": False, "require_dpop": False, "id_token_alg": "RS256", "access_token_alg": "RS256",
        "claims": {}, "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    }  # fmt: skip


def test_upgrading_from_0009_gives_existing_client_secrets_a_year(tmp_path: Path, database_url: str | None) -> None:
    """V13.3.4 (secrets expire): revision 0010 gives every secret registered before it an
    expiry a year from the upgrade, so none stops working on the day of the upgrade and
    each is reminded before it does; a public client and a private_key_jwt one (no
    secret) keep none."""
    url = database_url or f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0009")
    # oauth_clients as 0009 left it: every column of the model but the new one.
    columns = [sa.column(c.name, c.type) for c in OAuthClient.__table__.columns if c.name != "secret_expires_at"]
    old = sa.table("oauth_clients", *columns)
    rows = [
        _client_row("confidential", "hmac:k1:digest", "client_secret_basic"),
        _client_row("public", None, "none"),
        _client_row("keyed", None, "private_key_jwt"),
    ]

    async def insert_old() -> None:
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.execute(sa.insert(old), rows)
        finally:
            await engine.dispose()

    asyncio.run(insert_old())
    before = dt.datetime.now(dt.UTC)
    upgrade(url)
    after = dt.datetime.now(dt.UTC)

    async def read() -> dict[str, dt.datetime | None]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                found = await connection.execute(sa.select(OAuthClient.id, OAuthClient.secret_expires_at))
                return {row.id: row.secret_expires_at for row in found}
        finally:
            await engine.dispose()

    expiries = asyncio.run(read())
    year = dt.timedelta(days=365)
    confidential = expiries["confidential"]
    assert confidential is not None
    assert before + year - dt.timedelta(seconds=1) <= confidential <= after + year
    assert expiries["public"] is None
    assert expiries["keyed"] is None
    assert _differences(url, models.metadata) == []


def test_the_head_revision_read_from_the_files_is_alembics() -> None:
    """``is_current`` reads the head without Alembic; it must be the head Alembic computes."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite:///unused.db"))
    assert head_revision() == scripts.get_current_head()


def test_a_database_is_current_only_at_the_head(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bastion.db'}"
    assert not is_current(url)  # no file yet
    upgrade(url, "0004")
    assert not is_current(url)
    upgrade(url)
    assert is_current(url)
    assert not is_current("postgresql+asyncpg://postgres@127.0.0.1/bastion")  # always through upgrade
