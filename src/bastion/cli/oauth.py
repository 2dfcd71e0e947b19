"""``bastion oauth client …``: register, list, show, rotate the secret of, set the owner of, and delete
OAuth clients.

``create`` and ``rotate-secret`` print one JSON object as their last line
(``client_id`` and, for a client with a secret, ``client_secret`` and
``secret_expires_at``): the only time the secret is shown, since only its
keyed hash is stored. The services are imported inside the commands, so
``--help`` does not load them.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bastion.cli.common import CommandError, DataDir, err, fail, one_line_errors, out
from bastion.cli.identity import run

if TYPE_CHECKING:
    from bastion.oauth.clients import Client
    from bastion.runtime import Services
    from bastion.uow import UnitOfWork

DEFAULT_ALG = "RS256"  # mandatory for OpenID providers (OpenID Connect Core §15.1)
oauth = typer.Typer(help="Bastion as an OAuth 2.0 / OpenID Connect provider.", no_args_is_help=True)
clients = typer.Typer(help="Registered OAuth clients.", no_args_is_help=True)
oauth.add_typer(clients, name="client")


def _print_json(value: dict[str, Any]) -> None:
    # Plain print: one line of JSON, never wrapped or highlighted by rich.
    typer.echo(json.dumps(value, separators=(",", ":"), sort_keys=True))


def _jwks_from(path: Path) -> dict[str, Any]:
    try:
        jwks = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CommandError(f"{path}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError):
        raise CommandError(f"{path} is not JSON") from None
    if not isinstance(jwks, dict):
        raise CommandError(f"{path} is not a JWK Set (a JSON object with keys)")
    return jwks


@clients.command("create")
def create(  # noqa: PLR0917 - typer maps each parameter to an option
    name: Annotated[str, typer.Option("--name", help="The name users see on the consent page.")],
    redirect_uri: Annotated[
        list[str] | None, typer.Option("--redirect-uri", help="A redirect URI, exact (repeat for more).")
    ] = None,
    public: Annotated[bool, typer.Option("--public", help="A public client (native, browser app): no secret.")] = False,
    grant: Annotated[
        list[str] | None,
        typer.Option("--grant", help="A grant type (repeat) [default: authorization_code refresh_token]."),
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="A scope it may ask for (repeat) [default: the OpenID ones]."),
    ] = None,
    first_party: Annotated[bool, typer.Option("--first-party", help="Trusted: no consent page.")] = False,
    jwks_file: Annotated[
        Path | None, typer.Option("--jwks-file", help="Its public JWK Set: authenticates with private_key_jwt.")
    ] = None,
    jwks_uri: Annotated[
        str | None, typer.Option("--jwks-uri", help="Where it publishes its JWK Set: private_key_jwt.")
    ] = None,
    auth_method: Annotated[
        str | None,
        typer.Option("--auth-method", help="client_secret_basic (default) or client_secret_post, for a secret."),
    ] = None,
    require_par: Annotated[bool, typer.Option("--require-par", help="Only pushed authorization requests.")] = False,
    require_dpop: Annotated[bool, typer.Option("--require-dpop", help="Only DPoP-bound tokens.")] = False,
    id_token_alg: Annotated[str, typer.Option("--id-token-alg", help="RS256, ES256 or EdDSA.")] = DEFAULT_ALG,
    access_token_alg: Annotated[str, typer.Option("--access-token-alg", help="RS256, ES256 or EdDSA.")] = DEFAULT_ALG,
    backchannel_logout_uri: Annotated[
        str | None, typer.Option("--backchannel-logout-uri", help="Where logout tokens are posted.")
    ] = None,
    post_logout_redirect_uri: Annotated[
        list[str] | None, typer.Option("--post-logout-redirect-uri", help="Allowed after logout (repeat).")
    ] = None,
    claim: Annotated[
        list[str] | None,
        typer.Option("--claim", help="A custom claim in its tokens, NAME=FIELD of the user (repeat)."),
    ] = None,
    owner: Annotated[
        str | None,
        typer.Option("--owner", help="The user (email) reminded before its secret expires [default: alerts.mail_to]."),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Register a client; the last line is JSON with client_id and, once, client_secret."""
    from bastion.oauth.clients import ClientMetadata, ClientRegistry, InvalidClientMetadata

    if jwks_file is not None and jwks_uri is not None:
        fail("give --jwks-file or --jwks-uri, not both")
    if auth_method is not None and auth_method not in ("client_secret_basic", "client_secret_post"):
        fail("--auth-method is client_secret_basic or client_secret_post")
    if auth_method is not None and (public or jwks_file is not None or jwks_uri is not None):
        fail("--auth-method is for clients with a secret (not --public, --jwks-file or --jwks-uri)")
    jwks = _read_jwks(jwks_file)
    claims = dict(item.partition("=")[::2] for item in claim or ())
    if any(not name or not field for name, field in claims.items()):
        fail("--claim is NAME=FIELD, e.g. --claim department=roles")
    metadata = ClientMetadata(
        name=name,
        redirect_uris=tuple(redirect_uri or ()),
        public=public,
        token_endpoint_auth_method=auth_method,
        grant_types=tuple(grant or ()),
        scopes=tuple(s for given in scope or () for s in given.split()),
        first_party=first_party,
        jwks=jwks,
        jwks_uri=jwks_uri,
        require_par=require_par,
        require_dpop=require_dpop,
        id_token_alg=id_token_alg,
        access_token_alg=access_token_alg,
        backchannel_logout_uri=backchannel_logout_uri,
        post_logout_redirect_uris=tuple(post_logout_redirect_uri or ()),
        claims=claims,
    )

    async def action(services: Services, uow: UnitOfWork) -> tuple[Client, str | None]:
        owner_id = await _user_id(services, uow, owner) if owner is not None else None
        try:
            return await ClientRegistry.of(services).create(uow, metadata, owner_id=owner_id)
        except InvalidClientMetadata as refused:
            raise CommandError(refused.message) from None

    client, secret = run(data_dir, action)
    err.print(f"registered {client.name} ({client.token_endpoint_auth_method})", highlight=False)
    if secret is not None and client.secret_expires_at is not None:
        err.print(
            f"the client secret is shown once: store it now; it expires {client.secret_expires_at:%Y-%m-%d %H:%M} UTC",
            highlight=False,
        )
    _print_json({**client.describe(), **({"client_secret": secret} if secret is not None else {})})


