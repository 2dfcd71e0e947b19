"""Configuration: ``bastion.toml`` in the data directory, overridden by
``BASTION_<SECTION>__<KEY>`` environment variables; every secret setting also
reads ``BASTION_<NAME>_FILE`` (Docker and Kubernetes secrets).

Precedence, highest first: explicit arguments, environment, ``*_FILE``
secrets, ``bastion.toml``, defaults.
"""

from __future__ import annotations

import os
import tomllib
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import SchemaError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from bastion.security import parse_webhook_secret

ENV_PREFIX = "BASTION_"
DEFAULT_DATA_DIR = Path("bastion-data")
CONFIG_FILE = "bastion.toml"


class ConfigError(Exception):
    """A configuration problem, stated in one line a user can act on."""


class Secret(SecretStr):
    """A string that never prints: ``repr`` and ``str`` are masked."""

    def __repr__(self) -> str:
        return "'**********'"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _parses_as_limit(value: str) -> str:
    from limits import parse

    parse(value)  # ValueError names the notation it expects
    return value


# A throttle's limit in the `limits` notation ("10/minute", "100 per hour"),
# checked when settings load rather than on the first request it throttles.
RateLimit = Annotated[str, AfterValidator(_parses_as_limit)]


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8443, ge=1, le=65535)
    tls: bool = True
    cert_file: Path | None = None
    key_file: Path | None = None
    workers: int = Field(1, ge=1, le=64)
    # Peers whose X-Forwarded-For is believed; everyone else's is ignored.
    trusted_proxies: list[IPv4Network | IPv6Network] = []
    # Client networks of the public listener: deny wins; an empty allow list allows any.
    allow: list[IPv4Network | IPv6Network] = []
    deny: list[IPv4Network | IPv6Network] = []
    # Connection hygiene (slowloris, header floods). Granian closes a connection
    # whose request head has not arrived in time, and the same timer closes an
    # idle keep-alive connection.
    header_read_timeout: float = Field(10.0, ge=1.0, le=60.0)
    keep_alive: bool = True
    # The HTTP/1 read buffer bounds the whole request head (hyper needs 8 KiB at least).
    max_header_bytes: int = Field(16 * 1024, ge=8192, le=1024 * 1024)
    # hyper refuses more than 100 headers itself; this is our lower bound.
    max_header_count: int = Field(64, ge=16, le=100)
    # Established connections per worker; more wait in the kernel's backlog.
    max_connections: int = Field(512, ge=8, le=65535)
    backlog: int = Field(1024, ge=128, le=65535)
    # Optional plain-HTTP listener that only redirects to HTTPS (e.g. 80).
    redirect_port: int | None = Field(None, ge=1, le=65535)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [ip_network(str(v), strict=False) for v in value]
        return value


class TlsSettings(Section):
    """Transport security of the listeners (the network domain owns this section)."""

    # Mozilla's server-side TLS profiles: intermediate is TLS 1.2 + 1.3 with
    # ECDHE AEAD suites only; modern is TLS 1.3 only.
    profile: Literal["intermediate", "modern"] = "intermediate"
    # `bastion check` warns this many days before the certificate expires.
    expiry_warning_days: int = Field(30, ge=1, le=365)


