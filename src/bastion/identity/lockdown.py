"""Who may take the password step during an incident lockdown (``bastion.incident.guard``).

Only an administrator with TOTP on can finish a sign-in during lockdown
(``Lockdown.admit_sign_in``). If everyone else's correct password were
checked and then refused, the refusal (503) would tell an attacker which
guesses were right while a wrong one answers 401: lockdown would still
verify stuffed credentials for later. So the guard asks this first, from the
body's address alone, before any password is hashed: anyone else gets the
lockdown problem whatever the password, and the admin's wrong passwords are
answered with that same problem too.

Equal time as well as equal answers: an admin's attempt goes on to Argon2id,
so a refusal that skipped it would answer measurably sooner and tell an
attacker which addresses are admins with TOTP. Every refused attempt runs the
hasher's dummy verify first, as ``IdentityService.authenticate`` does for an
unknown account (STYLE: "opaque failures, equal time").
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from bastion.identity.throttle import sign_in_address
from bastion.incident.state import is_admin


async def may_take_password_step(state: Any, body: bytes) -> bool:
    """Whether the sign-in body (the API's JSON or the hosted page's form) names an admin account
    with TOTP on (one lookup). For anything else, False once the dummy password verify has run:
    the refusal costs what the admin's password check costs."""
    fields = _fields_in(body)
    if await _names_an_admin_with_totp(state, fields.get("email")):
        return True
    password = fields.get("password")
    await state.identity.hasher.dummy_verify(password if isinstance(password, str) else "")
    return False


async def _names_an_admin_with_totp(state: Any, email: Any) -> bool:
    if not isinstance(email, str) or not 0 < len(email) <= 254:
        return False
    address = sign_in_address(email)
    if address is None:
        return False
    user = await state.identity.by_email(state.db, address)
    return bool(user is not None and user.totp_enabled and not user.disabled and await is_admin(state.db, user.id))


def _fields_in(body: bytes) -> dict[str, Any]:
    """``email`` and ``password`` of a JSON object or a form (a field given twice is no field)."""
    try:
        value: Any = json.loads(body) if body else None
    except ValueError:
        value = None
    if isinstance(value, dict):
        return {name: value.get(name) for name in ("email", "password")}
    try:
        form = parse_qs(body.decode("ascii"), max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {name: found[0] for name in ("email", "password") if len(found := form.get(name, [])) == 1}