async def _user_id(services: Services, uow: UnitOfWork, email: str) -> uuid.UUID:
    account = await services.identity.by_email(uow.db, email)
    if account is None:
        raise CommandError(f"no user with the email {email}")
    return account.id


def _read_jwks(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    with one_line_errors():
        return _jwks_from(path)


@clients.command("list")
def list_clients(data_dir: DataDir = None) -> None:
    """Every registered client (no secrets)."""
    from rich.table import Table

    from bastion.oauth.clients import ClientRegistry

    async def action(services: Services, uow: UnitOfWork) -> list[Client]:
        return await ClientRegistry.of(services).list(uow.db)

    table = Table("name", "auth method", "grants", "scopes", "created", "secret expires")
    # Never wrapped: it is what the other commands take.
    table.add_column("client_id", no_wrap=True, min_width=22)
    for client in run(data_dir, action):
        table.add_row(
            client.name,
            client.token_endpoint_auth_method,
            ",".join(client.grant_types),
            " ".join(client.scopes),
            client.created_at.isoformat(timespec="seconds") if client.created_at else "",
            client.secret_expires_at.isoformat(timespec="seconds") if client.secret_expires_at else "",
            client.id,
        )
    out.print(table)


@clients.command("show")
def show(client_id: Annotated[str, typer.Argument(help="The client_id.")], data_dir: DataDir = None) -> None:
    """A client's metadata, as JSON (no secret)."""
    from bastion.oauth.clients import get_client

    async def action(services: Services, uow: UnitOfWork) -> Client:
        client = await get_client(uow.db, client_id)
        if client is None:
            raise CommandError("no client with that client_id")
        return client

    _print_json(run(data_dir, action).describe())


@clients.command("rotate-secret")
def rotate_secret(client_id: Annotated[str, typer.Argument(help="The client_id.")], data_dir: DataDir = None) -> None:
    """A new secret (the old one stops working now); the last line is JSON with it."""
    from bastion.oauth.clients import ClientRegistry, InvalidClientMetadata

    async def action(services: Services, uow: UnitOfWork) -> tuple[str, dt.datetime]:
        try:
            rotated = await ClientRegistry.of(services).rotate_secret(uow, client_id)
        except InvalidClientMetadata as refused:
            raise CommandError(refused.message) from None
        if rotated is None:
            raise CommandError("no client with that client_id")
        return rotated

    secret, expires_at = run(data_dir, action)
    err.print("the new client secret is shown once: store it now; the old one no longer works", highlight=False)
    _print_json({"client_id": client_id, "client_secret": secret, "secret_expires_at": expires_at.isoformat()})


@clients.command("set-owner")
def set_owner(
    client_id: Annotated[str, typer.Argument(help="The client_id.")],
    email: Annotated[str | None, typer.Argument(help="The user reminded before its secret expires.")] = None,
    none: Annotated[bool, typer.Option("--none", help="Nobody: the alerts.mail_to contacts are reminded.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Who is reminded before the client's secret expires."""
    from bastion.oauth.clients import ClientRegistry

    if (email is None) == (not none):
        fail("give the owner's EMAIL or --none")

    async def action(services: Services, uow: UnitOfWork) -> None:
        owner_id = await _user_id(services, uow, email) if email is not None else None
        if not await ClientRegistry.of(services).set_owner(uow, client_id, owner_id):
            raise CommandError("no client with that client_id")

    run(data_dir, action)
    out.print(f"{client_id}: reminders go to {email or 'alerts.mail_to'}", highlight=False, markup=False)


@clients.command("delete")
def delete(client_id: Annotated[str, typer.Argument(help="The client_id.")], data_dir: DataDir = None) -> None:
    """Delete a client: its grants, consents and every token issued to it end with it."""
    from bastion.oauth.clients import ClientRegistry

    async def action(services: Services, uow: UnitOfWork) -> None:
        if not await ClientRegistry.of(services).delete(uow, client_id):
            raise CommandError("no client with that client_id")

    run(data_dir, action)
    out.print(f"deleted {client_id}", highlight=False)