class AdminSettings(Section):
    """The admin listener (the network domain owns this section)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8444, ge=1, le=65535)
    # A client certificate from Bastion's own CA (`bastion ca init`); prod refuses false.
    require_client_cert: bool = True
    # Who may reach the admin plane at all; deny wins. Prod refuses an empty allow list.
    allow: list[IPv4Network | IPv6Network] = [ip_network("127.0.0.1/32"), ip_network("::1/128")]
    deny: list[IPv4Network | IPv6Network] = []


class RouteGroupPolicy(Section):
    """Client networks allowed or denied on every path under ``prefix``."""

    prefix: str = Field(pattern=r"^/[A-Za-z0-9._~/-]*$", max_length=256)
    allow: list[IPv4Network | IPv6Network] = []
    deny: list[IPv4Network | IPv6Network] = []


class NetworkSettings(Section):
    """IP policy per route group, and what the host firewall opens besides the listeners."""

    route_groups: list[RouteGroupPolicy] = []
    # Extra TCP ports `bastion firewall render` opens (e.g. [22] for SSH).
    firewall_extra_tcp_ports: list[int] = []
    # New connections per client address the firewall lets through to the public port.
    firewall_max_connections_per_ip: int = Field(128, ge=1, le=65535)

    @field_validator("firewall_extra_tcp_ports")
    @classmethod
    def _ports(cls, value: list[int]) -> list[int]:
        if any(not 1 <= port <= 65535 for port in value):
            raise ValueError("ports are 1-65535")
        return value


class HttpSettings(Section):
    max_body_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_json_depth: int = Field(32, ge=2, le=256)
    # Slow bodies (slowloris after the headers): a request body must arrive
    # whole within body_timeout seconds, and after its first two seconds never
    # fall behind body_min_rate bytes per second (0: no minimum rate). Else 408
    # and the connection closes, so a trickle cannot hold a connection slot.
    body_timeout: float = Field(30.0, gt=0, le=600)
    body_min_rate: int = Field(1024, ge=0, le=1024 * 1024 * 1024)
    # Host names (no port) the public listener answers to; any other Host is a
    # 400, so redirects and links are never built from a stranger's Host.
    # Empty: the host of auth.public_url in prod, any host in dev.
    allowed_hosts: list[Annotated[str, Field(min_length=1, max_length=253)]] = []
    hsts_max_age: int = Field(31_536_000, ge=0)
    hsts_include_subdomains: bool = True


class CorsSettings(Section):
    allow_origins: list[str] = []
    allow_credentials: bool = False


class PasswordSettings(Section):
    # OWASP Password Storage Cheat Sheet: Argon2id, m=19 MiB, t=2, p=1.
    memory_cost_kib: int = Field(19456, ge=7168)
    time_cost: int = Field(2, ge=1)
    parallelism: int = Field(1, ge=1)


class AuthSettings(Section):
    service_name: str = Field("Bastion", min_length=1, max_length=64)
    # Also the issuer (``iss``) of every token Bastion signs, exactly as written
    # (RFC 8414 §2: discovery's issuer is compared byte for byte).
    public_url: str = "https://127.0.0.1:8443"
    registration: Literal["open", "invite", "closed"] = "open"
    # ``aud`` of the access tokens of Bastion's own API (RFC 9068 §3).
    audience: str = "bastion-api"
    access_token_ttl: int = Field(600, ge=60, le=3600)
    refresh_token_ttl: int = Field(30 * 86400, ge=3600)
    # After `bastion keys rotate signing`, the new keys are published in the
    # JWKS at once and sign only this many seconds later, so relying parties
    # that cache the JWKS (for at most this long) know a key before meeting
    # its first token. 0 signs at once.
    signing_publish_seconds: int = Field(300, ge=0, le=86400)
    mfa_token_ttl: int = Field(300, ge=60, le=900)
    email_token_ttl: int = Field(1800, ge=300, le=86400)
    # NIST SP 800-63B: at least 8, and we default higher; long passphrases allowed.
    password_min_length: int = Field(12, ge=8, le=64)
    password_max_length: int = Field(256, ge=64, le=1024)
    mfa_required_roles: list[str] = ["admin"]
    lockout_threshold: int = Field(10, ge=3, le=100)
    lockout_seconds: int = Field(60, ge=1)
    # Throttles in the `limits` notation, checked before any work is done.
    login_rate_per_ip: RateLimit = "30/minute"
    login_rate_per_account: RateLimit = "10/minute"
    mfa_rate_per_ip: RateLimit = "10/minute"
    refresh_rate_per_ip: RateLimit = "60/minute"
    register_rate_per_ip: RateLimit = "10/minute"
    verify_rate_per_ip: RateLimit = "20/minute"
    forgot_rate_per_ip: RateLimit = "10/minute"
    reset_rate_per_ip: RateLimit = "10/minute"
    # Per account, so nobody can bomb a mailbox with sign-up or reset mail.
    mail_rate_per_account: RateLimit = "3/hour"
    api_key_rate: RateLimit = "600/minute"
    # An IPv6 client counts as its /ipv6_prefix network in every per-address
    # throttle: one subscriber routinely holds a whole /64.
    ipv6_prefix: int = Field(64, ge=32, le=128)
    # Every API key expires: a key created without expires_at lives the
    # default, and none may live longer than the maximum (a leaked key that
    # nobody remembers must not work forever).
    api_key_default_days: int = Field(90, ge=1, le=3650)
    api_key_max_days: int = Field(365, ge=1, le=3650)
    # Argon2id runs off the event loop; this many at once (about one per core)
    # so a flood of logins queues instead of exhausting memory.
    hash_concurrency: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=64)

    @model_validator(mode="after")
    def _key_lifetimes(self) -> AuthSettings:
        if self.api_key_default_days > self.api_key_max_days:
            raise ValueError("api_key_default_days is longer than api_key_max_days")
        return self


class OAuthProviderSettings(Section):
    """Another provider users may sign in with (``[[oauth.providers]]``).

    An OpenID provider needs only ``issuer`` (its endpoints come from
    discovery); a plain OAuth 2.0 provider (GitHub) names its endpoints and
    where its userinfo answer keeps the subject and the address.
    """

    name: Name
    issuer: str
    client_id: str = Field(min_length=1, max_length=256)
    # Read from this file, never written in bastion.toml.
    client_secret_file: Path | None = None
    scopes: list[str] = ["openid", "email", "profile"]
    kind: Literal["oidc", "oauth2"] = "oidc"
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    userinfo_endpoint: str | None = None
    subject_field: str = "sub"
    email_field: str = "email"
    email_verified_field: str | None = "email_verified"

    @model_validator(mode="after")
    def _endpoints(self) -> OAuthProviderSettings:
        if self.kind == "oauth2" and not (
            self.authorization_endpoint and self.token_endpoint and self.userinfo_endpoint
        ):
            raise ValueError("a plain OAuth 2.0 provider names authorization_, token_ and userinfo_endpoint")
        return self


class OAuthSettings(Section):
    """Bastion as an OAuth 2.0 authorization server and OpenID provider."""

    # RFC 9700 §4.2.1 / OpenID Core: codes live briefly; at most a minute.
    code_ttl: int = Field(60, ge=5, le=60)
    access_token_ttl: int = Field(600, ge=60, le=3600)
    id_token_ttl: int = Field(600, ge=60, le=3600)
    refresh_token_ttl: int = Field(30 * 86400, ge=3600)
    pushed_request_ttl: int = Field(60, ge=10, le=600)
    device_code_ttl: int = Field(600, ge=60, le=1800)
    device_poll_interval: int = Field(5, ge=1, le=60)
    # How far a DPoP proof's iat may be from now (RFC 9449 §11.1).
    dpop_window: int = Field(60, ge=5, le=300)
    dpop_nonce: bool = False
    browser_session_ttl: int = Field(12 * 3600, ge=300)
    # RFC 7591 registration by anyone who can reach the server: off unless asked for.
    dynamic_registration: bool = False
    # A client's jwks_uri may point at a private, loopback or link-local
    # address only when this is on (tests, a private deployment).
    allow_private_jwks_uri: bool = False
    token_rate_per_ip: RateLimit = "120/minute"  # noqa: S105 - a rate, not a password
    authorize_rate_per_ip: RateLimit = "60/minute"
    # Sign-in with other providers: start, callback and exchange, each per address.
    provider_rate_per_ip: RateLimit = "30/minute"
    # A client secret (new or rotated) is refused this long after it was issued; its owner
    # (or alerts.mail_to) is reminded rotation.remind_before ahead.
    client_secret_lifetime: Duration = 365 * 86400.0
    providers: list[OAuthProviderSettings] = []

    @model_validator(mode="after")
    def _unique_providers(self) -> OAuthSettings:
        names = [provider.name for provider in self.providers]
        if len(names) != len(set(names)):
            raise ValueError("two providers have the same name")
        return self


class MailSettings(Section):
    backend: Literal["outbox", "smtp"] = "outbox"
    sender: str = "Bastion <no-reply@localhost>"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: Secret | None = None
    smtp_starttls: bool = True
    smtp_implicit_tls: bool = False
    smtp_timeout: float = Field(10.0, gt=0)


def parse_duration(value: str | int | float) -> float:
    """Seconds in a duration written ``30s``, ``15m``, ``2h`` or ``7d`` (a bare number is seconds)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip()
        unit = _DURATION_UNITS.get(text[-1:])
        number = text[:-1] if unit else text
        try:
            seconds = float(number) * (unit or 1)
        except ValueError:
            raise ValueError(f"{value!r} is not a duration: write 30s, 15m, 2h or 7d") from None
    if not 0 < seconds < 10 * 365 * 86400:
        raise ValueError(f"{value!r} is not a duration above zero and under ten years")
    return seconds


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# A duration in settings: "30s", "15m", "2h", "7d"; held as seconds.
Duration = Annotated[float, BeforeValidator(parse_duration)]
Severity = Literal["info", "low", "medium", "high", "critical"]
# What a rule may do when it fires (bastion.monitor.actions).
RuleAction = Literal[
    "alert", "block_address", "block_network", "lock_account", "revoke_sessions",
    "require_step_up", "require_password_reset", "mail_user",
]  # fmt: skip
# What a rule counts by (bastion.monitor.rules): one counter per value.
GroupBy = Literal["account", "login", "address", "network", "principal", "api_key", "global"]


