"""``bastion oauth client …`` against a real data dir: one JSON object as the last line
of ``create`` (the contract), one-line errors for bad input, nothing stored on a refusal."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli import app as cli
from bastion.instance import initialise
from bastion.settings import load_settings
from factories.oauth_clients import public_jwks, signing_key

runner = CliRunner()
YEAR = dt.timedelta(days=365)


def bastion(data: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(cli, [*args, "--data-dir", str(data)])
    return result.exit_code, result.stdout, result.stderr


def last_json(out: str) -> dict[str, object]:
    value = json.loads(out.strip().splitlines()[-1])
    assert isinstance(value, dict)
    return value


@pytest.fixture
def data(tmp_path: Path) -> Path:
    directory = tmp_path / "data"
    initialise(load_settings(directory))
    return directory


def test_create_list_show_rotate_delete(data: Path) -> None:
    """V13.3.4: the JSON of create, show and rotate-secret says when the secret expires
    (oauth.client_secret_lifetime, a year by default, from its issue)."""
    before = dt.datetime.now(dt.UTC)
    code, out, err = bastion(
        data, "oauth", "client", "create", "--name", "Notes", "--redirect-uri", "https://notes.example/cb",
        "--redirect-uri", "http://127.0.0.1/cb", "--scope", "openid", "--scope", "records:*",
    )  # fmt: skip
    assert code == 0, err
    created = last_json(out)
    client_id, secret = str(created["client_id"]), str(created["client_secret"])
    assert created["token_endpoint_auth_method"] == "client_secret_basic"
    assert created["redirect_uris"] == ["https://notes.example/cb", "http://127.0.0.1/cb"]
    expires = dt.datetime.fromisoformat(str(created["secret_expires_at"]))
    assert before + YEAR <= expires <= dt.datetime.now(dt.UTC) + YEAR
    assert "expires" in err
    code, out, _ = bastion(data, "oauth", "client", "list")
    assert code == 0
    assert client_id in out
    assert secret not in out
    code, out, _ = bastion(data, "oauth", "client", "show", client_id)
    assert code == 0
    shown = last_json(out)
    assert shown["client_id"] == client_id
    assert "client_secret" not in shown
    assert shown["secret_expires_at"] == created["secret_expires_at"]
    code, out, _ = bastion(data, "oauth", "client", "rotate-secret", client_id)
    assert code == 0
    rotated = last_json(out)
    assert rotated["client_secret"] not in (secret, None)
    assert dt.datetime.fromisoformat(str(rotated["secret_expires_at"])) >= expires
    shown = last_json(bastion(data, "oauth", "client", "show", client_id)[1])
    assert shown["secret_expires_at"] == rotated["secret_expires_at"]
    assert bastion(data, "oauth", "client", "delete", client_id)[0] == 0
    code, _, err = bastion(data, "oauth", "client", "show", client_id)
    assert code == 2
    assert err.startswith("error: no client")


def test_public_and_private_key_jwt_clients_have_no_secret(data: Path, tmp_path: Path) -> None:
    code, out, err = bastion(
        data, "oauth", "client", "create", "--name", "CLI app", "--public", "--redirect-uri", "http://[::1]/cb"
    )
    assert code == 0, err
    public = last_json(out)
    assert public["token_endpoint_auth_method"] == "none"
    assert "client_secret" not in public
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(public_jwks(signing_key("ES256"))))
    code, out, err = bastion(
        data, "oauth", "client", "create", "--name", "Service", "--grant", "client_credentials",
        "--scope", "records:notes:read", "--jwks-file", str(jwks), "--access-token-alg", "EdDSA",
    )  # fmt: skip
    assert code == 0, err
    keyed = last_json(out)
    assert keyed["token_endpoint_auth_method"] == "private_key_jwt"
    assert keyed["access_token_signed_response_alg"] == "EdDSA"
    assert "client_secret" not in keyed
    assert public["secret_expires_at"] is None
    assert keyed["secret_expires_at"] is None
    code, _, err = bastion(data, "oauth", "client", "rotate-secret", str(keyed["client_id"]))
    assert code == 2
    assert "no secret" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--redirect-uri", "https://*.example/cb"], "wildcards"),
        (["--redirect-uri", "http://app.example/cb"], "loopback"),
        (["--redirect-uri", "https://a.example/cb#x"], "fragment"),
        (["--redirect-uri", "https://a.example/cb", "--grant", "implicit"], "grant_types"),
        (["--redirect-uri", "https://a.example/cb", "--scope", "admin:users:write"], "scope"),
        (["--redirect-uri", "https://a.example/cb", "--id-token-alg", "HS256"], "id_token"),
        (["--redirect-uri", "https://a.example/cb", "--jwks-file", "/nonexistent/jwks.json"], "jwks.json"),
        (
            ["--redirect-uri", "https://a.example/cb", "--jwks-file", "x", "--jwks-uri", "https://k.example/"],
            "not both",
        ),
        (["--redirect-uri", "https://a.example/cb", "--public", "--auth-method", "client_secret_post"], "auth-method"),
        (["--public", "--grant", "client_credentials"], "public client"),
        ([], "redirect_uri"),
        (["--redirect-uri", "https://a.example/cb", "--claim", "department"], "NAME=FIELD"),
        (["--redirect-uri", "https://a.example/cb", "--claim", "pw=password_hash"], "must be one of"),
    ],
)
def test_bad_input_is_one_line_and_stores_nothing(data: Path, args: list[str], message: str) -> None:
    code, out, err = bastion(data, "oauth", "client", "create", "--name", "Bad", *args)
    assert code == 2, out
    assert err.count("\n") == 1, err
    assert err.startswith("error: ")
    assert message in err
    assert "Bad" not in bastion(data, "oauth", "client", "list")[1]


def test_custom_claims_map_user_fields(data: Path) -> None:
    """A client's custom claims name a user field each, as the admin API's do."""
    code, out, _ = bastion(
        data, "oauth", "client", "create", "--name", "HR", "--redirect-uri", "https://hr.example/cb",
        "--claim", "groups=roles", "--claim", "verified=email_verified",
    )  # fmt: skip
    assert code == 0, out
    assert last_json(out)["claims"] == {"groups": "roles", "verified": "email_verified"}


@pytest.mark.parametrize(("where", "value"), [("env", "0s"), ("toml", "-3d"), ("toml", "soon")])
def test_a_client_secret_lifetime_that_is_not_a_positive_duration_is_one_line_exit_2(
    data: Path, monkeypatch: pytest.MonkeyPatch, where: str, value: str
) -> None:
    """oauth.client_secret_lifetime = "0s" would make every new secret expired at birth:
    refused in one line naming the setting, exit 2, and no client registered."""
    config = data / "bastion.toml"
    original = config.read_text()
    if where == "env":
        monkeypatch.setenv("BASTION_OAUTH__CLIENT_SECRET_LIFETIME", value)
    else:
        config.write_text(original + f'\n[oauth]\nclient_secret_lifetime = "{value}"\n')
    code, _, err = bastion(
        data, "oauth", "client", "create", "--name", "Refused app", "--redirect-uri", "https://a.example/cb"
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: invalid setting oauth.client_secret_lifetime"), lines[0]
    assert "duration" in lines[0]
    monkeypatch.delenv("BASTION_OAUTH__CLIENT_SECRET_LIFETIME", raising=False)
    config.write_text(original)
    code, out, _ = bastion(data, "oauth", "client", "list")
    assert code == 0
    assert "Refused app" not in out


def test_the_owner_is_given_at_create_and_set_later(data: Path) -> None:
    """V6.4.5: ``--owner EMAIL`` and ``set-owner`` name the user reminded before the secret expires;
    an unknown email, or neither an email nor --none, is one line, exit 2, nothing changed."""
    made = runner.invoke(
        cli,
        ["user", "create", "--email", "owner@example.com", "--password-stdin", "--data-dir", str(data)],
        input="tangerine-orbit-cascade-91\n",
    )
    assert made.exit_code == 0, made.stderr
    create = ("oauth", "client", "create", "--name", "Owned", "--redirect-uri", "https://a.example/cb")
    code, _, err = bastion(data, *create, "--owner", "nobody@example.com")
    assert code == 2
    assert err.count("\n") == 1, err
    assert "no user with the email nobody@example.com" in err
    assert "Owned" not in bastion(data, "oauth", "client", "list")[1]
    code, out, err = bastion(data, *create, "--owner", "Owner@Example.com")
    assert code == 0, err
    created = last_json(out)
    owner_id = created["owner_id"]
    assert isinstance(owner_id, str)
    client_id = str(created["client_id"])
    bad = [
        ((client_id,), "EMAIL or --none"),
        ((client_id, "owner@example.com", "--none"), "EMAIL or --none"),
        ((client_id, "nobody@example.com"), "no user"),
        (("nope", "--none"), "no client"),
    ]
    for args, message in bad:
        code, _, err = bastion(data, "oauth", "client", "set-owner", *args)
        assert code == 2, args
        assert err.count("\n") == 1, err
        assert message in err
    assert last_json(bastion(data, "oauth", "client", "show", client_id)[1])["owner_id"] == owner_id
    code, out, err = bastion(data, "oauth", "client", "set-owner", client_id, "--none")
    assert code == 0, err
    assert "alerts.mail_to" in out
    assert last_json(bastion(data, "oauth", "client", "show", client_id)[1])["owner_id"] is None
    code, _, err = bastion(data, "oauth", "client", "set-owner", client_id, "owner@example.com")
    assert code == 0, err
    assert last_json(bastion(data, "oauth", "client", "show", client_id)[1])["owner_id"] == owner_id
