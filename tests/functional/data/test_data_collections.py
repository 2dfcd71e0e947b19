"""Collections from bastion.toml: plan, apply, refusal of destructive changes,
the command line, and the OpenAPI document (with schemathesis over it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from typer.testing import CliRunner

from bastion.app import create_app
from bastion.cli import app as cli
from bastion.clock import FrozenClock, SystemClock
from bastion.data import service as data_service
from bastion.data.errors import DestructiveChanges
from bastion.data.service import apply_configured
from bastion.settings import CollectionSettings, Settings, load_settings
from factories.data import COLLECTIONS
from factories.identity import create_user, sign_in
from harness import CHEAP_ARGON2


def _with(settings: Settings, **fields: Any) -> Settings:
    """``settings`` with the notes collection's fields changed (None drops one)."""
    current = settings.collections.get("notes")
    definition = current.model_dump(exclude_defaults=True) if current else dict(COLLECTIONS["notes"])
    merged = {**definition["fields"], **fields}
    definition["fields"] = {name: kind for name, kind in merged.items() if kind is not None}
    return settings.model_copy(update={"collections": {"notes": CollectionSettings.model_validate(definition)}})


def test_apply_adds_fields_and_refuses_to_drop_without_force(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(collections={"notes": COLLECTIONS["notes"]})
    grown = _with(settings, tags={"type": "json"}, priority={"type": "integer", "sortable": True})
    assert [c.description for c in apply_configured(grown, SystemClock()).changes] == [
        "add field notes.tags",
        "make notes.priority no longer filterable",
        "change validation of notes.priority (existing values are kept)",
    ]
    assert apply_configured(grown, SystemClock()).empty  # idempotent
    reindexed = _with(grown, title={"type": "string", "max_length": 200, "required": True})
    assert [c.description for c in apply_configured(reindexed, SystemClock()).changes] == [
        "re-index notes.title",
        "make notes.title no longer filterable",
    ]
    # Same index (priority is sortable): the plan still says what changes.
    refiltered = _with(reindexed, priority={"type": "integer", "sortable": True, "filterable": True})
    assert [c.description for c in apply_configured(refiltered, SystemClock()).changes] == [
        "make notes.priority filterable"
    ]

    for changed, refusal in [
        (settings.model_copy(update={"collections": {}}), "DROP collection notes"),
        (_with(refiltered, priority={"type": "string"}), "REPLACE field notes.priority"),
        (_with(refiltered, secret=None), "DROP field notes.secret"),
    ]:
        with pytest.raises(DestructiveChanges, match=refusal):
            apply_configured(changed, SystemClock())
    dropped = apply_configured(_with(refiltered, secret=None), SystemClock(), force=True)
    assert [c.description for c in dropped.changes] == ["DROP field notes.secret and its values"]


def test_cli_plan_apply_and_keys(make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings()
    if settings.database_url is not None:
        monkeypatch.setenv("BASTION_DATABASE_URL", settings.database_url.get_secret_value())
    (settings.data_dir / "bastion.toml").write_text(
        "[collections.memo]\nrules = { read = 'owner' }\n[collections.memo.fields]\ntext = { type = 'text' }\n"
    )
    runner = CliRunner()
    args = ["--data-dir", str(settings.data_dir)]
    planned = runner.invoke(cli, ["collections", "plan", *args])
    assert planned.exit_code == 0, planned.output
    assert "create collection memo" in planned.output
    assert runner.invoke(cli, ["collections", "apply", *args]).exit_code == 0
    (settings.data_dir / "bastion.toml").write_text("")
    refused = runner.invoke(cli, ["collections", "apply", *args])
    assert refused.exit_code == 2
    assert "DROP collection memo" in refused.output
    assert runner.invoke(cli, ["collections", "apply", "--force", *args]).exit_code == 0

    listed = runner.invoke(cli, ["keys", "list", *args])
    assert listed.exit_code == 0
    assert listed.output.count("active") == 6  # encryption, hmac, one per signing algorithm, notary
    rotated = runner.invoke(cli, ["keys", "rotate", "encryption", *args])
    assert rotated.exit_code == 0, rotated.output
    assert runner.invoke(cli, ["keys", "list", *args]).output.count("retired") == 1
    assert runner.invoke(cli, ["keys", "rotate", "hmac", *args]).exit_code == 2
    rewrapped = runner.invoke(cli, ["keys", "rewrap", *args])
    assert rewrapped.exit_code == 0, rewrapped.output
    assert "rewrapped 0 values" in rewrapped.output


MEMO = """
[collections.memo]
rules = {{ list = "public", create = "public" }}
[collections.memo.fields]
text = {{ type = "string", max_length = 50{options} }}
"""


async def test_a_changed_definition_is_served_without_a_restart(
    tmp_path: Path, database_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A field made filterable, then sortable, in bastion.toml: `collections plan` says so,
    `collections apply` applies it, and the running server filters and sorts by it at once."""
    # Look at the definitions on every request rather than once a second: no sleeping.
    monkeypatch.setattr(data_service, "CATALOG_RELOAD_SECONDS", 0.0)
    if database_url is not None:
        monkeypatch.setenv("BASTION_DATABASE_URL", database_url)
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "bastion.toml").write_text(MEMO.format(options=""))
    runner = CliRunner()

    def bastion(*args: str) -> str:
        # Each command runs its own event loop, as from a shell.
        result = runner.invoke(cli, [*args, "--data-dir", str(data)])
        assert result.exit_code == 0, result.output
        return result.output

    assert "create collection memo" in await asyncio.to_thread(bastion, "init")
    app = create_app(load_settings(data))
    records = "/api/v1/collections/memo/records"
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver") as client,
    ):
        for text in ("milk", "eggs"):
            assert (await client.post(records, json={"text": text})).status_code == 201
        assert (await client.get(f"{records}?text.eq=milk")).status_code == 422

        (data / "bastion.toml").write_text(MEMO.format(options=", filterable = true"))
        planned = await asyncio.to_thread(bastion, "collections", "plan")
        assert "make memo.text filterable" in planned
        applied = await asyncio.to_thread(bastion, "collections", "apply")
        assert "no restart needed" in applied
        found = await client.get(f"{records}?text.eq=milk")
        assert found.status_code == 200, found.text
        assert [item["text"] for item in found.json()["items"]] == ["milk"]

        # Sortable too: the index stays as it is, and the plan still names the change.
        (data / "bastion.toml").write_text(MEMO.format(options=", filterable = true, sortable = true"))
        assert "make memo.text sortable" in await asyncio.to_thread(bastion, "migrate")
        ordered = await client.get(f"{records}?sort=text")
        assert ordered.status_code == 200, ordered.text
        assert [item["text"] for item in ordered.json()["items"]] == ["eggs", "milk"]


def test_invalid_definitions_stop_with_one_line(make_settings: Callable[..., Settings]) -> None:
    bad = {"a": {"fields": {"link": {"type": "relation", "collection": "missing"}}}}
    with pytest.raises(Exception, match="relation to unknown collection"):
        make_settings(collections=bad)


async def test_openapi_documents_every_collection(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(collections=COLLECTIONS))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver") as client,
    ):
        document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    assert set(paths["/api/v1/collections/notes/records"]) == {"get", "post"}
    assert set(paths["/api/v1/collections/notes/records/{record_id}"]) == {"get", "patch", "delete"}
    assert "/api/v1/collections/{name}/records" not in paths
    create = document["components"]["schemas"]["NotesCreate"]
    assert create["required"] == ["title"]
    assert create["additionalProperties"] is False
    assert create["properties"]["title"]["maxLength"] == 200
    parameters = {p["name"] for p in paths["/api/v1/collections/notes/records"]["get"]["parameters"]}
    assert {"limit", "cursor", "sort", "title.eq", "title.prefix", "priority.gte", "priority.in"} <= parameters
    assert "secret.eq" not in parameters


def test_schemathesis_finds_no_server_errors(make_settings: Callable[..., Settings]) -> None:
    """Every collection route, fuzzed from its OpenAPI schema with a signed-in user: zero 5xx."""
    config = make_settings(passwords=CHEAP_ARGON2, collections=COLLECTIONS)
    app = create_app(config, clock=FrozenClock())
    token = _signed_in(app)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [r.ok() for r in schema.get_all_operations() if r.ok().path.startswith("/api/v1/collections/")]
    assert len(operations) == 5 * len(COLLECTIONS)
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def fuzz(case: schemathesis.Case) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
            case.call_and_validate(checks=[not_a_server_error])

        fuzz()


def _signed_in(app: Any) -> str:
    """A bearer token for a signed-in user of ``app`` (made directly: signing up is not the subject)."""

    async def access_token() -> str:
        async with app.router.lifespan_context(app):
            return str((await sign_in(app, await create_user(app, "alice@example.com")))["access_token"])

    with ThreadPoolExecutor(1) as pool:  # its own loop: the test itself is synchronous
        return pool.submit(asyncio.run, access_token()).result()