class RuleSettings(Section):
    """One detection rule (``[[monitor.rules]]``): which events, counted by
    what, how many within which window, and what happens when it fires."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*$", max_length=64)]
    # Event tags ("auth:login"), optionally with an outcome ("auth:login/failure").
    events: list[Annotated[str, Field(min_length=1, max_length=96)]] = Field(min_length=1, max_length=32)
    group_by: GroupBy = "global"
    # Count distinct values of this field instead of events (spraying: distinct logins).
    distinct: GroupBy | None = None
    threshold: int = Field(ge=1, le=10_000_000)
    window: Duration = 60.0
    severity: Severity = "medium"
    actions: list[RuleAction] = ["alert"]
    # How long an automatic block lasts.
    block_for: Duration = 900.0
    enabled: bool = True


class MonitorSettings(Section):
    enabled: bool = True
    # Replace the built-in rules of the same name, or add new ones.
    rules: list[RuleSettings] = []
    # Built-in rules turned off by name.
    disabled_rules: list[str] = []
    # Automatic blocks: at most this many active at once; networks only when allowed.
    max_auto_blocks: int = Field(1000, ge=0, le=1_000_000)
    auto_block_networks: bool = False
    # How often the event stream is read (seconds).
    poll_interval: float = Field(0.25, ge=0.05, le=10.0)


def webhook_url_allowed(url: str) -> bool:
    """An ``https`` URL with a host and no credentials, or ``http`` to a literal loopback address only.

    Alerts and checkpoints cross the network to a receiver: in clear only on
    the host itself (a local relay, a test receiver), in any mode.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - ValueError when the port is out of range
    except ValueError:
        return False
    if not parts.hostname or parts.username or parts.password:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname))


