"""schemathesis hooks (SCHEMATHESIS_HOOKS): every request signed in as the tier's user.

The token comes from signing in (BASTION_TEST_SCAN_* name the server and the account) and
is reused until it is refused. POST /api/v1/auth/logout ends the session it is sent with,
so each logout case gets a session of its own: the one the other operations use lives on.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx
import schemathesis

LOGOUT = "/api/v1/auth/logout"


def sign_in() -> str:
    """A fresh session's access token; the account may be locked for a second (see attack.py)."""
    account = {"email": os.environ["BASTION_TEST_SCAN_EMAIL"], "password": os.environ["BASTION_TEST_SCAN_PASSWORD"]}
    server = {"base_url": os.environ["BASTION_TEST_SCAN_URL"], "verify": os.environ["BASTION_TEST_SCAN_CA"]}
    with httpx.Client(**server) as client:
        for _ in range(5):
            answer = client.post("/api/v1/auth/login", json=account)
            if answer.status_code == 200:
                return str(answer.json()["access_token"])
            time.sleep(1.1)
    raise RuntimeError(f"signing in failed: {answer.status_code} {answer.text[:300]}")


@schemathesis.auth()
class SignedIn:
    def get(self, case: Any, context: Any) -> str:
        return sign_in()

    def set(self, case: Any, data: str, context: Any) -> None:
        token = sign_in() if case.operation.path == LOGOUT else data
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
