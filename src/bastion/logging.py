"""Structured logs, with secrets redacted before anything is written.

Every event carries an ISO-8601 UTC ``timestamp``, ``level``, ``logger``,
``event`` and the context bound with ``structlog.contextvars.bind_contextvars``
(the request id, for example). It is written as one JSON object a line
(``log.format = "json"``, for collectors) or as one readable line
(``"console"``, coloured on a terminal; the default in dev on a terminal).
Both renderers get the same event after the same redaction. The standard
library's ``logging`` (uvicorn, granian, SQLAlchemy, asyncio) goes through the
same processors, so third-party lines are redacted and formatted alike.

Redaction (``redact``) is the last step before rendering, after tracebacks have
been formatted, so it sees exactly the text that would be written. It works two
ways:

* by key, at any depth: the value of a key naming a secret becomes
  ``[REDACTED]`` whatever its type (booleans and ``None`` are kept, as they
  cannot carry a secret). A key names a secret when, lower-cased with ``-``,
  ``.`` and camelCase turned into ``_``, it contains ``password``, ``passwd``,
  ``passphrase``, ``secret``, ``token``, ``authorization``, ``cookie``,
  ``api_key``/``apikey``, ``private_key``, ``master_key``, ``session``,
  ``credential`` or ``signature``; or has a word ``otp``, ``totp`` or
  ``hotp``; or its last word is ``code`` (``code``, ``mfa_code``,
  ``recovery_code``). Kept, because they describe a secret without holding
  one: a key whose last word is a property (``token_type``,
  ``password_changed_at``, ``session_count``, see ``_PROPERTY_WORDS``);
  well-known non-secret codes (``status_code``, ``exit_code`` and a few more,
  see ``_PUBLIC_CODES``; ``code_count`` too, as only a trailing ``code`` is a
  code); and a bare ``code`` holding a small integer (``abs(code) < 1000``,
  or up to three digits in text), which is an exit, signal, errno or HTTP
  status. Any other bare ``code`` stays hidden: in the bodies Bastion reads it
  is a TOTP, recovery, OAuth or verification code, six characters or more,
  and a string (their leading zeros count).
* by shape, inside every string (messages, tracebacks, values): bearer and
  basic credentials, JWTs, ``bsk_`` API keys, URL passwords, secret query
  parameters, cookie headers, ``name=value`` / ``"name": "value"`` pairs whose
  name is a secret key, and long random-looking tokens (32+ characters mixing
  upper case, lower case and digits). Hex strings are never treated as random
  tokens, so request ids (uuid4 hex), hashes and key ids stay readable.

Redaction errs towards hiding: a false positive costs a little readability, a
false negative leaks a credential into a log that many people and systems read.
It is a safety net, not a licence: code should not log secrets in the first
place (OWASP ASVS 5.0 V16.2.5, V16.5.1).
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Literal

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

if TYPE_CHECKING:
    from bastion.settings import Settings

__all__ = ["REDACTED", "LogFormat", "configure_logging", "configure_server_logging", "get_logger", "redact"]

LogFormat = Literal["json", "console"]

REDACTED = "[REDACTED]"

_HANDLER_NAME = "bastion"

# Servers and libraries that install their own handlers; they must propagate to
# the root handler, or their lines would skip redaction. (Uvicorn must also be
# started with ``log_config=None`` so it does not reinstall them.)
_ROUTED_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "granian",
    "granian.access",
    "_granian",
    "sqlalchemy",
    "asyncio",
)

# Libraries whose INFO lines are noise at every start: Alembic announces its
# plugins and its dialect in each process. A migration that runs is logged
# once, by bastion.migrations.upgrade.
# httpx logs every request's full URL at INFO, and webhook receivers often
# carry their credential in the path (bastion.monitor.delivery logs the origin only).
# httpcore traces every header at DEBUG, a provider's redirect (code, state) included.
_QUIET_LOGGERS = {"alembic": logging.WARNING, "httpx": logging.WARNING, "httpcore": logging.INFO}

# --- redaction by key ------------------------------------------------------

_SECRET_KEY_PARTS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "authorization",
    "cookie",
    "api_key",
    "apikey",
    "private_key",
    "master_key",
    "session",
    "credential",
    "signature",
)
_SECRET_KEY_WORDS = frozenset({"otp", "totp", "hotp"})
_PUBLIC_CODES = frozenset(
    {
        "status_code",
        "error_code",
        "exit_code",
        "close_code",
        "http_code",
        "response_code",
        "return_code",
        "reason_code",
        "country_code",
        "language_code",
        "currency_code",
    }
)
# A last word that makes the key name a property of a secret, not the secret.
_PROPERTY_WORDS = frozenset(
    {"at", "age", "count", "expires", "expiry", "kind", "length", "purpose", "reason", "status", "ttl", "type"}
)
# A bare ``code`` below this is an exit status, signal, errno or HTTP status.
_PUBLIC_CODE_BOUND = 1000
_SHORT_INTEGER = re.compile(r"[+-]?[0-9]{1,3}")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_KEY_SEPARATORS = re.compile(r"[^a-z0-9]+")


@functools.lru_cache(maxsize=2048)
def _is_secret_key(key: str) -> bool:
    """Whether a field named ``key`` holds a secret (see the module docstring)."""
    name = _KEY_SEPARATORS.sub("_", _CAMEL.sub("_", key).lower()).strip("_")
    words = name.split("_")
    if len(words) > 1 and words[-1] in _PROPERTY_WORDS:
        return False
    if any(part in name for part in _SECRET_KEY_PARTS):
        return True
    if _SECRET_KEY_WORDS.intersection(words):
        return True
    return words[-1] == "code" and "_".join(words[-2:]) not in _PUBLIC_CODES


def _is_public_code(key: str, value: object) -> bool:
    """A bare ``code`` that is a small integer, or its text: an exit or status code (see the module docstring)."""
    if key.lower() != "code" or isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) < _PUBLIC_CODE_BOUND
    # In text only the shape is left: "code=1" is an exit code, "code=918273" is not.
    return isinstance(value, str) and _SHORT_INTEGER.fullmatch(value) is not None


# --- redaction by shape ----------------------------------------------------

# Passwords in URLs (postgresql://user:pass@host). The password may itself hold
# an unencoded "@", so it runs to the last "@" before the path.
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@?#]*):[^\s/?#]+@")
_SECRET_QUERY = re.compile(
    r"(?i)([?&;](?:access_token|refresh_token|id_token|client_secret|api_key|apikey"
    r"|token|code|password|passwd|secret|key|signature|sig)=)[^&#\s\"']*"
)
_BEARER = re.compile(r"(?i)\b(bearer)\s+[^\s\"',;]+")
_BASIC = re.compile(r"(?i)\b(basic)\s+([A-Za-z0-9+/]{6,}={0,2})(?![A-Za-z0-9+/=])")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_API_KEY = re.compile(r"(?<![A-Za-z0-9])bsk_[A-Za-z0-9_-]+")
# A Cookie header holds many name=value pairs; hide all of them, to end of line.
_COOKIE_HEADER = re.compile(r"(?i)\b((?:set-)?cookie[\"']?\s*[:=]\s*)(?:\"[^\"]*\"|'[^']*'|[^\r\n\"']*)")
# An unquoted value runs to the next whitespace: a password may contain any
# punctuation, so stopping at "&" or ")" would leak its tail.
_KEY_VALUE = re.compile(
    r"([A-Za-z_][A-Za-z0-9_.\-]*)([\"']?\s*[:=]\s*)"
    r"(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|\S+)"
)
_TOKEN_LIKE = re.compile(r"(?<![A-Za-z0-9+_\-])[A-Za-z0-9+_\-]{32,}={0,2}")
_UPPER = re.compile(r"[A-Z]")
_LOWER = re.compile(r"[a-z]")
_DIGIT = re.compile(r"[0-9]")


def _basic(match: re.Match[str]) -> str:
    # "basic authentication" is prose, not a base64 credential.
    if match[2].isalpha() and match[2].islower():
        return match[0]
    return f"{match[1]} {REDACTED}"


def _redact_pairs(text: str) -> str:
    """Hide the value of every ``name=value`` / ``name: value`` with a secret name."""
    parts: list[str] = []
    pos = 0
    while (match := _KEY_VALUE.search(text, pos)) is not None:
        value = match[3]
        if (
            _is_secret_key(match[1])
            and not _is_public_code(match[1], value)
            and not value.lstrip("'\"").startswith(REDACTED)
        ):
            parts.append(text[pos : match.start(3)] + REDACTED)
            pos = match.end(3)
        else:
            # Resume right after the separator: the value (say "1&password=x")
            # may itself hold a pair.
            parts.append(text[pos : match.end(2)])
            pos = match.end(2)
    parts.append(text[pos:])
    return "".join(parts)


def _token_like(match: re.Match[str]) -> str:
    # Only strings mixing cases and digits look random enough; this spares
    # hex (request ids, hashes) and ordinary identifiers.
    text = match[0]
    if _UPPER.search(text) and _LOWER.search(text) and _DIGIT.search(text):
        return REDACTED
    return text


# Cheap pre-checks, because redaction runs on every string of every line and
# most strings (paths, event names) hold nothing secret-shaped.
_SUSPECT = re.compile(r"[:=@]|bsk_|eyJ|(?i:bearer|basic)")
# Loose on purpose ("key" for "privateKey", "x-api-key"): _is_secret_key decides.
_PAIR_MARKERS = (
    "pass",
    "secret",
    "token",
    "authorization",
    "cookie",
    "key",
    "session",
    "credential",
    "signature",
    "otp",
    "code",
)


def _scrub_text(text: str, *, heuristic: bool = True) -> str:
    """Hide secret-shaped substrings; the specific shapes go before the generic."""
    if _SUSPECT.search(text):
        lowered = text.lower()
        if "@" in text:
            text = _URL_PASSWORD.sub(rf"\1:{REDACTED}@", text)
        if "=" in text:
            text = _SECRET_QUERY.sub(rf"\1{REDACTED}", text)
        if "bearer" in lowered:
            text = _BEARER.sub(rf"\1 {REDACTED}", text)
        if "basic" in lowered:
            text = _BASIC.sub(_basic, text)
        if "eyJ" in text:
            text = _JWT.sub(REDACTED, text)
        if "bsk_" in text:
            text = _API_KEY.sub(f"bsk_{REDACTED}", text)
        if "cookie" in lowered:
            text = _COOKIE_HEADER.sub(rf"\1{REDACTED}", text)
        if any(marker in lowered for marker in _PAIR_MARKERS):
            text = _redact_pairs(text)
    if heuristic and len(text) >= 32:
        text = _TOKEN_LIKE.sub(_token_like, text)
    return text


# Beyond this depth a value is logged as its (scrubbed) repr, so a cyclic or
# absurdly deep structure cannot make logging raise.
_MAX_DEPTH = 8


def _scrub(value: object, depth: int = 0) -> object:
    if isinstance(value, str):
        return _scrub_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth < _MAX_DEPTH:
        if isinstance(value, Mapping):
            return {str(k): _redact_item(str(k), v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [_scrub(item, depth + 1) for item in value]
    # Objects would be rendered by repr() anyway (a model's repr shows its
    # password field), so scrub that text now.
    return _scrub_text(repr(value))


# Set at the top level by our own processors, never from input.
_TRUSTED_KEYS = frozenset({"timestamp", "level", "logger"})


def _redact_item(key: str, value: object, depth: int) -> object:
    if value is None or isinstance(value, bool) or (depth == 0 and key in _TRUSTED_KEYS):
        return value
    if _is_secret_key(key) and not _is_public_code(key, value):
        return REDACTED
    if key == "request_id" and isinstance(value, str):
        # Request ids correlate lines; a client-chosen id may look random.
        return _scrub_text(value, heuristic=False)
    return _scrub(value, depth)


def redact(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Processor: replace secrets by ``[REDACTED]`` (rules in the module docstring)."""
    return {key: _redact_item(key, value, 0) for key, value in event_dict.items()}


