"""The authorisation scenario table: every route of ``create_app(settings)``
x every kind of caller x the status class its declared requirement implies.

The rows are not written by hand: ``scenarios(app)`` walks the app's routes
(FastAPI routes, included routers, plain Starlette routes and the records
``Mount``) and reads each one's declared requirement, so a route added
tomorrow is in the table by construction. A route whose requirement the
table cannot read fails it, naming the route.

Where the requirement comes from: the guard registry
(``bastion.access.guard.every_route`` and ``requirement_of``), which reads
every route kind (FastAPI routes, included routers, plain Starlette routes,
the records ``Mount``): ``public``, ``authenticated``, ``permission:<p>``,
``mfa:<p>`` (the permission from a session signed in with two factors) or
``by_rule`` (the records routes, by the collection's rules: the ``notes``
example of ``bastion init`` is owner-only). On top of it, the admin plane's
documented policy (``bastion/admin/routes.py``): every ``/admin`` route is
reached on the admin listener over mTLS; on the public listener it does not
exist (404), and the public routes do not exist on the admin listener.

Status classes: 401 for a missing credential, 403 for a caller without the
grant (a record route answers 404 instead, since whether a record exists is
itself data: the probe uses the caller's own record, so an admitted read
can never be a 404), and "admitted" for anything else short of a 5xx. The
probes send empty bodies and unknown ids, so an admitted request ends in a
422 or 404 of its own more often than in a 200; what the table checks is the
guard's verdict, never the handler's work.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from bastion.access import requirement_of
from bastion.access.guard import every_route
from bastion.access.permissions import BUILTIN_ROLES, grants
from bastion.app import create_app
from bastion.identity.models import User
from bastion.network.ipfilter import ADMIN_PATHS
from bastion.settings import Settings
from factories.access import create_api_key
from factories.data import COLLECTIONS, OWNER_ONLY, create_record
from factories.identity import create_admin, create_user, sign_in
from harness import Harness

RECORDS = "/api/v1/collections"
# The caller's own account (docs/extending.md): every signed-in owner may; an
# API key only when a scope names the permission exactly.
OWN_ACCOUNT = frozenset({"me:read", "me:sessions", "me:password", "me:mfa"})
# The collection the table's record probes use, and the rules it documents.
COLLECTION = "notes"
# HEAD is served by GET and must read like it (data/routes.py).
RECORD_OPERATIONS = {
    ("collection", "GET"): "list",
    ("collection", "HEAD"): "list",
    ("collection", "POST"): "create",
    ("record", "GET"): "read",
    ("record", "HEAD"): "read",
    ("record", "PATCH"): "update",
    ("record", "DELETE"): "delete",
}
# Probe order within a route: a record is deleted only after it was read and changed.
METHOD_ORDER = {method: rank for rank, method in enumerate(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"))}
KEY_SCOPES = ("records:notes:read",)


class Verdict(Enum):
    UNAUTHENTICATED = "401"
    FORBIDDEN = "403"
    ADMITTED = "admitted"


@dataclass(frozen=True)
class Scenario:
    """One method of one route, and what it declared."""

    method: str
    path: str  # the template, e.g. /admin/api/v1/users/{user_id}
    requirement: str  # "public", "authenticated", "permission:<p>", "mfa:<p>" or "by_rule"

    @property
    def admin_plane(self) -> bool:
        # /metrics too: served on the admin listener only (bastion.network.ipfilter.ADMIN_PATHS).
        return self.path == "/admin" or self.path.startswith("/admin/") or self.path in ADMIN_PATHS

    @property
    def record_operation(self) -> str | None:
        if not self.path.startswith(f"{RECORDS}/"):
            return None
        shape = "record" if "{record_id}" in self.path else "collection"
        return RECORD_OPERATIONS[(shape, self.method)]

    def __str__(self) -> str:
        return f"{self.method} {self.path} [{self.requirement}]"


@dataclass(frozen=True)
class Caller:
    """A kind of credential, and what its declaration grants it."""

    name: str
    role: str | None = None  # None: anonymous
    key_scopes: tuple[str, ...] | None = None  # an API key of a user with ``role``
    mfa: bool = False

    @property
    def grants(self) -> frozenset[str]:
        if self.role is None:
            return frozenset()
        held = BUILTIN_ROLES[self.role]
        if self.key_scopes is None:
            return held
        return frozenset(scope for scope in self.key_scopes if grants(held, scope))

    def holds(self, permission: str) -> bool:
        if self.key_scopes is not None and permission.startswith("me:"):
            return permission in self.key_scopes  # named, never reached by a wildcard
        return permission in OWN_ACCOUNT or grants(self.grants, permission)

    def expects(self, scenario: Scenario) -> Verdict:
        kind, _, permission = scenario.requirement.partition(":")
        if kind == "public":
            return Verdict.ADMITTED
        if self.role is None:
            return Verdict.UNAUTHENTICATED
        if kind == "authenticated":
            return Verdict.ADMITTED
        if kind in ("permission", "mfa"):
            two_factor = self.mfa or kind != "mfa"
            return Verdict.ADMITTED if self.holds(permission) and two_factor else Verdict.FORBIDDEN
        if kind == "by_rule":
            # Owner-only rules (checked below): any signed-in caller holding
            # records:<collection>:<op> may act on its own records.
            needed = f"records:{COLLECTION}:{scenario.record_operation}"
            return Verdict.ADMITTED if grants(self.grants, needed) else Verdict.FORBIDDEN
        pytest.fail(f"{scenario}: the table knows no requirement {scenario.requirement!r}")


CALLERS = [
    Caller("anonymous"),
    Caller("user", role="user"),
    Caller("user's scoped API key", role="user", key_scopes=KEY_SCOPES),
    Caller("admin without MFA", role="admin"),
    Caller("admin with MFA", role="admin", mfa=True),
]


def scenarios(app: FastAPI) -> list[Scenario]:
    """Every method of every route the app serves, with its declared requirement."""
    found, undeclared = [], []
    for route in every_route(app):
        requirement = requirement_of(route)
        if requirement is None or "*" in route.methods:  # undeclared, or a mounted app the table cannot probe
            undeclared.append(route.line())
            continue
        ordered = sorted(route.methods, key=lambda method: METHOD_ORDER.get(method, len(METHOD_ORDER)))
        found.extend(Scenario(method, route.path, requirement) for method in ordered)
    assert not undeclared, f"routes without a requirement the table can read: {'; '.join(undeclared)}"
    return found


@dataclass
class Probe:
    """A caller's credentials and ids, ready to send every scenario."""

    harness: Harness
    caller: Caller
    user: User | None
    key: str | None
    record_id: str

    @classmethod
    async def of(cls, harness: Harness, caller: Caller) -> Probe:
        app, user, key = harness.app, None, None
        if caller.role == "admin":
            user, _ = await create_admin(app, mfa=caller.mfa)
        elif caller.role is not None:
            user = await create_user(app, "caller@example.com", roles=(caller.role,))
        if caller.key_scopes is not None:
            assert user is not None
            key = await create_api_key(app, user, scopes=caller.key_scopes)
        # The caller's own record: an admitted read of it is never a 404.
        record_id = str(uuid.uuid4())
        if user is not None:
            record_id = (await create_record(app, user, COLLECTION, {"title": "probe"}))["id"]
        return cls(harness, caller, user, key, record_id)

    async def headers(self) -> dict[str, str]:
        """Fresh credentials per request, so a probe of logout cannot spoil the next."""
        if self.key is not None:
            return self.harness.bearer(self.key)
        if self.user is None:
            return {}
        return self.harness.bearer(await sign_in(self.harness.app, self.user, mfa=self.caller.mfa))

    def url(self, scenario: Scenario) -> str:
        values = {
            "name": COLLECTION if scenario.record_operation else "scenario",
            "record_id": self.record_id,
            "user_id": str(uuid.uuid4()),
            "session_id": str(uuid.uuid4()),
            "key_id": "0" * 16,
            "identity_id": str(uuid.uuid4()),
            "block_id": str(uuid.uuid4()),
            "client_id": "c" * 22,
            "alert_id": str(uuid.uuid4()),  # monitor: the alerts API
        }

        def value(match: re.Match[str]) -> str:
            name = match[1]
            assert name in values, f"{scenario}: the table has no value for {{{name}}}"
            return values[name]

        return re.sub(r"\{(\w+)(?::\w+)?\}", value, scenario.path)

    async def send(self, scenario: Scenario) -> tuple[httpx.Response, httpx.Response]:
        """The request on the scenario's listener, and the same on the other one."""
        admin = self.harness.admin_client
        assert admin is not None
        own, other = (admin, self.harness.client) if scenario.admin_plane else (self.harness.client, admin)
        body: dict[str, Any] = {"json": {}} if scenario.method in ("POST", "PUT", "PATCH") else {}
        headers = await self.headers()
        url = self.url(scenario)
        return (
            await own.request(scenario.method, url, headers=headers, **body),
            await other.request(scenario.method, url, headers=headers, **body),
        )


