"""Configuration: ``bastion.toml`` in the data directory, overridden by
``BASTION_<SECTION>__<KEY>`` environment variables; every secret setting also
reads ``BASTION_<NAME>_FILE`` (Docker and Kubernetes secrets).

Precedence, highest first: explicit arguments, environment, ``*_FILE``
secrets, ``bastion.toml``, defaults.
"""

from __future__ import annotations

import os
import tomllib
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
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
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

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
            env_settings,
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


class SecretFileSource(PydanticBaseSettingsSource):
    """``BASTION_<NAME>_FILE`` for every ``Secret`` setting, at any depth."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return _read_secret_files(self.settings_cls.model_fields, ENV_PREFIX)


def _read_secret_files(fields: dict[str, FieldInfo], prefix: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, field in fields.items():
        annotation = field.annotation
        env_name = f"{prefix}{name.upper()}"
        if isinstance(annotation, type) and issubclass(annotation, Section):
            nested = _read_secret_files(annotation.model_fields, f"{env_name}__")
            if nested:
                found[name] = nested
        elif Secret in getattr(annotation, "__args__", (annotation,)) and name != "master_key":
            path = os.environ.get(f"{env_name}_FILE")
            if path:
                try:
                    found[name] = Path(path).read_text().strip()
                except OSError as exc:
                    raise ConfigError(f"{env_name}_FILE={path} cannot be read ({exc.strerror})") from None
    return found
