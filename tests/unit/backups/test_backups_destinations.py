"""Local destinations: atomic writes, names only, nothing half-written visible."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.backups.destinations import LocalDestination, destination_for
from bastion.backups.errors import BackupUnavailable
from bastion.settings import load_settings


def test_put_get_write_read_delete(tmp_path: Path) -> None:
    destination = LocalDestination(tmp_path / "made" / "here")
    assert destination.list_names() == []
    assert destination.read_bytes("x") is None
    source = tmp_path / "source"
    source.write_bytes(b"payload" * 1000)
    destination.put(source, "b.age")
    destination.write_bytes("b.age.manifest", b"note")
    assert destination.list_names() == ["b.age", "b.age.manifest"]
    assert (destination.path / "b.age").stat().st_mode & 0o777 == 0o600
    assert destination.path.stat().st_mode & 0o777 == 0o700
    out = tmp_path / "out"
    destination.get("b.age", out)
    assert out.read_bytes() == source.read_bytes()
    with pytest.raises(FileExistsError):
        destination.get("b.age", out)  # never overwrites a local file
    with pytest.raises(BackupUnavailable):
        destination.get("missing", tmp_path / "nothing")
    destination.delete("b.age")
    destination.delete("b.age")
    assert destination.list_names() == ["b.age.manifest"]


def test_a_failing_file_system_is_backup_unavailable(tmp_path: Path) -> None:
    """V16.5.2: every I/O failure of a local destination is one BackupUnavailable (one CLI line,
    exit 2), never a traceback (run as root here, so the failures are not permissions)."""
    destination = LocalDestination(tmp_path / "d")
    destination.write_bytes("sidecar", b"note")
    (destination.path / "a-directory").mkdir()
    with pytest.raises(BackupUnavailable, match="cannot write a-directory"):
        destination.write_bytes("a-directory", b"note")  # a directory where the file goes
    assert sorted(p.name for p in destination.path.iterdir()) == ["a-directory", "sidecar"]  # no .partial
    with pytest.raises(BackupUnavailable, match="cannot be read"):
        destination.get("a-directory", tmp_path / "out")
    with pytest.raises(BackupUnavailable, match="cannot copy"):
        destination.get("sidecar", tmp_path / "missing-dir" / "out")
    with pytest.raises(BackupUnavailable, match="cannot read a-directory"):
        destination.read_bytes("a-directory")


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".."])
def test_names_cannot_leave_the_directory(tmp_path: Path, name: str) -> None:
    """V5.3.2: a destination writes only directly inside its own directory."""
    destination = LocalDestination(tmp_path / "d")
    with pytest.raises(ValueError, match="not a file name"):
        destination.write_bytes(name, b"x")
    assert not (tmp_path / "escape").exists()


def test_destination_for_what_operators_write(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    assert destination_for("s3://bucket/some/prefix", settings).name == "s3://bucket/some/prefix"
    assert isinstance(destination_for(str(tmp_path / "abs"), settings), LocalDestination)
    for bad in ("ftp://host/x", "s3://", "s3://bucket?x=1"):
        with pytest.raises(BackupUnavailable):
            destination_for(bad, settings)


def test_libpq_target_carries_the_url_parameters_pg_dump_needs() -> None:
    """V12.3.1 / V13.2.3: pg_dump reaches the server as the app does: a socket directory given as
    ``?host=``, the TLS mode and CA file carried as PG* variables; the password only in the
    environment, never in the --dbname text; a driver-only parameter is not passed to libpq."""
    from bastion.backups.snapshot import libpq_target

    dbname, env = libpq_target(
        "postgresql+asyncpg://bastion:s3cret@/bastion?host=/run/postgresql&sslmode=verify-full"
        "&sslrootcert=/etc/ca.pem&connect_timeout=5&prepared_statement_cache_size=0"
    )
    assert "s3cret" not in dbname
    assert dbname == "postgresql://bastion@/bastion"
    assert env["PGPASSWORD"] == "s3cret"
    assert env["PGHOST"] == "/run/postgresql"
    assert env["PGSSLMODE"] == "verify-full"
    assert env["PGSSLROOTCERT"] == "/etc/ca.pem"
    assert env["PGCONNECT_TIMEOUT"] == "5"
    assert {key for key in env if key.startswith("PG")} == {
        "PGPASSWORD",
        "PGHOST",
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGCONNECT_TIMEOUT",
    }
    _, env = libpq_target("postgresql+asyncpg://u@db.example:5433/x?ssl=true")
    assert env["PGSSLMODE"] == "require"
    assert "PGHOST" not in env
