"""The OAuth tests' harness: the data tests' collections (for permission
scopes such as ``records:notes:read``), and helpers to call the token
endpoint as a client does."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from factories.data import COLLECTIONS
from factories.oauth import basic
from harness import Harness

TOKEN = "/oauth2/token"
FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture
def harness_settings() -> dict[str, Any]:
    return {"collections": COLLECTIONS}


async def token_request(
    harness: Harness,
    client_id: str,
    secret: str | None,
    form: dict[str, str],
    *,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST /oauth2/token as the client: ``client_secret_basic``, or ``client_id`` in the form when public."""
    if secret is None:
        form = {"client_id": client_id, **form}
        auth: dict[str, str] = {}
    else:
        auth = basic(client_id, secret)
    return await harness.client.post(TOKEN, data=form, headers={**auth, **(headers or {})})