def _is_loopback(host: str) -> bool:
    """A literal loopback address (127.0.0.0/8, ::1), never a name: ``localhost`` is whatever
    /etc/hosts or a resolver says, and an alert sent in clear must stay on this host."""
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _webhook_urls(urls: list[str]) -> list[str]:
    for url in urls:
        if not webhook_url_allowed(url):
            raise ValueError(f"{url} is not an https URL (plain http only to a loopback address)")
    return urls


def webhook_origin(url: str) -> str:
    """``scheme://host[:port]/…``: a webhook URL without its path, query and fragment.

    Receivers put their token in the path or the query (``/services/T0/B0/<token>``,
    ``?token=…``), so a webhook URL is a credential: only its origin may be shown.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}/…"


# Receivers of alerts and checkpoints: https, or http to loopback (webhook_url_allowed).
# A JSON dump of the settings (the forensic bundle's config.json) shows only
# their origins: the rest of a webhook URL is often its token.
WebhookUrls = Annotated[
    list[Annotated[str, Field(max_length=2048)]],
    AfterValidator(_webhook_urls),
    PlainSerializer(lambda urls: [webhook_origin(url) for url in urls], return_type=list[str], when_used="json"),
]


def _webhook_secret(value: Secret | None) -> Secret | None:
    """A Standard Webhooks secret (``whsec_`` and the base64 of 24 to 64 bytes), checked by the
    very function that signs with it (bastion.security.parse_webhook_secret), so settings accept
    exactly what delivery can use. Its one-line message names no part of the value."""
    if value is not None:
        parse_webhook_secret(value.get_secret_value())
    return value


def _admin_url(url: str) -> str:
    if not webhook_url_allowed(url):
        raise ValueError(f"{url} is not an https URL (plain http only to a loopback address)")
    return url.rstrip("/")


class AlertSettings(Section):
    webhook_urls: WebhookUrls = []
    # Standard Webhooks secret, "whsec_<base64>"; BASTION_ALERTS__WEBHOOK_SECRET_FILE works.
    webhook_secret: Annotated[Secret | None, AfterValidator(_webhook_secret)] = None
    mail_to: list[Annotated[str, Field(max_length=254)]] = []
    # Delivery attempts before a dead-letter record, with exponential backoff from the first delay.
    max_attempts: int = Field(8, ge=1, le=50)
    retry_after: Duration = 5.0
    timeout: Duration = 10.0
    # Where an alert's link points: the admin listener as operators reach it
    # (default: https://<admin.host>:<admin.port>).
    admin_url: Annotated[str, Field(max_length=2048), AfterValidator(_admin_url)] | None = None


class AuditSettings(Section):
    # Where signed checkpoints are written, outside the data directory (refused inside it in prod).
    checkpoint_dir: Path | None = None
    # At most 60 s: every event older than the last checkpoint, at most a minute old, is covered.
    checkpoint_interval: Annotated[Duration, Field(gt=0, le=60)] = 60.0
    checkpoint_every: int = Field(1000, ge=1, le=10_000_000)
    checkpoint_webhook_urls: WebhookUrls = []
    # "host:port" (UDP) or a Unix socket path; unset = no syslog sink.
    checkpoint_syslog: str | None = None
    # The checkpoint's origin line (C2SP tlog-checkpoint); default from auth.public_url.
    origin: str | None = Field(None, max_length=256)
    # How often serve verifies the whole log (as `bastion audit verify` does), once cluster-wide.
    verify_interval: Duration = 86400.0


class IncidentSettings(Section):
    # During lockdown, reads go on unless this is false.
    lockdown_allows_reads: bool = True
    # How often each process re-reads the lockdown and block state (seconds; the 1 s bound).
    state_refresh: float = Field(0.5, ge=0.05, le=1.0)


def _cron(value: str) -> str:
    """A five-field cron expression (minute hour day month weekday, UTC), checked by croniter."""
    text = " ".join(value.split())
    if len(text.split(" ")) != 5 or not croniter.is_valid(text):
        raise ValueError(f"{value!r} is not a cron schedule: write five fields, such as '0 3 * * *'")
    return text


# When a job runs: five cron fields, in UTC ("0 3 * * *": every day at 03:00).
CronSchedule = Annotated[str, Field(max_length=128), AfterValidator(_cron)]
# An age X25519 recipient, "age1" and 58 bech32 characters (bastion backup keygen prints one).
AgeRecipient = Annotated[str, Field(pattern=r"^age1[02-9ac-hj-np-z]{58}$")]


class BackupSettings(Section):
    # Where backups are written and listed; default <data_dir>/backups.
    dir: Path | None = None
    # Who can decrypt backups: age X25519 public keys. The identities stay offline.
    recipients: list[AgeRecipient] = []
    # More destinations, each backup copied to all: directories or s3://bucket/prefix.
    destinations: list[Annotated[str, Field(min_length=1, max_length=1024)]] = []
    # Scheduled runs inside serve (only once recipients are set); "" turns a job off.
    schedule: CronSchedule | Literal[""] = "0 3 * * *"
    drill_schedule: CronSchedule | Literal[""] = "30 4 * * 0"
    # A drill host's mounted secret: with it the scheduled drill decrypts and restores.
    drill_identity_file: Path | None = None
    # Retention: the newest keep_last, plus the newest of each of the last N days, weeks, months.
    keep_last: int = Field(3, ge=1, le=10_000)
    keep_daily: int = Field(7, ge=0, le=10_000)
    keep_weekly: int = Field(4, ge=0, le=10_000)
    keep_monthly: int = Field(6, ge=0, le=10_000)
    # S3-compatible object storage for s3:// destinations (any endpoint: AWS, MinIO, moto).
    s3_endpoint_url: str | None = Field(None, max_length=2048)
    s3_region: str = Field("us-east-1", max_length=64)
    s3_access_key_id: str | None = Field(None, max_length=256)
    s3_secret_access_key: Secret | None = None


class PrivacySettings(Section):
    # How long each kind of data is kept before the scheduler purges it.
    audit_retention: Duration = 400 * 86400.0
    session_retention: Duration = 30 * 86400.0
    unverified_account_retention: Duration = 7 * 86400.0
    outbox_retention: Duration = 30 * 86400.0
    # How often the purge runs.
    retention_interval: Duration = 3600.0
    # How recent a sign-in must be for GET /api/v1/me/export (at most 5 minutes).
    export_max_auth_age: Annotated[Duration, Field(le=300)] = 300.0


class RotationSettings(Section):
    # The rotation job inside serve (scheduled rotations, reminders, reloads, the rewrap).
    enabled: bool = True
    # Keys rotate automatically once older than these (bastion check warns when overdue).
    signing_every: Duration = 30 * 86400.0
    encryption_every: Duration = 365 * 86400.0
    # The hmac key never rotates (a new one would break every blind index): past this age it is
    # only reported as due (keys status, bastion check, a warning of the rotation job).
    hmac_every: Duration = 365 * 86400.0
    notary_every: Duration = 365 * 86400.0
    # Owners of API keys and OAuth client secrets are mailed this long before the credential expires.
    remind_before: Duration = 14 * 86400.0
    # How often the rotation job looks.
    check_interval: Duration = 3600.0


FieldType = Literal[
    "string", "text", "richtext", "integer", "number", "boolean", "datetime",
    "email", "url", "enum", "json", "relation", "encrypted",
]  # fmt: skip
RecordOp = Literal["list", "read", "create", "update", "delete"]
# Names become SQL identifiers (always quoted by SQLAlchemy); a small alphabet
# keeps them portable and unambiguous (no "__", which derived columns use).
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$", max_length=48)]
Rule = Annotated[
    str,
    Field(pattern=r"^(public|authenticated|owner|role:[a-z][a-z0-9_-]{0,63}|permission:[a-z*][a-z0-9_:*-]{0,127})$"),
]
# Which options each field type takes (docs/collections.md); anything else is refused.
_FIELD_OPTIONS: dict[str, frozenset[str]] = {
    "string": frozenset({"min_length", "max_length", "pattern"}),
    "text": frozenset({"min_length", "max_length"}),
    "richtext": frozenset({"max_length"}),
    "integer": frozenset({"min", "max"}),
    "number": frozenset({"min", "max"}),
    "url": frozenset({"max_length"}),
    "enum": frozenset({"values"}),
    "json": frozenset({"max_bytes", "max_depth"}),
    "relation": frozenset({"collection"}),
    "encrypted": frozenset({"min_length", "max_length", "searchable"}),
}
_FILTERABLE = frozenset({"string", "integer", "number", "boolean", "datetime", "email", "url", "enum", "relation"})
_SORTABLE = frozenset({"string", "integer", "number", "boolean", "datetime", "email", "enum"})


class FieldSettings(Section):
    """One typed field of a collection."""

    type: FieldType
    required: bool = False
    filterable: bool = False
    sortable: bool = False
    min_length: int | None = Field(None, ge=0, le=1_000_000)
    max_length: int | None = Field(None, ge=1, le=1_000_000)
    pattern: str | None = Field(None, max_length=512)
    min: float | None = None
    max: float | None = None
    values: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(None, min_length=1, max_length=200)
    max_bytes: int | None = Field(None, ge=2, le=1024 * 1024)
    max_depth: int | None = Field(None, ge=1, le=32)
    collection: Name | None = None
    searchable: bool = False

    @model_validator(mode="after")
    def _fits_type(self) -> FieldSettings:
        common = {"type", "required", "filterable", "sortable"}
        stray = self.model_fields_set - common - _FIELD_OPTIONS.get(self.type, frozenset())
        if stray:
            raise ValueError(f"a {self.type} field takes no {', '.join(sorted(stray))}")
        if self.filterable and self.type not in _FILTERABLE and not (self.type == "encrypted" and self.searchable):
            raise ValueError(f"a {self.type} field cannot be filterable (encrypted ones need searchable = true)")
        if self.sortable and self.type not in _SORTABLE:
            raise ValueError(f"a {self.type} field cannot be sortable")
        if self.pattern is not None:
            try:  # pydantic's regex engine (Rust, linear time: no ReDoS) must accept it
                TypeAdapter(Annotated[str, Field(pattern=self.pattern)])
            except SchemaError:
                raise ValueError("pattern is not a valid regular expression") from None
        if self.type == "enum" and (not self.values or len(set(self.values)) != len(self.values)):
            raise ValueError("an enum field needs distinct values")
        if self.type == "relation" and (self.collection is None or self.required):
            raise ValueError("a relation field needs collection and cannot be required (deleting the target clears it)")
        if None not in (self.min, self.max) and self.min > self.max:  # type: ignore[operator]
            raise ValueError("min is larger than max")
        if None not in (self.min_length, self.max_length) and self.min_length > self.max_length:  # type: ignore[operator]
            raise ValueError("min_length is larger than max_length")
        return self


class CollectionSettings(Section):
    """A collection of records: typed fields and who may do what (unset = denied)."""

    fields: dict[Name, FieldSettings] = Field(min_length=1, max_length=64)
    rules: dict[RecordOp, Rule | list[Rule]] = {}

    @field_validator("fields")
    @classmethod
    def _not_reserved(cls, value: dict[str, FieldSettings]) -> dict[str, FieldSettings]:
        taken = set(value) & {"id", "owner", "created_at", "updated_at"}
        if taken:
            raise ValueError(f"{', '.join(sorted(taken))} is set by the server, not declared")
        return value


class LogSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    # Unset: "console" (coloured) on a terminal in dev, "json" otherwise.
    format: Literal["json", "console"] | None = None
    # One line per request on the public listener (method, path without the
    # query, status, duration, request id), through the same redaction.
    access: bool = True


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    mode: Literal["dev", "prod"] = "dev"
    debug: bool = False
    data_dir: Path = DEFAULT_DATA_DIR
    database_url: Secret | None = None
    redis_url: Secret | None = None
    master_key: Secret | None = None
    master_key_file: Path | None = None

    server: ServerSettings = ServerSettings()
    tls: TlsSettings = TlsSettings()
    admin: AdminSettings = AdminSettings()
    network: NetworkSettings = NetworkSettings()
    http: HttpSettings = HttpSettings()
    cors: CorsSettings = CorsSettings()
    passwords: PasswordSettings = PasswordSettings()
    auth: AuthSettings = AuthSettings()
    oauth: OAuthSettings = OAuthSettings()
    mail: MailSettings = MailSettings()
    log: LogSettings = LogSettings()
    audit: AuditSettings = AuditSettings()
    monitor: MonitorSettings = MonitorSettings()
    alerts: AlertSettings = AlertSettings()
    incident: IncidentSettings = IncidentSettings()
    backups: BackupSettings = BackupSettings()
    privacy: PrivacySettings = PrivacySettings()
    rotation: RotationSettings = RotationSettings()
    collections: dict[Name, CollectionSettings] = {}

    @model_validator(mode="after")
    def _provider_urls(self) -> Settings:
        """A provider's issuer and endpoints are ``https`` URLs; plain ``http`` only in dev, on loopback (tests)."""
        for provider in self.oauth.providers:
            urls = (
                provider.issuer,
                provider.authorization_endpoint,
                provider.token_endpoint,
                provider.userinfo_endpoint,
            )
            for url in urls:
                if url is not None and not url_allowed(url, self.mode):
                    raise ValueError(f"provider {provider.name}: {url} is not an https URL")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert isinstance(init_settings, InitSettingsSource)  # noqa: S101
        data_dir = init_settings.init_kwargs.get("data_dir") or os.environ.get(
            f"{ENV_PREFIX}DATA_DIR", str(DEFAULT_DATA_DIR)
        )
        return (
            init_settings,
            EnvSource(settings_cls),
            SecretFileSource(settings_cls),
            TomlSource(settings_cls, Path(data_dir) / CONFIG_FILE),
        )

    @property
    def config_file(self) -> Path:
        return self.data_dir / CONFIG_FILE

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite+aiosqlite:///{(self.data_dir / 'bastion.db').resolve()}"

    @property
    def cert_file(self) -> Path:
        return self.server.cert_file or self.data_dir / "tls" / "server.pem"

    @property
    def key_file(self) -> Path:
        return self.server.key_file or self.data_dir / "tls" / "server.key"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def dev_master_key_file(self) -> Path:
        return self.data_dir / "master.key"

    def master_key_source(self) -> tuple[str | None, Path | None]:
        """The master key text and the file it came from (None for the environment).

        Only dev falls back to the key ``init`` generated inside the data dir;
        prod must be given the key from outside the data it protects.
        """
        if self.master_key is not None:
            return self.master_key.get_secret_value(), None
        path = self.master_key_file
        if path is None and self.mode == "dev" and self.dev_master_key_file.exists():
            path = self.dev_master_key_file
        if path is None:
            return None, None
        try:
            return path.read_text().strip(), path
        except OSError as exc:
            raise ConfigError(
                f"master key file {path} cannot be read ({exc.strerror}); check BASTION_MASTER_KEY_FILE"
            ) from exc


