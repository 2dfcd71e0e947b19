"""The command line: init is idempotent, prod refuses every insecure setting
with one line and exit code 2, and bad configuration loses nothing."""

from __future__ import annotations

import hashlib
import shutil
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli import app
from bastion.security import MasterKey

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def fingerprint(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not path.name.startswith("bastion.db")
    }


def test_init_creates_a_private_data_dir_and_is_idempotent(tmp_path: Path) -> None:
    data = tmp_path / "data"
    code, _, _ = run("init", "--data-dir", str(data))
    assert code == 0
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for secret in (
        "master.key",
        "keys/encryption.json",
        "keys/signing.json",
        "keys/signing-rs256.json",
        "keys/signing-es256.json",
        "keys/notary.json",
        "keys/hmac.json",
        "tls/server.key",
    ):
        assert stat.S_IMODE((data / secret).stat().st_mode) == 0o600, secret
    assert (data / "bastion.toml").is_file()
    assert (data / "bastion.db").is_file()
    before = fingerprint(data)

    code, _, _ = run("init", "--data-dir", str(data))
    assert code == 0
    assert fingerprint(data) == before  # never overwrites keys, certs or config


def test_v13_3_1_an_install_older_than_rs256_and_es256_gains_their_keyrings(tmp_path: Path) -> None:
    """ASVS V13.3.1: an install from before the RS256, ES256 and notary keyrings starts
    (here: any command opening the keystore) and gets them made, each with its
    one active key, while every key it had is left exactly as it was."""
    data = tmp_path / "data"
    assert run("init", "--data-dir", str(data))[0] == 0
    for added in ("signing-rs256", "signing-es256", "notary"):
        (data / "keys" / f"{added}.json").unlink()
    before = fingerprint(data / "keys")
    code, out, err = run("keys", "list", "--data-dir", str(data))
    assert code == 0, err
    after = fingerprint(data / "keys")
    assert {name: after[name] for name in before} == before
    assert sorted(set(after) - set(before)) == ["notary.json", "signing-es256.json", "signing-rs256.json"]
    for added in ("signing-rs256", "signing-es256", "notary"):
        assert stat.S_IMODE((data / "keys" / f"{added}.json").stat().st_mode) == 0o600
        assert added in out
    assert run("keys", "list", "--data-dir", str(data))[0] == 0
    assert fingerprint(data / "keys") == after  # made once, never replaced


def test_keys_rotate_signing_rotates_every_signing_algorithm(tmp_path: Path) -> None:
    """`bastion keys rotate signing` is one rotation of the whole JWKS: a new key for
    EdDSA, RS256 and ES256 alike, the others untouched."""
    data = tmp_path / "data"
    assert run("init", "--data-dir", str(data))[0] == 0
    before = fingerprint(data / "keys")
    code, out, err = run("keys", "rotate", "signing", "--data-dir", str(data))
    assert code == 0, err
    after = fingerprint(data / "keys")
    changed = sorted(name for name in after if after[name] != before[name])
    assert changed == ["signing-es256.json", "signing-rs256.json", "signing.json"]
    for purpose in ("signing", "signing-rs256", "signing-es256"):
        assert f"new active {purpose} key" in out
    # Publish before sign: the new keys are only published, the old ones still sign.
    code, listing, _ = run("keys", "list", "--data-dir", str(data))
    assert code == 0
    signing_rows = [line for line in listing.splitlines() if "signing" in line and "│" in line]
    assert len(signing_rows) == 6
    assert sum("published" in row and "active" in row for row in signing_rows) == 3
    assert sum(row.count("signing") == 2 and "retired" in row for row in signing_rows) == 3


def test_data_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_DATA_DIR", str(tmp_path / "envdata"))
    assert run("init")[0] == 0
    assert (tmp_path / "envdata" / "keys" / "encryption.json").is_file()


