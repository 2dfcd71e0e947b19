"""sqlmap on every query parameter of the records list and of the OAuth pages that take query
parameters (V1.2.4: queries are parameterised; V1.2.1 and V15.3.x where the value lands in a page).

Each target URL starts from a request that works (a non-empty page of records, a valid
authorization request, a pending sign-in's handle), so that boolean and union tests have
a true page to compare with. Options are narrowed (the DBMS the target runs on, a one-second
time-based delay, four threads), the targets are not: every parameter is named and checked
to have been tested.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from security.attack import REDIRECT_URI, Target, run_tool, tool

pytestmark = pytest.mark.e2e

RECORDS = "/api/v1/collections/notes/records"
# The filters and paging of the notes collection (bastion init's), chosen so that one of
# the notes this test writes matches them all: sqlmap needs a page that changes when its
# condition is false.
FILTERS = {
    "limit": "10", "sort": "priority", "title.eq": "sqlmap 2", "title.ne": "x", "title.in": "sqlmap 2",
    "title.prefix": "sqlmap", "priority.eq": "2", "priority.ne": "5", "priority.lt": "5", "priority.lte": "5",
    "priority.gt": "1", "priority.gte": "1", "priority.in": "2",
}  # fmt: skip
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"  # RFC 7636 appendix B


def _targets(target: Target, token: str) -> list[str]:
    with target.client() as client:
        bearer = {"authorization": f"Bearer {token}"}
        for n in (1, 2, 3):
            made = client.post(RECORDS, json={"title": f"sqlmap {n}", "priority": n}, headers=bearer)
            assert made.status_code == 201, made.text
        page = client.get(RECORDS, params=FILTERS, headers=bearer)
        assert page.status_code == 200, page.text
        assert [item["title"] for item in page.json()["items"]] == ["sqlmap 2"], page.text
        first = client.get(RECORDS, params={"limit": "1", "sort": "priority"}, headers=bearer)
        assert first.status_code == 200, first.text
        assert first.json()["next_cursor"], first.text
        authorize = {
            "response_type": "code", "client_id": target.client_id, "redirect_uri": REDIRECT_URI,
            "scope": "openid profile", "state": "st4te", "nonce": "n0nce", "code_challenge": CHALLENGE,
            "code_challenge_method": "S256", "login_hint": "scanner@example.com", "max_age": "600", "prompt": "login",
        }  # fmt: skip
        started = client.get("/oauth2/authorize", params=authorize)
        assert started.status_code == 302, started.text
        handle = dict(parse_qsl(urlsplit(started.headers["location"]).query))["request"]
    base = target.reach
    return [
        f"{base}{RECORDS}?{urlencode(FILTERS)}",
        f"{base}{RECORDS}?{urlencode({'limit': '1', 'sort': 'priority', 'cursor': first.json()['next_cursor']})}",
        f"{base}/oauth2/authorize?{urlencode(authorize)}",
        f"{base}/oauth2/sign-in?{urlencode({'request': handle, 'next': '/oauth2/device/verify'})}",
        f"{base}/oauth2/consent?{urlencode({'request': handle})}",
        f"{base}/oauth2/logout?{urlencode({'client_id': target.client_id, 'state': 'st4te', 'ui_locales': 'en'})}",
        f"{base}/oauth2/device/verify?{urlencode({'user_code': 'BCDF-GHJK'})}",
    ]


def _sqlmap(target: Target, work: Path, dbms: str) -> tuple[list[str], str]:
    # A session of its own: another tool of the tier may have ended the one prepared.
    token = target.sign_in()
    urls = _targets(target, token)
    (work / "targets.txt").write_text("\n".join(urls) + "\n")
    # Named with -p, since sqlmap would skip "nonce" and "state" as anti-CSRF tokens by their names.
    names = ",".join(sorted({name for url in urls for name, _ in parse_qsl(urlsplit(url).query)}))
    output = run_tool(
        f"sqlmap ({dbms})",
        [
            tool("sqlmap"), "-m", work / "targets.txt", "--batch", "--disable-coloring", "--flush-session",
            "--output-dir", work / "out", "-p", names, "-H", f"Authorization: Bearer {token}", "--dbms", dbms,
            "--level", "1", "--risk", "1", "--time-sec", "1", "--threads", "4", "--base64", "cursor",
            "--base64-safe",
        ],
        seconds=150,
    )  # fmt: skip
    (work / "sqlmap.log").write_text(output)
    return urls, output


def _check(urls: list[str], output: str) -> None:
    tested = set(re.findall(r"testing for SQL injection on GET parameter '([^']+)'", output))
    expected = {name for url in urls for name, _ in parse_qsl(urlsplit(url).query)}
    assert expected <= tested, f"sqlmap did not test {sorted(expected - tested)}:\n{output[-3000:]}"
    # Its verdict, once per target URL, and no injection point anywhere.
    verdicts = output.count("all tested parameters do not appear to be injectable")
    assert verdicts == len(urls), output[-3000:]
    assert "identified the following injection point" not in output, output[-3000:]
    assert not re.search(r"parameter '[^']+' (?:appears to be|is) '[^']+' injectable", output), output[-3000:]


@pytest.mark.parametrize("server", ["target", "modern"])
def test_sqlmap_finds_no_injection_in_records_or_oauth_parameters(
    server: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """V1.2.4: no query parameter of the records list (filters, sort, cursor, limit) or of the
    OAuth pages (authorize, sign-in, consent, logout, device) reaches SQL as text, on SQLite
    (the tier's first server) and on PostgreSQL (the second, when CI provides one)."""
    target: Target = request.getfixturevalue(server)
    if server == "modern" and target.database == "SQLite":
        pytest.skip("BASTION_TEST_DATABASE_URL not set: the PostgreSQL run needs a server (.ci/run sets it)")
    urls, output = _sqlmap(target, tmp_path, target.database)
    _check(urls, output)