def verdict_of(scenario: Scenario, status: int) -> Verdict:
    if status == 401:
        return Verdict.UNAUTHENTICATED
    if status == 403 or (status == 404 and "{record_id}" in scenario.path):
        return Verdict.FORBIDDEN
    return Verdict.ADMITTED


@pytest.fixture
def harness_settings() -> dict[str, Any]:
    # The collection as `bastion init` writes it (the app's documented example).
    return {"collections": {COLLECTION: COLLECTIONS[COLLECTION]}}


@pytest.mark.parametrize("caller", CALLERS, ids=lambda caller: caller.name)
async def test_authorisation_scenario_table(harness: Harness, caller: Caller) -> None:
    """V8.1.1, V8.2.1, V8.2.2, V8.3.1, V8.4.2, V6.3.3, V13.4.5: every route, for
    this kind of caller, answers with the status class its declared requirement
    implies (401 / 403 / admitted, never a 5xx), on its own listener; and on the
    other listener it does not exist (404)."""
    rules = harness.app.state.data.catalog.collections[COLLECTION].settings.rules
    assert rules == OWNER_ONLY, "the table's record expectations assume the owner-only example"
    probe = await Probe.of(harness, caller)
    table = scenarios(harness.app)
    mismatches = []
    for scenario in table:
        answer, elsewhere = await probe.send(scenario)
        expected, got = caller.expects(scenario), verdict_of(scenario, answer.status_code)
        if got != expected or answer.status_code >= 500:
            mismatches.append(f"{scenario}: expected {expected.value}, got {answer.status_code} {answer.text[:120]}")
        if elsewhere.status_code != 404:
            mismatches.append(f"{scenario}: {elsewhere.status_code} on the other listener, expected 404")
    assert not mismatches, f"{caller.name}:\n" + "\n".join(mismatches)


def test_a_route_the_table_cannot_read_fails_it(settings: Settings) -> None:
    """A new route cannot escape the table: one whose requirement is unknown
    (a plain Starlette route, a mount of routes, a mounted app) fails it by name."""
    app = create_app(settings)

    async def metrics(_: Any) -> None:  # pragma: no cover - never served
        raise NotImplementedError

    app.router.routes.append(Route("/metrics", metrics))
    app.router.routes.append(Mount("/legacy", routes=[Route("/ping", metrics)]))
    app.router.routes.append(Mount("/embedded", app=Starlette()))
    unknown = "GET,HEAD /metrics; GET,HEAD /legacy/ping; * /embedded/"
    with pytest.raises(AssertionError, match=re.escape(unknown)):
        scenarios(app)
