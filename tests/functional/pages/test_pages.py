"""The hosted pages as served: the page policy, no inline code, escaped
values, and a policy no handler can loosen. Chromium runs them in
tests/e2e/test_pages_browser.py."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser

import httpx
import pytest
from fastapi import Depends
from fastapi.responses import HTMLResponse

from bastion.access import public
from bastion.app import create_app
from bastion.settings import Settings

PAGES = ["/verify-email", "/reset-password"]


@pytest.fixture
def database_url() -> None:
    return None  # the pages touch no database: SQLite suffices


class Markup(HTMLParser):
    """What a page asks the browser to run or load."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str | None] = []
        self.inline_script = ""
        self.handlers: list[str] = []
        self.styles: list[str] = []
        self.sources: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
        self.styles += [value or "" for name, value in attrs if name == "style"]
        self.sources += [value or "" for name, value in attrs if name in ("src", "href", "action")]
        if tag == "script":
            self.scripts.append(named.get("src"))
            self._in_script = True
        if tag == "style":
            self.styles.append("<style>")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.inline_script += data.strip()


def _directives(policy: str) -> dict[str, str]:
    return dict(part.strip().partition(" ")[::2] for part in policy.split(";"))


@pytest.mark.parametrize("path", PAGES)
async def test_pages_run_only_code_from_this_origin(client: httpx.AsyncClient, path: str) -> None:
    """V3.4.3: a strict CSP (no inline script, no framing, forms to self); V3.4.1-V3.4.6 headers."""
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = _directives(response.headers["content-security-policy"])
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == policy["style-src"] == policy["connect-src"] == "'self'"
    assert policy["form-action"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["base-uri"] == "'none'"
    assert "unsafe" not in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"

    markup = Markup()
    markup.feed(response.text)
    assert markup.scripts == ["/pages/assets/pages.js"]
    assert markup.inline_script == ""
    assert markup.handlers == []
    assert markup.styles == []
    assert all(source.startswith("/") and not source.startswith("//") for source in markup.sources)
    for source in markup.sources:
        if source.startswith("/pages/assets/"):
            assert (await client.get(source)).status_code == 200


async def test_assets_are_only_the_listed_files(client: httpx.AsyncClient) -> None:
    script = await client.get("/pages/assets/pages.js")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "innerHTML" not in script.text  # text goes in through textContent only
    for probe in ("/pages/assets/routes.py", "/pages/assets/..%2froutes.py", "/pages/assets/../routes.py"):
        assert (await client.get(probe)).status_code == 404, probe


async def test_values_in_pages_are_escaped(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(auth={"service_name": "<script>alert(1)</script>"}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver") as client,
    ):
        page = (await client.get("/verify-email")).text
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


async def test_no_handler_can_loosen_the_page_policy(make_settings: Callable[..., Settings]) -> None:
    """An extension's HTML response gets the page policy, whatever it sets itself."""
    app = create_app(make_settings())

    @app.get("/ext/page", dependencies=[Depends(public)])
    async def loose() -> HTMLResponse:
        return HTMLResponse(
            "<script>alert(1)</script>", headers={"Content-Security-Policy": "script-src * 'unsafe-inline'"}
        )

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver") as client,
    ):
        response = await client.get("/ext/page")
    policies = response.headers.get_list("content-security-policy")
    assert len(policies) == 1
    assert "unsafe-inline" not in policies[0]
    assert "script-src 'self'" in policies[0]


async def test_pages_are_not_in_the_api_document(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not [path for path in paths if re.match(r"^/(verify-email|reset-password|pages/)", path)]
