"""A leaked signing key revoked while a real multi-worker server runs: every
worker refuses the tokens it signed within its key check (issue #13 §4)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from serving import Served, clean_env, serve

PASSWORD = "tangerine-orbit-cascade-91"
EMAIL = "leaked@example.com"


def _bastion(served: Served, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "bastion", *args],
        input=stdin,
        env=clean_env(BASTION_DATA_DIR=str(served.data)),
        capture_output=True,
        timeout=120,
        check=False,
    )


def _login(served: Served) -> str:
    with served.client() as client:
        answer = client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])


def _statuses(served: Served, token: str, n: int) -> list[int]:
    # New connections, so the requests spread over the workers.
    statuses = []
    for _ in range(n):
        with served.client() as client:
            statuses.append(client.get("/api/v1/me", headers={"authorization": f"Bearer {token}"}).status_code)
    return statuses


def test_v9_1_1_revoking_a_signing_key_ends_its_tokens_in_every_worker(tmp_path: Path) -> None:
    """ASVS V9.1.1, V13.3.4: `bastion keys revoke signing KID` in another process;
    within the key check (a second) no worker accepts the token any more, though
    each had verified and remembered it, and a new sign-in works at once."""
    # Two workers need shared throttle counters (Redis); without one, one worker.
    redis = os.environ.get("BASTION_TEST_REDIS_URL")
    workers = {"BASTION_SERVER__WORKERS": "2", "BASTION_REDIS_URL": redis} if redis else {}
    with serve(tmp_path / "data", **workers) as served:
        created = _bastion(
            served, "user", "create", "--email", EMAIL, "--password-stdin", "--verified", stdin=PASSWORD.encode()
        )
        assert created.returncode == 0, created.stderr
        token = _login(served)
        kid = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"]
        assert _statuses(served, token, 8) == [200] * 8

        revoked = _bastion(served, "keys", "revoke", "signing", kid)
        assert revoked.returncode == 0, revoked.stderr
        deadline = time.monotonic() + 30
        while _statuses(served, token, 8) != [401] * 8 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _statuses(served, token, 12) == [401] * 12
        fresh = _login(served)
        assert json.loads(base64.urlsafe_b64decode(fresh.split(".")[0] + "=="))["kid"] != kid
        assert _statuses(served, fresh, 4) == [200] * 4