def url_allowed(url: str, mode: str) -> bool:
    """An ``https`` URL with a host; in dev also ``http`` to a loopback host (a provider run by tests)."""
    parts = urlsplit(url)
    if not parts.hostname or parts.username or parts.password:
        return False
    if parts.scheme == "https":
        return True
    return mode == "dev" and parts.scheme == "http" and parts.hostname in {"127.0.0.1", "::1", "localhost"}


def load_settings(data_dir: Path | None = None, **overrides: Any) -> Settings:
    """Load settings, turning every failure into one actionable line."""
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    try:
        return Settings(**overrides)
    except RecursionError:
        # A BASTION_* variable holding deeply nested JSON (the TOML file is checked in read_toml).
        raise ConfigError(f"a {ENV_PREFIX}* variable nests arrays or objects too deeply to be a setting") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        raise ConfigError(
            f"invalid setting {where}: {first['msg']} "
            f"(in {CONFIG_FILE} or {ENV_PREFIX}{where.upper().replace('.', '__')})"
        ) from None


class TomlSource(PydanticBaseSettingsSource):
    """``bastion.toml``; a file that exists but cannot be parsed is an error."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
        self.data = read_toml(path)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except PermissionError:
        raise ConfigError(f"{path} is not readable by this user") from None
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not valid UTF-8 (byte {exc.start}); TOML files are UTF-8 text") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively.
        raise ConfigError(f"{path} nests arrays or tables too deeply to be a configuration") from None


class EnvSource(EnvSettingsSource):
    """``BASTION_*`` variables, less the ``_FILE`` ones of nested secrets
    (``BASTION_ALERTS__WEBHOOK_SECRET_FILE``): SecretFileSource reads those, and
    the nested delimiter would otherwise make each an unknown key of its section."""

    def __call__(self) -> dict[str, Any]:
        return _without_secret_files(super().__call__(), self.settings_cls.model_fields)


def _without_secret_files(values: dict[str, Any], fields: dict[str, FieldInfo]) -> dict[str, Any]:
    for name, field in fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, Section) and isinstance(values.get(name), dict):
            values[name] = _without_secret_files(dict(values[name]), annotation.model_fields)
        elif Secret in getattr(annotation, "__args__", (annotation,)) and f"{name}_file" not in fields:
            values.pop(f"{name}_file", None)
    return values


class SecretFileSource(PydanticBaseSettingsSource):
    """``BASTION_<NAME>_FILE`` for every ``Secret`` setting, at any depth."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return _read_secret_files(self.settings_cls.model_fields, ENV_PREFIX)


