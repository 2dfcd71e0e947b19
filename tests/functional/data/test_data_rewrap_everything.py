"""``bastion keys rewrap`` moves every sealed value, not only encrypted fields,
so a compromised encryption key can be removed: ``keys list`` counts what
each key still protects, and ``keys remove`` refuses while anything does."""

from __future__ import annotations

import asyncio
import re

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from bastion.cli import app as cli
from bastion.data import tables
from bastion.data.schema import Catalog
from bastion.db import Base
from bastion.network.ca import BastionCa
from bastion.rewrap import sealed_columns
from bastion.secrets import open_keyrings
from bastion.security import totp_at
from harness import PASSWORD, DataHarness

ALICE = "alice@example.com"  # the data harness's first user (tests/functional/data/conftest.py)

runner = CliRunner()


async def bastion(data: DataHarness, *args: str) -> tuple[int, str]:
    """The command, run beside the serving app (in a thread: it has its own event loop)."""
    result = await asyncio.to_thread(runner.invoke, cli, [*args, "--data-dir", str(data.settings.data_dir)])
    return result.exit_code, result.stdout + result.stderr


def values_under(listing: str, kid: str) -> int:
    """The ``values`` column of ``kid``'s row in ``bastion keys list``."""
    row = next(line for line in listing.splitlines() if kid in line)
    return int(re.findall(r"\d+", row.split(kid, 1)[1])[-1])


def _step(data: DataHarness) -> int:
    return int(data.clock.now().timestamp()) // 30


async def _sign_in_with_totp(data: DataHarness, secret: str) -> int:
    challenge = await data.client.post("/api/v1/auth/login", json={"email": ALICE, "password": PASSWORD})
    body = {"mfa_token": challenge.json()["mfa_token"], "code": totp_at(secret, _step(data))}
    data.clock.advance(seconds=30)
    return (await data.client.post("/api/v1/auth/mfa", json=body)).status_code


@pytest.fixture(autouse=True)
def _cli_database(data: DataHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI reads bastion.toml; point it at the test's database too.
    monkeypatch.setenv("BASTION_DATABASE_URL", data.settings.sqlalchemy_url)


async def test_rotate_rewrap_remove_and_totp_still_signs_in(data: DataHarness) -> None:
    """V11.2.2, V13.3.4: after rotate + rewrap, nothing is left under the old
    key (records, TOTP secrets, the CA key), so removing it loses nothing:
    TOTP sign-in, encrypted fields and the CA all still work."""
    enrol = await data.client.post("/api/v1/me/mfa/totp", headers=data.bearer(data.alice))
    secret = enrol.json()["secret"]
    confirm = {"code": totp_at(secret, _step(data))}
    assert (
        await data.client.post("/api/v1/me/mfa/totp/confirm", json=confirm, headers=data.bearer(data.alice))
    ).status_code == 200
    data.clock.advance(seconds=30)
    note = await data.create(data.alice, "notes", {"title": "t", "secret": "under the old key"})
    BastionCa.init(data.settings, now=data.clock.now())
    old = open_keyrings(data.settings).encryption.active_kid

    code, listing = await bastion(data, "keys", "list")
    assert code == 0, listing
    assert values_under(listing, old) == 3  # a TOTP secret, a field, the CA key
    assert (await bastion(data, "keys", "rotate", "encryption"))[0] == 0
    code, refused = await bastion(data, "keys", "remove", "encryption", old)
    assert code == 2
    assert "3 sealed values are still under" in refused

    code, output = await bastion(data, "keys", "rewrap")
    assert code == 0, output
    assert "rewrapped 3 values" in output
    new = open_keyrings(data.settings).encryption.active_kid
    code, listing = await bastion(data, "keys", "list")
    assert (values_under(listing, old), values_under(listing, new)) == (0, 3)

    code, output = await bastion(data, "keys", "remove", "encryption", old)
    assert code == 0, output
    assert old not in [info.kid for info in open_keyrings(data.settings).encryption.kids()]
    assert await _sign_in_with_totp(data, secret) == 200
    read = await data.client.get(f"{data.records('notes')}/{note['id']}", headers=data.bearer(data.alice))
    assert read.json()["secret"] == "under the old key"
    BastionCa.open(data.settings)  # the CA key still unseals


async def test_the_active_key_cannot_be_removed(data: DataHarness) -> None:
    active = open_keyrings(data.settings).encryption.active_kid
    code, output = await bastion(data, "keys", "remove", "encryption", active)
    assert code == 2
    assert "rotate first" in output
    assert active in [info.kid for info in open_keyrings(data.settings).encryption.kids()]


async def test_every_binary_column_is_a_known_sealed_place(data: DataHarness) -> None:
    """Rewrap and the counts cover what sealed_columns lists: a binary column
    it does not name (a new sealed value nobody told rewrap about) fails here."""
    catalog = Catalog.build(await data.app.state.db.run_sync(tables.read_definitions))
    listed = {(place.table.name, place.column) for place in sealed_columns(catalog)}
    binary = {
        (table.name, column.name)
        for table in [*Base.metadata.tables.values(), *(c.table for c in catalog.collections.values())]
        for column in table.columns
        if isinstance(column.type, sa.LargeBinary)
    }
    # The audit tree's binary columns hold hashes and salts, not ciphertexts: nothing to rewrap.
    hashes = {
        ("audit_events", "leaf_hash"),
        ("audit_events", "personal_salt"),
        ("audit_tree", "frontier"),
        ("audit_tree", "root_hash"),
        ("audit_checkpoints", "root_hash"),
    }
    assert binary - hashes == listed
