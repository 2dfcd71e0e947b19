"""DELETE /api/v1/me against a real ``bastion serve``, over HTTP/2 on TLS: the
account, its records and its tokens are gone, and the erasure ledger has its line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from serving import clean_env, serve

PASSWORD = "juniper-lantern-quarry-47"
EMAIL = "leaving@example.com"


def test_v14_2_7_delete_me_over_http2_erases_the_account(tmp_path: Path) -> None:
    """ASVS V14.2.7, V7.4.2: the owner erases their account with the password in the
    request; afterwards their token, their password and their records are gone."""
    with serve(tmp_path / "data") as served:
        created = subprocess.run(
            [sys.executable, "-m", "bastion", "user", "create", "--email", EMAIL, "--password-stdin", "--verified"],
            input=PASSWORD.encode(),
            env=clean_env(BASTION_DATA_DIR=str(served.data)),
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert created.returncode == 0, created.stderr
        with served.client(http2=True) as client:
            login = client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
            assert login.status_code == 200, login.text
            assert login.http_version == "HTTP/2"
            bearer = {"authorization": f"Bearer {login.json()['access_token']}"}
            note = client.post(
                "/api/v1/collections/notes/records", json={"title": "mine", "secret": "s"}, headers=bearer
            )
            assert note.status_code == 201, note.text
            wrong = client.request("DELETE", "/api/v1/me", json={"password": "not it"}, headers=bearer)
            assert wrong.status_code == 401
            erased = client.request("DELETE", "/api/v1/me", json={"password": PASSWORD}, headers=bearer)
            assert erased.status_code == 204, erased.text
            assert client.get("/api/v1/me", headers=bearer).status_code == 401
            again = client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
            assert again.status_code == 401
    ledger = (served.data / "erasure-ledger.jsonl").read_text().splitlines()
    assert len(ledger) == 1
    assert EMAIL not in ledger[0]