def _read_secret_files(fields: dict[str, FieldInfo], prefix: str) -> dict[str, Any]:
    """The ``*_FILE`` secrets that are set, read, nested by section as the settings are."""
    found: dict[str, Any] = {}
    for path, env_name in _secret_file_fields(fields, prefix):
        file = os.environ.get(f"{env_name}_FILE")
        if file:
            node = found
            for section in path[:-1]:
                node = node.setdefault(section, {})
            node[path[-1]] = _read_secret_file(env_name, file)
    return found


def _read_secret_file(env_name: str, file: str) -> str:
    try:
        return Path(file).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{env_name}_FILE={file} cannot be read ({exc.strerror})") from None


def _secret_file_fields(
    fields: dict[str, FieldInfo], prefix: str, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], str]]:
    """(path of the setting, its variable without ``_FILE``) of every ``Secret`` setting but the master key."""
    found = []
    for name, field in fields.items():
        annotation = field.annotation
        env_name = f"{prefix}{name.upper()}"
        if isinstance(annotation, type) and issubclass(annotation, Section):
            found += _secret_file_fields(annotation.model_fields, f"{env_name}__", (*path, name))
        elif Secret in getattr(annotation, "__args__", (annotation,)) and name != "master_key":
            found.append(((*path, name), env_name))
    return found


