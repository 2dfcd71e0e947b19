"""The pages mail links open, in a real Chromium against a real `bastion serve`.

A newcomer registers, reads the mail with `bastion mail show`, opens its
link in the browser and is verified; forgets the password, asks for a link
on the reset page, opens it and chooses a new one. Chromium enforces the
page policy, so a page that needed inline code or a foreign source would
fail here (its console reports the violation). The links' tokens stay in
the fragment: the server's output never contains them.

ASVS 5.0: V3.4.3 (a strict CSP: no inline script, object-src/base-uri
restricted, frame-ancestors 'none'), V3.4.1-V3.4.2 (security headers on the
HTML pages), V14.2.1 (tokens kept out of URLs sent to the server and out of
logs), V6.4.2 (the reset link sets a new password once, and the old one stops
working).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from e2e.serving import missing_peer

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "tangerine-orbit-cascade-91"
NEW_PASSWORD = "velvet-quarry-lantern-47"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    data: Path
    env: dict[str, str]
    output: Path
    tokens: list[str] = field(default_factory=list)

    def api(self) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.data / "tls" / "ca.pem"))
        return httpx.Client(base_url=self.url, verify=context, timeout=20)

    def link_in_latest_mail(self, to: str, page: str) -> str:
        """The link `bastion mail show` prints, decoded (the .eml is quoted-printable)."""
        deadline = time.monotonic() + 15
        while True:  # the server hands mail off the response path
            shown = subprocess.run(
                [sys.executable, "-m", "bastion", "mail", "show", "--to", to, "--data-dir", str(self.data)],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            links = re.findall(rf"^  (https://\S+/{page}#token=[A-Za-z0-9_-]+)$", shown.stdout, re.M)
            if links or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert links, shown.stdout + shown.stderr
        self.tokens.append(links[-1].rpartition("#token=")[2])
        return str(links[-1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("pages") / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env |= {
        "BASTION_AUTH__PUBLIC_URL": f"https://localhost:{port}",
        # Cheap hashing: the browser, not Argon2id, is under test.
        "BASTION_PASSWORDS__MEMORY_COST_KIB": "7168",
        "BASTION_PASSWORDS__TIME_COST": "1",
        "BASTION_ADMIN__ENABLED": "false",  # the pages are on the public listener
    }
    subprocess.run([sys.executable, "-m", "bastion", "init", "--data-dir", str(data)], env=env, check=True)
    output = data.parent / "server.log"
    serve = ["serve", "--data-dir", str(data), "--port", str(port)]
    with output.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bastion", *serve],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert process.poll() is None, output.read_text()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        yield Server(f"https://localhost:{port}", data, env, output)
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        missing_peer("Chromium is not installed (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: object) -> Iterator[tuple[object, list[str]]]:
    """A fresh page and the console errors it reports (CSP violations among them)."""
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    # The dev CA is not in Chromium's trust store; the TLS tests cover TLS.
    context = browser.new_context(ignore_https_errors=True)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened, errors
    context.close()


def _login(server: Server, address: str, password: str) -> int:
    with server.api() as api:
        return api.post("/api/v1/auth/login", json={"email": address, "password": password}).status_code


def test_the_verification_link_verifies_the_account(server: Server, page: tuple[object, list[str]]) -> None:
    from playwright.sync_api import Page, expect

    browser_page, errors = page
    assert isinstance(browser_page, Page)
    address = f"new-{uuid.uuid4().hex[:8]}@example.com"
    with server.api() as api:
        registered = api.post("/api/v1/auth/register", json={"email": address, "password": PASSWORD})
    assert registered.status_code == 202
    assert _login(server, address, PASSWORD) == 403  # not verified yet

    link = server.link_in_latest_mail(address, "verify-email")
    browser_page.goto(link)
    expect(browser_page.locator('[data-state="done"]')).to_be_visible()
    # Out of the address bar and the history as soon as the page has it.
    assert "token" not in browser_page.url

    assert _login(server, address, PASSWORD) == 200
    assert errors == []
    # A used link, opened again, says so.
    browser_page.goto(link)
    expect(browser_page.locator('[data-state="failed"]')).to_be_visible()


def test_the_reset_page_requests_a_link_and_sets_the_new_password(
    server: Server, page: tuple[object, list[str]]
) -> None:
    from playwright.sync_api import Page, expect

    browser_page, errors = page
    assert isinstance(browser_page, Page)
    address = f"forgetful-{uuid.uuid4().hex[:8]}@example.com"
    with server.api() as api:
        assert api.post("/api/v1/auth/register", json={"email": address, "password": PASSWORD}).status_code == 202

    # Without a token the page asks for a link.
    browser_page.goto(f"{server.url}/reset-password")
    browser_page.fill("#email", address)
    browser_page.click("#request button")
    expect(browser_page.locator('[data-state="sent"]')).to_be_visible()

    link = server.link_in_latest_mail(address, "reset-password")
    browser_page.goto(link)  # in the same tab: only the fragment changes, and the page starts over
    expect(browser_page.locator("#choose")).to_be_visible()
    assert "token" not in browser_page.url
    # A password the policy refuses is explained, and the link still works.
    browser_page.fill("#new-password", "password")
    browser_page.fill("#repeat-password", "password")
    browser_page.click("#choose button")
    expect(browser_page.locator("#problems li").first).to_be_visible()
    browser_page.fill("#new-password", NEW_PASSWORD)
    browser_page.fill("#repeat-password", NEW_PASSWORD)
    browser_page.click("#choose button")
    expect(browser_page.locator('[data-state="done"]')).to_be_visible()

    assert _login(server, address, NEW_PASSWORD) == 200
    assert _login(server, address, PASSWORD) == 401
    # The refused weak password is a 422 in the console; nothing else went wrong.
    assert [e for e in errors if "422" not in e] == []


def test_no_token_reaches_the_server_output(server: Server) -> None:
    """Runs after the flows above (module order): their tokens were posted, never logged."""
    assert server.tokens, "the browser tests did not run first"
    output = server.output.read_text()
    for token in server.tokens:
        assert token not in output
