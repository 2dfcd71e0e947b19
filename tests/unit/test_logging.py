"""Structured logging and secret redaction (bastion.logging).

OWASP ASVS 5.0: V16.2.1 (metadata on every entry), V16.2.2 (UTC timestamps),
V16.2.4 (a common, machine-readable format), V16.2.5 (credentials and tokens
are not logged), V16.4.1 (encoding against log injection), V16.5.1 (details
go to the log, not to clients, and the log holds no secrets either).
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
import structlog

from bastion.logging import REDACTED, LogFormat, configure_logging, get_logger, redact, server_log_format
from bastion.settings import load_settings

REQUEST_ID = "4f9c2d7e8a1b4c3d9e0f1a2b3c4d5e6f"  # uuid4 hex, as the middleware makes

# Planted secrets: distinctive, so a hit in the output is never a coincidence.
PASSWORD = "Tr0ub4dor&3-planted"
TOTP_CODE = "918273"
TOTP_CODE_2 = "564738"
JWT = (
    "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0"
    ".eyJzdWIiOiJ1c2VyLTQyIiwic2lkIjoic2Vzcy0xIn0"
    ".c2lnbmF0dXJlLWJ5dGVzLWdvLWhlcmUtcGxhbnRlZA"
)
BEARER = "opaque-bearer-Vq3xK9pL2mN8"
API_KEY = "bsk_k7f3a9_Zq8Xv2Lm9Np4Rt6Yw1Bc5Df7Gh3Jk"
DB_PASSWORD = "pg-Pl4nted-Secret"
DB_URL = f"postgresql+asyncpg://bastion:{DB_PASSWORD}@db.internal:5432/bastion"
COOKIE = "bastion_session=Ck9Dp2Qx7Rv4Sw1Tz8Ua5Vb"
REFRESH_TOKEN = "rT5yH8jK2mN4pQ7sV1wX3zB6cD9fG0hJ2kL4nP6qR8t"

PLANTED = [
    PASSWORD,
    PASSWORD.split("&", 1)[1],  # no tail may survive either
    TOTP_CODE,
    TOTP_CODE_2,
    JWT,
    # The signature segment alone must not survive either.
    JWT.rsplit(".", 1)[1],
    BEARER,
    API_KEY,
    API_KEY.rsplit("_", 1)[1],
    DB_PASSWORD,
    COOKIE,
    COOKIE.split("=", 1)[1],
    REFRESH_TOKEN,
]


@dataclass
class LoginForm:
    email: str
    password: str


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("debug", stream=stream)
    yield stream
    structlog.contextvars.clear_contextvars()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    structlog.reset_defaults()


def _reset_logging() -> None:
    structlog.contextvars.clear_contextvars()
    logging.getLogger().handlers.clear()
    structlog.reset_defaults()


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _emit_planted_secrets() -> None:
    """Log the planted secrets every way a careless caller might."""
    structlog.contextvars.bind_contextvars(request_id=REQUEST_ID)
    log = get_logger("bastion.identity")

    # Structured fields, top level and nested.
    log.info(
        "login_attempt",
        path="/api/v1/auth/login",
        status_code=401,
        password=PASSWORD,
        code=TOTP_CODE,
        totp=TOTP_CODE_2,
        refresh_token=REFRESH_TOKEN,
        database_url=DB_URL,
        headers={"Authorization": f"Bearer {JWT}", "Cookie": COOKIE},
        form=LoginForm(email="alice@example.com", password=PASSWORD),
        attempts=[{"mfa_code": TOTP_CODE}, {"recovery_code": TOTP_CODE_2}],
    )
    # Secrets inside messages.
    log.warning(f"request with Authorization: Bearer {BEARER}")
    log.warning(f"api key {API_KEY} presented for {JWT}")
    log.info(f"refresh reuse detected for {REFRESH_TOKEN}", status_code=401)

    # Third-party code logging through the standard library, with %-args.
    # (SQLAlchemy sets its loggers to WARNING when imported.)
    logging.getLogger("sqlalchemy.engine").warning("connecting to %s", DB_URL)
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/1.1" %d',
        "203.0.113.7",
        "GET",
        f"/oauth2/callback?code={TOTP_CODE}&refresh_token={REFRESH_TOKEN}",
        302,
    )
    logging.getLogger("uvicorn.error").warning("bad header Cookie: %s", COOKIE)
    logging.getLogger("app.debug").debug("params %r", {"password": PASSWORD, "totp": TOTP_CODE})

    # Exceptions: the message lands in the formatted traceback.
    try:
        raise ConnectionError(f"could not connect to {DB_URL} (password={PASSWORD})")
    except ConnectionError:
        log.exception("database_unavailable", path="/readyz")
        logging.getLogger("sqlalchemy.pool").exception("pool failed for %s", DB_URL)
    try:
        raise ValueError(f"token {JWT} rejected; Bearer {BEARER}; secret={PASSWORD!r}")
    except ValueError:
        log.error("token_rejected", exc_info=True)


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_planted_secrets_never_reach_the_log_in_either_format(log_format: LogFormat) -> None:
    """V16.2.5, V16.5.1: no planted credential appears in any rendered line, JSON or console.

    Covers structlog and stdlib loggers, fields, messages and tracebacks.
    """
    stream = io.StringIO()
    try:
        configure_logging("debug", log_format=log_format, stream=stream)
        _emit_planted_secrets()
    finally:
        _reset_logging()
    # Timestamps are dropped: six-digit codes could collide with microseconds.
    text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "", stream.getvalue())
    for secret in PLANTED:
        assert secret not in text, f"planted secret leaked: {secret[:6]}…"
    assert REDACTED in text
    assert "Traceback (most recent call last)" in text


def test_planted_secrets_leave_context_readable(log_stream: io.StringIO) -> None:
    """V16.5.1: redaction hides the secrets and keeps what an operator needs."""
    _emit_planted_secrets()
    lines = _lines(log_stream)
    assert len(lines) == 11

    # Timestamps are dropped before searching: six-digit codes could collide
    # with microseconds by chance.
    text = "\n".join(json.dumps({k: v for k, v in line.items() if k != "timestamp"}) for line in lines)
    for secret in PLANTED:
        assert secret not in text, f"planted secret leaked: {secret[:6]}…"
    assert REDACTED in text

    # Non-secret context survives.
    assert all(line["request_id"] == REQUEST_ID for line in lines)
    login = lines[0]
    assert login["path"] == "/api/v1/auth/login"
    assert login["status_code"] == 401
    assert login["form"] == f"LoginForm(email='alice@example.com', password={REDACTED})"
    assert "postgresql+asyncpg://bastion:[REDACTED]@db.internal:5432/bastion" in text
    assert "203.0.113.7" in text
    exception_lines = [line for line in lines if "exception" in line]
    assert len(exception_lines) == 3
    assert all("Traceback (most recent call last)" in line["exception"] for line in exception_lines)


def test_every_line_is_json_with_metadata(log_stream: io.StringIO) -> None:
    """V16.2.1, V16.2.2, V16.2.4: one JSON object a line, UTC time, level, event, logger."""
    structlog.contextvars.bind_contextvars(request_id=REQUEST_ID)
    get_logger("bastion.audit").info("user_created", user_id="u-1")
    logging.getLogger("asyncio").error("Task exception was never retrieved")

    lines = _lines(log_stream)
    assert [line["logger"] for line in lines] == ["bastion.audit", "asyncio"]
    assert [line["level"] for line in lines] == ["info", "error"]
    assert [line["event"] for line in lines] == [
        "user_created",
        "Task exception was never retrieved",
    ]
    for line in lines:
        assert line["request_id"] == REQUEST_ID
        stamp = datetime.fromisoformat(line["timestamp"])
        assert stamp.utcoffset() == timedelta(0)


def test_newlines_cannot_forge_log_lines(log_stream: io.StringIO) -> None:
    """V16.4.1: attacker text with newlines stays inside one encoded line."""
    forged = 'x\n{"level": "info", "event": "admin_login_ok"}'
    get_logger("bastion.http").warning("bad input", value=forged)
    logging.getLogger("uvicorn.error").warning("bad path %s", forged)

    lines = log_stream.getvalue().splitlines()
    assert len(lines) == 2
    assert all(json.loads(line)["level"] == "warning" for line in lines)


def test_configure_logging_is_idempotent() -> None:
    stream = io.StringIO()
    try:
        configure_logging(stream=io.StringIO())
        configure_logging(stream=stream)
        get_logger("bastion.test").info("once")
        logging.getLogger("sqlalchemy").warning("once")
        assert len(stream.getvalue().splitlines()) == 2
        assert len(logging.getLogger().handlers) == 1
    finally:
        logging.getLogger().handlers.clear()
        structlog.reset_defaults()


def test_stderr_is_the_stream_sys_holds_at_each_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line logs to "stderr": a line written after a test runner (or anything else)
    swapped and closed sys.stderr goes to the new one, not to the closed file."""
    swapped_out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", swapped_out)
    try:
        configure_logging("warning", stream="stderr")
        swapped_out.close()
        current = io.StringIO()
        monkeypatch.setattr(sys, "stderr", current)
        get_logger("bastion.test").warning("after the swap")
        assert [line["event"] for line in _lines(current)] == ["after the swap"]
    finally:
        logging.getLogger().handlers.clear()
        structlog.reset_defaults()


