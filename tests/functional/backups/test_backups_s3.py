"""Backups to S3-compatible storage (boto3 against moto's standalone ThreadedMotoServer, a real
HTTP server on loopback), and the erasure ledger carried beside the backups in every destination."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer
from typer.testing import CliRunner

from bastion.backups.archive import list_backups
from bastion.backups.create import create_backup, trusted_vkeys
from bastion.backups.destinations import LocalDestination, S3Destination, destinations_of, local_backup_dir
from bastion.backups.errors import BackupUnavailable
from bastion.backups.ledger_sync import LEDGER_NAME, complete_lines, sync_ledger, sync_ledger_to
from bastion.backups.manifest import verify_sidecar
from bastion.backups.verify import verify_backup
from bastion.privacy.ledger import new_entry, read_ledger
from bastion.secrets import checkpoint_origin, open_keyrings
from bastion.settings import Settings
from factories.backups import IDENTITY, RECIPIENT
from harness import Harness

BUCKET = "bastion-backups"
runner = CliRunner()


@pytest.fixture
def database_url() -> None:
    """The embedded SQLite file only: what is tested is where the file goes."""
    return


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    ).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def harness_settings(s3_endpoint: str) -> dict[str, object]:
    return {
        "backups": {
            "recipients": [RECIPIENT],
            "destinations": [f"s3://{BUCKET}/site-a", "offsite"],
            "s3_endpoint_url": s3_endpoint,
            "s3_access_key_id": "k",
            "s3_secret_access_key": "s",
        }
    }


async def test_a_backup_goes_to_every_destination_and_round_trips_through_s3(harness: Harness, tmp_path: Path) -> None:
    """Each destination holds the file and its signed sidecar; the copy downloaded from S3 verifies
    and decrypts as the local one does; `--to s3://…` writes there only and prints the URL."""
    settings = harness.settings
    keys = open_keyrings(settings)
    vkeys = trusted_vkeys(settings, keys)
    created = await create_backup(settings, keys)
    local, s3, offsite = destinations_of(settings)
    assert isinstance(s3, S3Destination)
    assert isinstance(offsite, LocalDestination)
    assert offsite.path == settings.data_dir / "offsite"
    assert created.copies == (local.name, s3.name, offsite.name)
    for destination in (local, s3, offsite):
        listed = await asyncio.to_thread(list_backups, destination, vkeys)
        assert [(b.name, b.complete, b.size) for b in listed] == [(created.manifest.name, True, created.size)]
    downloaded = tmp_path / created.manifest.name
    await asyncio.to_thread(s3.get, created.manifest.name, downloaded)
    await asyncio.to_thread(s3.get, created.manifest.name + ".manifest", tmp_path / (downloaded.name + ".manifest"))
    assert await asyncio.to_thread(verify_sidecar, downloaded, vkeys) == created.manifest
    assert await verify_backup(downloaded, vkeys, identity_text=IDENTITY) == created.manifest

    from bastion.cli import app

    result = await asyncio.to_thread(
        runner.invoke, app, ["--data-dir", str(settings.data_dir), "backup", "create", "--to", f"s3://{BUCKET}/only"]
    )
    # The CLI reads bastion.toml, not the harness's overrides: it has no S3 endpoint nor recipients.
    assert result.exit_code == 2
    only = S3Destination(f"s3://{BUCKET}/only", settings)
    made = await create_backup(settings, keys, destinations=[only])
    assert made.path is None
    assert made.location == f"s3://{BUCKET}/only/{made.manifest.name}"
    assert [b.complete for b in await asyncio.to_thread(list_backups, only, vkeys)] == [True]
    assert len(await asyncio.to_thread(list_backups, local, vkeys)) == 1  # untouched by --to


async def test_an_unreachable_bucket_cannot_run(harness: Harness) -> None:
    settings = harness.settings
    missing = S3Destination("s3://no-such-bucket/x", settings)
    with pytest.raises(BackupUnavailable, match="no-such-bucket"):
        await create_backup(settings, open_keyrings(settings), destinations=[missing])
    assert not any(p.name.startswith(".backup-") for p in settings.data_dir.iterdir())
    left = list(local_backup_dir(settings).glob("*")) if local_backup_dir(settings).exists() else []
    assert left == []


def _ledger(settings: Settings, *lines: str) -> None:
    (settings.data_dir / LEDGER_NAME).write_text("".join(line + "\n" for line in lines))


def _entry(settings: Settings, day: int) -> str:
    """A real signed ledger line (the live keystore's notary key), erased on 2026-12-``day``."""
    at = dt.datetime(2026, 12, day, tzinfo=dt.UTC)
    return new_entry(open_keyrings(settings), checkpoint_origin(settings), uuid.uuid4(), at).line


async def test_the_erasure_ledger_is_merged_into_every_destination(harness: Harness) -> None:
    """The data directory's ledger lines reach every destination (by each backup and by the erasure
    hook), and lines a destination already holds are kept: a union, oldest first, never a replacement."""
    settings = harness.settings
    first, foreign, second = _entry(settings, 1), _entry(settings, 2), _entry(settings, 3)
    _ledger(settings, first)
    await create_backup(settings, open_keyrings(settings))
    destinations = destinations_of(settings)
    for destination in destinations:
        assert await asyncio.to_thread(destination.read_bytes, LEDGER_NAME) == (first + "\n").encode()
    # An erasure already beside the backups in S3 (a restored instance's); then one more here.
    s3 = destinations[1]
    await asyncio.to_thread(s3.write_bytes, LEDGER_NAME, (first + "\n" + foreign + "\n").encode())
    _ledger(settings, first, second)
    await sync_ledger(settings)
    assert await asyncio.to_thread(s3.read_bytes, LEDGER_NAME) == f"{first}\n{foreign}\n{second}\n".encode()
    for destination in (destinations[0], destinations[2]):
        assert await asyncio.to_thread(destination.read_bytes, LEDGER_NAME) == f"{first}\n{second}\n".encode()


async def test_a_line_that_does_not_verify_is_never_carried(harness: Harness) -> None:
    """V11.3.3 / V14.2.4: a ledger line not signed by the notary key (forged, altered, or garbage)
    is left out of every destination's ledger, where it would make each restore refuse the whole
    ledger; one already in a destination is dropped there; the good lines go on."""
    settings = harness.settings
    good = _entry(settings, 1)
    fields = json.loads(good)
    forged = json.dumps({**fields, "pseudonym": "00" * 32}, sort_keys=True, separators=(",", ":"))
    unsigned = json.dumps({k: v for k, v in fields.items() if k != "sig"}, sort_keys=True, separators=(",", ":"))
    _ledger(settings, good, forged, "not json", unsigned)
    local = LocalDestination(local_backup_dir(settings))
    local.write_bytes(LEDGER_NAME, b"garbage\n" + forged.encode() + b"\n")
    assert sync_ledger_to(settings, [local]) == 1
    held = local.read_bytes(LEDGER_NAME)
    assert held == (good + "\n").encode()
    assert read_ledger(held or b"", open_keyrings(settings))[0].line == good


async def test_a_line_still_being_appended_is_not_carried(harness: Harness) -> None:
    """Half an entry (an append seen mid-write, or cut by a crash) never reaches a destination,
    where it would make the ledger unreadable for every restore; it goes once it is whole."""
    settings = harness.settings
    whole, second = _entry(settings, 1), _entry(settings, 2)
    path = settings.data_dir / LEDGER_NAME
    path.write_text(whole + "\n" + whole[:20])
    local = LocalDestination(local_backup_dir(settings))
    sync_ledger_to(settings, [local])
    assert local.read_bytes(LEDGER_NAME) == (whole + "\n").encode()
    path.write_text(whole + "\n" + second + "\n")
    sync_ledger_to(settings, [local])
    assert local.read_bytes(LEDGER_NAME) == f"{whole}\n{second}\n".encode()
    assert complete_lines(b"a\nb") == b"a\n"
    assert complete_lines(b"") == b""


async def test_hosts_syncing_into_one_s3_prefix_lose_no_line(harness: Harness) -> None:
    """V15.4.2 (shared resources under concurrency): the data directory's lock is one host's; on S3
    each ledger write is a conditional PUT on the ETag read, so eight hosts merging their own
    erasure into one prefix at once leave every line there, and a stale write is refused."""
    from concurrent.futures import ThreadPoolExecutor

    # One host's merge, without the data directory's lock: as eight hosts would.
    from bastion.backups.ledger_sync import _merge_into

    settings = harness.settings
    keys = open_keyrings(settings)
    s3 = S3Destination(f"s3://{BUCKET}/race-{uuid.uuid4().hex[:8]}", settings)
    lines = [_entry(settings, day) for day in range(1, 9)]
    assert s3.write_if(LEDGER_NAME, (lines[0] + "\n").encode(), None)
    _, etag = s3.read_tagged(LEDGER_NAME)
    assert not s3.write_if(LEDGER_NAME, b"", None)  # If-None-Match: * on an object that exists
    s3.write_bytes(LEDGER_NAME, (lines[0] + "\n" + lines[1] + "\n").encode())  # another host, meanwhile
    assert not s3.write_if(LEDGER_NAME, (lines[0] + "\n").encode(), etag)  # the stale write is refused

    def host(line: str) -> bool:
        return _merge_into(s3, (line + "\n").encode(), keys)

    with ThreadPoolExecutor(8) as pool:
        await asyncio.gather(*(asyncio.wrap_future(pool.submit(host, line)) for line in lines))
    held = s3.read_bytes(LEDGER_NAME) or b""
    assert held == "".join(line + "\n" for line in lines).encode()