# --- configuration ---------------------------------------------------------


def _shared_processors() -> list[Processor]:
    """Processors for both structlog and stdlib records, before rendering."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


def configure_logging(
    level: str = "info",
    *,
    log_format: LogFormat = "json",
    stream: IO[str] | Literal["stdout", "stderr"] = "stdout",
) -> None:
    """Send every log line, structlog's and the stdlib's, through redaction.

    Replaces the root logger's handlers (any other handler would write
    unredacted lines), so calling it again reconfigures rather than adds.
    ``log_format="console"`` renders one readable line per event (coloured when
    ``stream`` is a terminal) from the same, redacted, event. ``"stdout"`` and
    ``"stderr"`` mean whichever stream ``sys`` holds at each line, not the one
    it held at this call (a test runner swaps them and closes its own).
    """
    numeric_level = logging.getLevelNamesMapping().get(level.upper())
    if numeric_level is None:
        raise ValueError(f"unknown log level: {level!r}")
    target = _CurrentStream(stream) if isinstance(stream, str) else stream

    shared = _shared_processors()
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )

    rendering: list[Processor] = [structlog.processors.JSONRenderer()]
    if log_format == "console":
        # plain_traceback: the exception is already text (format_exc_info, then
        # redact); a rich traceback would render frame locals, unredacted.
        console = structlog.dev.ConsoleRenderer(
            colors=_is_terminal(target), exception_formatter=structlog.dev.plain_traceback
        )
        rendering = [_escape_controls, console]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Plain-text tracebacks: structured ones (dict_tracebacks, rich)
            # can include frame locals, which is where passwords live.
            structlog.processors.format_exc_info,
            redact,  # last before rendering, so it sees messages and tracebacks
            *rendering,
        ],
    )
    handler = logging.StreamHandler(target)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if old.get_name() == _HANDLER_NAME:
            old.close()
    root.addHandler(handler)
    root.setLevel(numeric_level)

    for name in _ROUTED_LOGGERS:
        routed = logging.getLogger(name)
        routed.handlers.clear()
        routed.propagate = True
    for name, floor in _QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(floor, numeric_level))


def configure_server_logging(settings: Settings) -> None:
    """The server's logging: ``[log]`` level and format, to stdout."""
    configure_logging(settings.log.level, log_format=server_log_format(settings))