def test_level_filters_structlog_and_stdlib() -> None:
    stream = io.StringIO()
    try:
        configure_logging("warning", stream=stream)
        get_logger("bastion.test").info("hidden")
        logging.getLogger("sqlalchemy").info("hidden")
        get_logger("bastion.test").warning("shown")
        assert [line["event"] for line in _lines(stream)] == ["shown"]
    finally:
        logging.getLogger().handlers.clear()
        structlog.reset_defaults()


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("loud")


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("password", True),
        ("new_password", True),
        ("DB_PASSWD", True),
        ("client_secret", True),
        ("access_token", True),
        ("Authorization", True),
        ("Set-Cookie", True),
        ("x-api-key", True),
        ("apiKey", True),
        ("private_key", True),
        ("master_key", True),
        ("session_id", True),
        ("credentials", True),
        ("signature", True),
        ("code", True),
        ("totp", True),
        ("otp", True),
        ("mfa_code", True),
        ("recoveryCode", True),
        ("recovery_code", True),
        ("api_key", True),
        ("secret", True),
        ("token", True),
        ("totp_code", True),
        ("sessionToken", True),
        ("status_code", False),
        ("statusCode", False),
        ("error_code", False),
        ("exit_code", False),
        ("close_code", False),
        ("code_count", False),
        # Properties of a secret, not the secret.
        ("token_type", False),
        ("password_changed_at", False),
        ("session_count", False),
        ("secret_length", False),
        ("tokenExpires", False),
        ("request_id", False),
        ("path", False),
        ("user_id", False),
        ("footprint", False),
    ],
)
def test_redaction_by_key(key: str, secret: bool) -> None:
    """V16.2.5: the key rule, including which ``*code`` keys stay readable."""
    out = redact(None, "info", {key: "v4lue", "nested": [{key: 123456}]})
    assert (out[key] == REDACTED) is secret
    assert (out["nested"][0][key] == REDACTED) is secret


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Bearer abc.def-ghi", "Bearer [REDACTED]"),
        ("authorization: Basic dXNlcjpwYXNz", "authorization: [REDACTED] [REDACTED]"),
        ("sent Basic dXNlcjpwYXNz", "sent Basic [REDACTED]"),
        ("basic authentication failed", "basic authentication failed"),
        (f"got {JWT} back", "got [REDACTED] back"),
        (f"key={API_KEY}", "key=bsk_[REDACTED]"),
        ("redis://:pw@cache:6379/0", "redis://:[REDACTED]@cache:6379/0"),
        ("GET /cb?state=s1&code=42&x=1", "GET /cb?state=s1&code=[REDACTED]&x=1"),
        ("/reset?token=abc", "/reset?token=[REDACTED]"),
        ("/x?key=abc&page=2", "/x?key=[REDACTED]&page=2"),
        ("a=1&csrftoken=abc&b=2", "a=1&csrftoken=[REDACTED]"),
        ("privateKey: k1 x-api-key: k2", "privateKey: [REDACTED] x-api-key: [REDACTED]"),
        ("(password=pa&ss)", "(password=[REDACTED]"),
        (r"password='it\'s' next", "password=[REDACTED] next"),
        ('{"password": "pw", "path": "/p"}', '{"password": [REDACTED], "path": "/p"}'),
        ("mfa_code: 123456, status_code: 200", "mfa_code: [REDACTED] status_code: 200"),
        (f"opaque {REFRESH_TOKEN}", "opaque [REDACTED]"),
        # Request ids, hashes and ordinary text stay readable.
        (f"request {REQUEST_ID}", f"request {REQUEST_ID}"),
        ("id 4f9c2d7e-8a1b-4c3d-9e0f-1a2b3c4d5e6f", "id 4f9c2d7e-8a1b-4c3d-9e0f-1a2b3c4d5e6f"),
        ("sha256 " + "ab" * 32, "sha256 " + "ab" * 32),
        ("GET /api/v1/me?page=2 200", "GET /api/v1/me?page=2 200"),
    ],
)
def test_redaction_by_shape(text: str, expected: str) -> None:
    """V16.2.5: secret-shaped substrings inside any string value are hidden."""
    assert redact(None, "info", {"event": text})["event"] == expected