def secret_file_variables() -> list[str]:
    """Every ``BASTION_…_FILE`` variable a secret can be read from (the master key's aside)."""
    return [f"{env_name}_FILE" for _, env_name in _secret_file_fields(Settings.model_fields, ENV_PREFIX)]


def reread_secret_files(settings: Settings) -> Settings:
    """``settings`` with every ``*_FILE`` secret read again from its file (a worker built after SIGHUP).

    A secret also given directly in the environment keeps that value, as at
    start-up (the environment comes before the files). A changed section is
    validated again, so a bad new value is a ConfigError, as at start-up.
    """
    changes: dict[tuple[str, ...], str] = {}
    for path, env_name in _secret_file_fields(Settings.model_fields, ENV_PREFIX):
        file = os.environ.get(f"{env_name}_FILE")
        if file and env_name not in os.environ:
            changes[path] = _read_secret_file(env_name, file)
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    for path, value in changes.items():
        if len(path) == 1:
            top[path[0]] = Secret(value)
        else:
            sections.setdefault(path[0], {})[path[1]] = value
    for name, values in sections.items():
        section = getattr(settings, name)
        try:
            top[name] = type(section).model_validate({**dict(section), **values})
        except ValidationError as exc:
            raise ConfigError(f"invalid setting {name}: {exc.errors()[0]['msg']}") from None
    return settings.model_copy(update=top) if top else settings