def server_log_format(settings: Settings) -> LogFormat:
    """``log.format``, or when unset: console on a terminal in dev, JSON otherwise
    (a log collector reads JSON; a developer reads lines)."""
    if settings.log.format is not None:
        return settings.log.format
    return "console" if settings.mode == "dev" and _is_terminal(sys.stdout) else "json"


# Control characters other than a traceback's own line breaks: a newline in
# client text would forge a line, an ESC would drive the reader's terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TRACEBACK_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _escape_controls(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Processor for the console renderer, which writes strings as they are
    (JSON escapes them itself): control characters become ``\\xNN`` (V16.4.1)."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            pattern = _TRACEBACK_CONTROL if key == "exception" else _CONTROL
            event_dict[key] = pattern.sub(lambda match: f"\\x{ord(match[0]):02x}", value)
    return event_dict


class _CurrentStream:
    """``sys.stdout`` or ``sys.stderr`` as it is at each write."""

    def __init__(self, name: Literal["stdout", "stderr"]) -> None:
        self.name = name

    def write(self, text: str) -> int:
        return getattr(sys, self.name).write(text)  # type: ignore[no-any-return]

    def flush(self) -> None:
        getattr(sys, self.name).flush()

    def isatty(self) -> bool:
        return _is_terminal(getattr(sys, self.name))


def _is_terminal(stream: IO[str] | _CurrentStream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A structlog logger; ``name`` defaults to the calling module's name."""
    if name is None:
        return structlog.stdlib.get_logger()
    return structlog.stdlib.get_logger(name)
