"""Injection and XSS corpora against the records API, from the attacker's side."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from harness import DataHarness

NOTE = {"title": "alice-note", "body": "<p>x</p>", "secret": "s", "priority": 3}

SQL_INJECTION = [
    "' OR '1'='1",
    "' OR 1=1 --",
    '" OR ""="',
    "1; DROP TABLE c_notes; --",
    "1' UNION SELECT id, email, password_hash FROM users --",
    "') OR ('a'='a",
    "%' OR '%'='",
    "%",
    "_",
    "*",
    "\\",
    "NULL",
    "1 OR 1=1",
    "-1e309",
    "99999999999999999999999",
    "-9223372036854775809",
    "0x7fffffffffffffff",
    "' || (SELECT password_hash FROM users LIMIT 1) || '",
    "'; SELECT pg_sleep(5); --",
    "\x00",
    "title",
    "id) OR (1=1",
]

XSS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    '<a href="JaVaScRiPt:alert(1)">x</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>',
    "<svg onload=alert(1)>",
    '<p onclick="alert(1)" style="background:url(javascript:alert(1))">t</p>',
    '<iframe src="https://evil.example"></iframe>',
    '<math><mi xlink:href="javascript:alert(1)">x</mi></math>',
    '"><script>alert(document.cookie)</script>',
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    "<!--<script>alert(1)//--><p>ok</p>",
    '<form action="https://evil.example"><input name=a></form>',
    "<object data=javascript:alert(1)></object>",
]
DANGEROUS = ("<script", "onerror", "onload", "onclick", "javascript:", "<iframe", "<svg", "style=", "data:", "<form",
             "<object", "<math", "<input")  # fmt: skip


@pytest.mark.parametrize("payload", SQL_INJECTION)
async def test_sql_injection_in_filters_sorts_cursors_and_ids(data: DataHarness, payload: str) -> None:
    """V1.2.4: every value is a bound parameter of a typed query; never a 500, never another user's row."""
    alices = await data.create(data.alice, "notes", NOTE)
    await data.create(data.bob, "notes", {**NOTE, "title": "bob-note"})
    url = data.records("notes")
    params: list[dict[str, str]] = [
        {"title.eq": payload},
        {"title.ne": payload},
        {"title.prefix": payload},
        {"title.in": payload},
        {"priority.eq": payload},
        {"priority.gte": payload},
        {"priority.in": payload},
        {"sort": payload},
        {"cursor": payload},
        {"limit": payload},
        {f"title.{payload}": "x"},
        {payload: "x"},
    ]
    for query in params:
        response = await data.client.get(url, params=query, headers=data.bearer(data.bob))
        assert response.status_code in (200, 422), (query, response.text)
        if response.status_code == 200:
            assert alices["id"] not in response.text
            assert all(item["title"] == "bob-note" for item in response.json()["items"])
    for path in (f"{url}/{quote(payload, safe='')}", f"{url}/{alices['id']}{quote(payload, safe='')}"):
        response = await data.client.get(path, headers=data.bearer(data.bob))
        assert response.status_code in (404, 422), (path, response.text)
    # The table survived and nothing leaked into Alice's record.
    mine = await data.client.get(f"{url}/{alices['id']}", headers=data.bearer(data.alice))
    assert mine.json() == alices


@pytest.mark.parametrize("payload", XSS)
async def test_xss_in_richtext_is_sanitized(data: DataHarness, payload: str) -> None:
    """V1.3.1: rich text keeps only allowlisted markup (nh3); nothing executable is stored."""
    created = await data.create(data.alice, "notes", {**NOTE, "body": payload})
    stored = created["body"].lower()
    assert not any(marker in stored for marker in DANGEROUS), stored
    read = await data.client.get(f"{data.records('notes')}/{created['id']}", headers=data.bearer(data.alice))
    assert read.json()["body"] == created["body"]


@pytest.mark.parametrize("payload", XSS)
async def test_xss_in_string_fields_is_inert_json(data: DataHarness, payload: str) -> None:
    """V1.2.1: plain-text fields are data, encoded at the exit as JSON, never served as HTML."""
    created = await data.create(data.alice, "notes", {**NOTE, "title": payload[:200]})
    response = await data.client.get(f"{data.records('notes')}/{created['id']}", headers=data.bearer(data.alice))
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert response.json()["title"] == payload[:200]


async def test_richtext_keeps_safe_markup(data: DataHarness) -> None:
    html = '<h2>Plan</h2><ul><li><strong>bold</strong> and <em>em</em></li></ul><a href="mailto:a@example.com">m</a>'
    created = await data.create(data.alice, "notes", {**NOTE, "body": html})
    assert created["body"] == html.replace(">m<", ' rel="noopener noreferrer nofollow">m<')


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("link", "javascript:alert(1)"),
        ("link", "data:text/html,<script>alert(1)</script>"),
        ("link", "file:///etc/passwd"),
        ("extra", {"a": {"b": {"c": {"d": 1}}}}),  # deeper than max_depth 3
        ("extra", {"a": "x" * 300}),  # larger than max_bytes 200
        ("colour", "blue"),
        ("email", "not-an-email"),
        ("due", "2026-03-01T12:00:00"),  # no time zone
        ("ratio", 1.5),
        ("name", "semi;colon;\x07"),
    ],
)
async def test_typed_fields_refuse_what_they_do_not_declare(data: DataHarness, field: str, value: object) -> None:
    """V2.2.1: url is http(s) only; json has size and depth bounds; enums, emails, datetimes are typed."""
    response = await data.client.post(data.records("things"), json={field: value}, headers=data.bearer(data.alice))
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["pointer"].startswith(f"/{field}")


async def test_head_reads_and_never_changes_a_record(data: DataHarness) -> None:
    """V4.1.4 (HTTP methods): HEAD is answered like GET; it never deletes, updates or creates."""
    note = await data.create(data.alice, "notes", NOTE)
    one = f"{data.records('notes')}/{note['id']}"
    head = await data.client.request("HEAD", one, headers=data.bearer(data.alice))
    assert head.status_code == 200
    listed = await data.client.request(
        "HEAD", data.records("notes"), json={**NOTE, "title": "via-head"}, headers=data.bearer(data.alice)
    )
    assert listed.status_code == 200
    items = (await data.client.get(data.records("notes"), headers=data.bearer(data.alice))).json()["items"]
    assert [item["title"] for item in items] == ["alice-note"]
    assert (await data.client.get(one, headers=data.bearer(data.alice))).json() == note
    put = await data.client.put(one, json=NOTE, headers=data.bearer(data.alice))
    assert put.status_code == 405
    assert set(put.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "PATCH", "DELETE"}