def test_request_id_is_never_mangled() -> None:
    """A client-chosen request id that looks random stays readable (correlation)."""
    offered = "Req7Xk2Pq9Lm4Nz8Wv3Bc6Df1Gh5Jk0Tt"
    assert redact(None, "info", {"request_id": offered})["request_id"] == offered


def test_redaction_survives_cycles() -> None:
    cyclic: dict[str, Any] = {"password": PASSWORD}
    cyclic["self"] = cyclic
    out = redact(None, "info", {"data": cyclic})
    assert PASSWORD not in json.dumps(out)


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        (0, True),
        (1, True),
        (-15, True),  # killed by SIGTERM
        (404, True),
        (918273, False),  # an integer TOTP code
        (12345678, False),
        (TOTP_CODE, False),
        ("012345", False),  # the leading zero is why codes travel as strings
        ("ABCD-EFGH-2345", False),  # a recovery code
        ("SplxlOBeZQQYbYS6WxSbIA", False),  # an OAuth authorization code
        ("1", True),
    ],
)
def test_a_bare_code_is_hidden_unless_it_is_an_exit_or_status_code(value: object, kept: bool) -> None:
    """V16.2.5: ``code`` is an exit status from a supervisor and a TOTP code in an MFA body.

    The listener's exit code stays readable; the second factor does not.
    """
    out = redact(None, "error", {"event": "listener exited", "listener": "public", "code": value})
    assert (out["code"] == value) is kept
    assert (out["code"] == REDACTED) is not kept
    body = redact(None, "info", {"body": {"mfa_token": "t" * 32, "code": value}})["body"]
    assert body["mfa_token"] == REDACTED
    assert (body["code"] == value) is kept


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("listener exited code=1", "listener exited code=1"),
        ("worker died code: -9", "worker died code: -9"),
        (f"mfa code={TOTP_CODE}", "mfa code=[REDACTED]"),
        (f'{{"mfa_token": "abc", "code": "{TOTP_CODE}"}}', '{"mfa_token": [REDACTED], "code": [REDACTED]}'),
        ('{"code": "012"}', '{"code": [REDACTED]}'),
    ],
)
def test_a_bare_code_in_text(text: str, expected: str) -> None:
    """V16.2.5: the same rule inside messages: short numbers are codes of exit, long ones are secrets."""
    assert redact(None, "info", {"event": text})["event"] == expected