def test_corrupt_config_is_one_line_and_untouched(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run("init", "--data-dir", str(data))[0] == 0
    (data / "bastion.toml").write_text("mode = [unclosed\n")
    before = fingerprint(data)
    for command in ("init", "check", "serve", "migrate"):
        code, _, err = run(command, "--data-dir", str(data))
        assert code == 2, command
        assert err.count("\n") == 1, err
        assert "bastion.toml is not valid TOML" in err
    assert fingerprint(data) == before


def test_unknown_setting_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run("init", "--data-dir", str(data))[0] == 0
    (data / "bastion.toml").write_text('mode = "dev"\n[server]\nprot = 1\n')
    code, _, err = run("check", "--data-dir", str(data))
    assert code == 2
    assert "server.prot" in err


def test_missing_key_file_stops_serve(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run("init", "--data-dir", str(data))[0] == 0
    (data / "keys" / "signing.json").unlink()
    code, _, err = run("serve", "--data-dir", str(data))
    assert code == 2
    assert error_lines(err) == [err.splitlines()[-1]]
    assert "signing" in err


def test_data_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    code, _, err = run("init", "--data-dir", str(tmp_path / "afile"))
    assert code == 2
    assert err.count("\n") == 1


@pytest.fixture
def prod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A prod data dir with every setting secure; tests then break one."""
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    key = secrets / "master.key"
    key.write_text(MasterKey.generate().to_text())
    key.chmod(0o600)
    monkeypatch.setenv("BASTION_MODE", "prod")
    monkeypatch.setenv("BASTION_MASTER_KEY_FILE", str(key))
    data = tmp_path / "data"
    code, _, err = run("init", "--data-dir", str(data))
    assert code == 0, err
    assert not (data / "master.key").exists()  # prod never generates one
    code, out, _ = run("check", "--data-dir", str(data))
    assert code == 0, out
    return data


def test_prod_init_without_master_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_MODE", "prod")
    code, _, err = run("init", "--data-dir", str(tmp_path / "data"))
    assert code == 2
    assert "BASTION_MASTER_KEY_FILE" in err


def _break(kind: str, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    key = Path(os.environ["BASTION_MASTER_KEY_FILE"])
    if kind == "missing key":
        monkeypatch.delenv("BASTION_MASTER_KEY_FILE")
    elif kind == "short key":
        monkeypatch.delenv("BASTION_MASTER_KEY_FILE")
        monkeypatch.setenv("BASTION_MASTER_KEY", "c2hvcnQta2V5LW9mLTE2Yg")  # 16 bytes
    elif kind == "key inside data dir":
        inside = data / "master.key"
        shutil.copy(key, inside)
        inside.chmod(0o600)
        monkeypatch.setenv("BASTION_MASTER_KEY_FILE", str(inside))
    elif kind == "key readable by group":
        key.chmod(0o640)
    elif kind == "tls off":
        monkeypatch.setenv("BASTION_SERVER__TLS", "false")
    elif kind == "data dir open":
        data.chmod(0o750)
    elif kind == "cors wildcard":
        monkeypatch.setenv("BASTION_CORS__ALLOW_ORIGINS", '["*"]')
        monkeypatch.setenv("BASTION_CORS__ALLOW_CREDENTIALS", "true")
    elif kind == "debug":
        monkeypatch.setenv("BASTION_DEBUG", "true")


@pytest.mark.parametrize(
    ("kind", "setting"),
    [
        ("missing key", "master_key"),
        ("short key", "256 bits"),
        ("key inside data dir", "inside the data dir"),
        ("key readable by group", "master_key_file"),
        ("tls off", "server.tls"),
        ("data dir open", "data_dir"),
        ("cors wildcard", "cors.allow_origins"),
        ("debug", "debug"),
    ],
)
def test_prod_refuses_insecure_settings(prod: Path, monkeypatch: pytest.MonkeyPatch, kind: str, setting: str) -> None:
    """V13.4.2 (debug off), V11.1 (key management), V12.2.1 (TLS): start-up is refused."""
    _break(kind, prod, monkeypatch)
    code, _, err = run("serve", "--data-dir", str(prod))
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith("error: refusing to start") or "master key" in err
    assert setting in err
    code, out, _ = run("check", "--data-dir", str(prod))
    assert code == 1
    assert "error" in out


def test_plain_http_flag_is_refused_in_prod(prod: Path) -> None:
    code, _, err = run("serve", "--http", "--data-dir", str(prod))
    assert code == 2
    assert "server.tls" in err


def test_plain_http_behind_a_trusted_proxy_passes_the_check(prod: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_SERVER__TLS", "false")
    monkeypatch.setenv("BASTION_SERVER__TRUSTED_PROXIES", '["10.0.0.0/8"]')
    code, out, _ = run("check", "--data-dir", str(prod))
    assert code == 0, out


def test_dev_mode_check_warns_but_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    assert run("init", "--data-dir", str(data))[0] == 0
    monkeypatch.setenv("BASTION_DEBUG", "true")
    code, out, _ = run("check", "--data-dir", str(data))
    assert code == 0
    assert "warning" in out
    assert "dev mode" in out


def test_serve_app_that_cannot_be_imported_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run("init", "--data-dir", str(data))[0] == 0
    code, _, err = run("serve", "--data-dir", str(data), "--app", "no_such_module:app_factory")
    assert code == 2
    assert error_lines(err) == ["error: --app no_such_module:app_factory: No module named 'no_such_module'"]


def test_v2_4_1_several_workers_without_redis_are_refused(tmp_path: Path) -> None:
    """V2.4.1, V16.3.3: in-memory throttle and detection counters are per worker, so 4 workers
    would quadruple every limit and every HTTP-signal alert threshold; serve refuses in one line
    (dev too), check reports it."""
    data = tmp_path / "data"
    assert run("init", "--data-dir", str(data))[0] == 0
    code, _, err = run("serve", "--data-dir", str(data), "--workers", "4")
    assert code == 2
    assert error_lines(err) == [
        "error: refusing to start: server.workers: 4 workers without redis_url would each keep their own "
        "throttle and detection counters, multiplying every rate limit and every HTTP-signal alert threshold; "
        "set redis_url so the workers share counters, or set server.workers = 1"
    ]
    code, out, _ = run("check", "--data-dir", str(data))  # serve has put workers=4 in the environment
    assert code == 1
    assert "server.workers" in out


def test_version() -> None:
    from bastion import __version__

    assert run("--version") == (0, f"bastion {__version__}\n", "")


def test_data_dir_at_the_top_level(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`bastion --data-dir D cmd` means D; a command's own --data-dir wins, and both beat the environment."""
    monkeypatch.setenv("BASTION_DATA_DIR", str(tmp_path / "from-env"))
    assert run("--data-dir", str(tmp_path / "top"), "init")[0] == 0
    assert (tmp_path / "top" / "bastion.toml").is_file()
    assert run("--data-dir", str(tmp_path / "top"), "init", "--data-dir", str(tmp_path / "own"))[0] == 0
    assert (tmp_path / "own" / "bastion.toml").is_file()
    assert not (tmp_path / "from-env").exists()


# What a server needs and a help text does not: loading any of them made
# `bastion --help` take 1-2 s.
HEAVY = ("sqlalchemy", "fastapi", "starlette", "cryptography", "alembic", "argon2", "granian", "pydantic_settings")


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["user", "--help"],
        ["keys", "--help"],
        ["collections", "--help"],
        ["ca", "--help"],
        ["mail", "--help"],
    ],
)
def test_help_does_not_load_the_server(args: list[str]) -> None:
    import json
    import subprocess
    import sys

    script = (
        "import json, sys\n"
        "from bastion.cli import app\n"
        "try:\n"
        f"    app({args!r}, prog_name='bastion')\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        "print(json.dumps([code, sorted({m.split('.')[0] for m in sys.modules})]), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    code, loaded = json.loads(done.stderr.strip().splitlines()[-1])
    assert code == 0
    assert "Usage:" in done.stdout
    assert [name for name in HEAVY if name in loaded] == []
