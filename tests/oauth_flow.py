"""The user agent's part of an OAuth authorization: a person at the hosted pages, as httpx.

``authorize(client, url, Person(...))`` opens ``/oauth2/authorize?…``,
follows Bastion's own redirects, fills the hosted pages' forms (sign-in with
email and password, then a TOTP code when asked; consent, approved or
denied) exactly as a browser submits them (every hidden field, the CSRF
token among them, goes back as the page rendered it; the button pressed is
sent as a browser sends it) and stops at the first redirect that leaves the
server: the client's ``redirect_uri`` with ``code``, ``state`` and ``iss``,
or with an ``error``. It never follows that redirect (nothing listens
there). A page without a form (the error page) ends the walk too.

It knows no field name of Bastion's beyond what HTML says: the password
input is ``type=password``, the address input ``type=email`` (or named
email/username/login), the code input is the remaining visible text input,
and the consent buttons are told apart by their words.

The e2e tests run it against a real server (httpx over HTTP/1.1 or HTTP/2);
the functional tests against the ASGI app.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser

import httpx

__all__ = ["Flow", "Form", "Person", "authorize", "parse_forms", "query"]

_ALLOW = re.compile(r"\b(allow|approve|accept|authori[sz]e|consent|continue|yes|grant)\b", re.I)
_DENY = re.compile(r"\b(deny|cancel|refuse|reject|decline|no)\b", re.I)
_MAX_STEPS = 12


@dataclass
class Person:
    """Who sits at the browser, and what they answer."""

    email: str
    password: str
    totp: Callable[[], str] | None = None
    consent: bool = True


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)  # hidden and prefilled values, as rendered
    inputs: list[tuple[str, str]] = field(default_factory=list)  # (name, type) the person fills
    buttons: list[tuple[str | None, str | None, str]] = field(default_factory=list)  # (name, value, words)

    @property
    def asks_password(self) -> bool:
        return any(kind == "password" for _, kind in self.inputs)

    @property
    def is_consent(self) -> bool:
        words = " ".join(f"{value or ''} {text}" for _, value, text in self.buttons)
        return bool(_ALLOW.search(words)) and bool(_DENY.search(words)) and not self.inputs


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._button: list[str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get").lower()))
        elif not self.forms:
            return
        elif tag == "input":
            name, kind = a.get("name"), a.get("type", "text").lower()
            if kind == "submit":
                self.forms[-1].buttons.append((name or None, a.get("value"), a.get("value", "")))
            elif not name:
                return
            elif kind == "hidden" or (a.get("value") and kind not in ("password", "checkbox", "radio")):
                self.forms[-1].fields[name] = a.get("value", "")
                if kind != "hidden":
                    self.forms[-1].inputs.append((name, kind))
            elif kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.forms[-1].fields[name] = a.get("value", "on")
            else:
                self.forms[-1].inputs.append((name, kind))
        elif tag == "button" and a.get("type", "submit").lower() == "submit":
            self._button = [a.get("name") or None, a.get("value")]
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._button is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "button" and self._button is not None and self.forms:
            name, value = self._button
            self.forms[-1].buttons.append((name, value, " ".join("".join(self._text).split())))
            self._button = None


def parse_forms(html: str) -> list[Form]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


def query(url: str) -> dict[str, str]:
    """The query parameters of a URL (each once)."""
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True))


@dataclass
class Flow:
    """Where the walk ended, and what the person saw on the way."""

    callback: str | None  # the redirect that left the server, if any
    last: httpx.Response
    seen: list[str] = field(default_factory=list)  # "sign-in", "second-factor", "consent", "form"

    @property
    def params(self) -> dict[str, str]:
        assert self.callback is not None, f"the flow ended on a page ({self.last.status_code}): {self.last.text[:400]}"
        return query(self.callback)

    @property
    def code(self) -> str:
        params = self.params
        assert "code" in params, params
        return params["code"]


def _fill(form: Form, person: Person) -> tuple[dict[str, str], str]:
    data = dict(form.fields)
    kind = "form"
    if form.asks_password:
        kind = "sign-in"
        for name, input_type in form.inputs:
            if input_type == "password":
                data[name] = person.password
            elif input_type == "email" or name.lower() in ("email", "username", "login", "login_hint"):
                data[name] = person.email
    elif form.is_consent:
        kind = "consent"
    elif form.inputs:
        kind = "second-factor"
        assert person.totp is not None, f"the page asks for a code: {form.inputs}"
        # The first field takes the authenticator's code; the others (a recovery code) stay empty.
        for index, (name, _) in enumerate(form.inputs):
            data[name] = person.totp() if index == 0 else ""
    wanted = _ALLOW if (kind != "consent" or person.consent) else _DENY
    buttons = form.buttons
    chosen = next((b for b in buttons if wanted.search(f"{b[1] or ''} {b[2]}")), buttons[0] if buttons else None)
    if kind == "consent" and not person.consent:
        chosen = next(b for b in buttons if _DENY.search(f"{b[1] or ''} {b[2]}"))
    if chosen is not None and chosen[0]:
        data[chosen[0]] = chosen[1] or ""
    return data, kind


def _choose(forms: list[Form]) -> Form | None:
    for test in (lambda f: f.asks_password, lambda f: f.is_consent, lambda f: f.method == "post"):
        for form in forms:
            if test(form):
                return form
    return None


async def authorize(
    client: httpx.AsyncClient, url: str, person: Person | None, *, method: str = "GET", origin: str | None = None
) -> Flow:
    """Open the authorization ``url`` and act as ``person`` until the server redirects away.

    ``person`` None: a user agent that never fills a form (prompt=none checks).
    ``method`` POST sends the request's parameters as a form body (OpenID Core §3.1.2.1).
    """
    server = origin or str(client.base_url).rstrip("/")
    if method == "POST":
        split = urllib.parse.urlsplit(url)
        response = await client.post(
            urllib.parse.urlunsplit((split.scheme, split.netloc, split.path, "", "")),
            data=dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True)),
        )
    else:
        response = await client.get(url)
    seen: list[str] = []
    for _ in range(_MAX_STEPS):
        if response.is_redirect:
            location = urllib.parse.urljoin(str(response.url), response.headers["location"])
            if not location.startswith(server + "/"):
                return Flow(location, response, seen)
            response = await client.get(location)
            continue
        if person is None or "html" not in response.headers.get("content-type", ""):
            return Flow(None, response, seen)
        form = _choose(parse_forms(response.text))
        if form is None:
            return Flow(None, response, seen)
        data, kind = _fill(form, person)
        seen.append(kind)
        action = urllib.parse.urljoin(str(response.url), form.action or str(response.url))
        if form.method == "post":
            response = await client.post(action, data=data, headers={"origin": server, "referer": str(response.url)})
        else:
            response = await client.get(action, params=data)
    raise AssertionError(f"no redirect after {_MAX_STEPS} steps; seen {seen}")