def test_console_lines_cannot_be_forged_or_drive_the_terminal() -> None:
    """V16.4.1: in the console format, newlines and escape sequences in client text are escaped."""
    stream = io.StringIO()
    try:
        configure_logging("info", log_format="console", stream=stream)
        get_logger("bastion.http").warning("bad path \x1b[2J", value="x\n2026-01-01 [info] admin_login_ok")
        try:
            raise ValueError("boom\x1b]0;owned\x07")
        except ValueError:
            get_logger("bastion.http").exception("failed")
    finally:
        _reset_logging()
    text = stream.getvalue()
    assert "\x1b" not in text
    assert "\x07" not in text
    assert "\\x1b[2J" in text
    lines = text.splitlines()
    assert "admin_login_ok" in lines[0]
    assert lines[1].endswith("[error    ] failed                         [bastion.http]")
    assert "Traceback (most recent call last):" in lines[2]


@pytest.mark.parametrize(
    "case",
    [
        ("dev", None, True, "console"),
        ("dev", None, False, "json"),
        ("prod", None, True, "json"),
        ("dev", "json", True, "json"),
        ("prod", "console", False, "console"),
    ],
)
def test_log_format_default(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, case: tuple[str, str | None, bool, str]
) -> None:
    """Console (coloured) for a developer at a terminal; JSON for everything else, unless log.format says."""
    mode, configured, terminal, expected = case
    monkeypatch.setattr(sys.stdout, "isatty", lambda: terminal, raising=False)
    log = {"level": "info"} if configured is None else {"level": "info", "format": configured}
    assert server_log_format(load_settings(tmp_path, mode=mode, log=log)) == expected


def test_alembic_says_one_line_when_it_migrates_and_none_otherwise(tmp_path: Any) -> None:
    """Start-up is quiet: no plugin or dialect chatter, one line naming the revisions that ran."""
    from bastion.migrations import upgrade

    stream = io.StringIO()
    url = f"sqlite+aiosqlite:///{tmp_path / 'bastion.db'}"
    try:
        configure_logging("info", stream=stream)
        upgrade(url)
        first = _lines(stream)
        upgrade(url)
    finally:
        _reset_logging()
    assert [(line["logger"], line["event"]) for line in first] == [("bastion.migrations", "schema migrated")]
    assert first[0]["revisions"][0] == "0001"
    assert _lines(stream) == first
