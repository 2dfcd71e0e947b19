"""The token side of OAuth on a real ``bastion serve`` (granian, TLS, several
workers when Redis is there): a client made with ``bastion oauth client create`` gets a
client-credentials token, calls the API with it, introspects and revokes it,
and every worker refuses it at once (issue #13 §3, §5; RFC 6749 §4.4, RFC 7009, RFC 7662)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from serving import Served, clean_env, serve

pytestmark = pytest.mark.e2e


def _create_client(served: Served) -> tuple[str, str]:
    made = subprocess.run(
        [sys.executable, "-m", "bastion", "oauth", "client", "create", "--name", "Reporter",
         "--grant", "client_credentials", "--scope", "records:notes:list", "--access-token-alg", "EdDSA"],
        env=clean_env(BASTION_DATA_DIR=str(served.data)),
        capture_output=True,
        timeout=120,
        check=True,
    )  # fmt: skip
    created = json.loads(made.stdout.decode().strip().splitlines()[-1])
    return created["client_id"], created["client_secret"]


def test_client_credentials_introspect_and_revoke_on_a_real_server(tmp_path: Path) -> None:
    # Several workers share their rate counters through Redis; without it, one worker.
    redis = os.environ.get("BASTION_TEST_REDIS_URL")
    workers = {"BASTION_SERVER__WORKERS": "2", "BASTION_REDIS_URL": redis} if redis else {}
    with serve(tmp_path / "data", **workers) as served:
        client_id, secret = _create_client(served)
        with served.client() as http:
            granted = http.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))
            assert granted.status_code == 200, granted.text
            assert granted.headers["cache-control"] == "no-store"
            token = granted.json()["access_token"]
            assert granted.json()["scope"] == "records:notes:list"
            bearer = {"authorization": f"Bearer {token}"}
            assert http.get("/api/v1/collections/notes/records", headers=bearer).status_code == 200

            described = http.post("/oauth2/introspect", data={"token": token}, auth=(client_id, secret)).json()
            assert described["active"] is True
            assert described["client_id"] == client_id
            assert http.post("/oauth2/revoke", data={"token": token}, auth=(client_id, secret)).status_code == 200
            assert http.post("/oauth2/introspect", data={"token": token}, auth=(client_id, secret)).json() == {
                "active": False
            }
        # New connections, so the requests spread over the workers: none accepts it any more.
        for _ in range(6):
            with served.client() as fresh:
                assert fresh.get("/api/v1/collections/notes/records", headers=bearer).status_code == 401
