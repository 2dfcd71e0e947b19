"""``/admin/api/v1/…``: users, roles, API keys, sessions, collections and OAuth clients.

Every route needs an admin permission from a session signed in with two
factors. The network guard serves ``/admin/*`` on the admin listener only.
Bodies are strict: only the listed fields exist, so ``owner``, ``id`` or a
smuggled ``roles`` elsewhere is a 422, never a silent write. The routes are
thin: every change goes through a domain service, which writes the audit event.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from bastion.access import Permission, Principal, require_mfa
from bastion.access.routes import info
from bastion.access.schemas import ApiKeyInfo, Scope
from bastion.data.service import DataService
from bastion.http.problems import NotFound, ValidationFailed
from bastion.identity.throttle import restore_sign_in
from bastion.oauth.clients import CLAIM_FIELDS, ClientMetadata, ClientRegistry, InvalidClientMetadata, get_client
from bastion.settings import CollectionSettings
from bastion.uow import origin_of, unit_of_work

if TYPE_CHECKING:
    from bastion.identity.models import Account

router = APIRouter(prefix="/admin/api/v1", tags=["admin"])
RoleName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")]


UsersRead = Annotated[Principal, Depends(require_mfa(Permission.ADMIN_USERS_READ))]
UsersWrite = Annotated[Principal, Depends(require_mfa(Permission.ADMIN_USERS_WRITE))]
RolesRead = Annotated[Principal, Depends(require_mfa(Permission.ADMIN_ROLES_READ))]
RolesWrite = Annotated[Principal, Depends(require_mfa(Permission.ADMIN_ROLES_WRITE))]
KeysRead = Annotated[Principal, Depends(require_mfa(Permission.ADMIN_API_KEYS_READ))]
KeysWrite = Annotated[Principal, Depends(require_mfa(Permission.ADMIN_API_KEYS_WRITE))]
SessionsWrite = Annotated[Principal, Depends(require_mfa(Permission.ADMIN_SESSIONS_WRITE))]


class UserInfo(BaseModel):
    id: uuid.UUID
    email: str
    roles: list[str]
    disabled: bool
    email_verified: bool
    mfa_enabled: bool


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    roles: list[RoleName] | None = Field(None, max_length=16)
    disabled: bool | None = None


class RoleInfo(BaseModel):
    name: str
    permissions: list[str]
    description: str


class RoleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    permissions: list[Scope] = Field(max_length=256)
    description: str = Field("", max_length=200)


def _user(user: Account, roles: list[str]) -> UserInfo:
    return UserInfo(
        id=user.id,
        email=user.email,
        roles=roles,
        disabled=user.disabled,
        email_verified=user.email_verified_at is not None,
        mfa_enabled=user.totp_enabled,
    )


@router.get("/users")
async def list_users(request: Request, caller: UsersRead) -> list[UserInfo]:
    return [_user(user, roles) for user, roles in await request.app.state.identity.list_users(request.app.state.db)]


@router.patch("/users/{user_id}", responses={404: {"description": "No such user"}})
async def patch_user(user_id: uuid.UUID, body: UserPatch, request: Request, caller: UsersWrite) -> UserInfo:
    state = request.app.state
    async with unit_of_work(request) as uow:
        user = await state.identity.by_id(uow.db, user_id)
        if user is None:
            raise NotFound
        if body.roles is not None:
            await state.access.set_roles(uow, user, body.roles, actor_id=caller.user_id)
        if body.disabled is True:
            user = await state.identity.lock(uow, user, actor_id=caller.user_id)
            await state.sessions.revoke_all(uow, user.id, reason="admin_lock")
        elif body.disabled is False:
            user = await state.identity.unlock(uow, user, actor_id=caller.user_id)
            await restore_sign_in(state.rate_limiter, state.settings, user.email)
        return _user(user, await state.identity.roles_of(uow.db, user.id))


@router.get("/roles")
async def list_roles(request: Request, caller: RolesRead) -> list[RoleInfo]:
    roles = await request.app.state.access.roles(request.app.state.db)
    return [RoleInfo(name=r.name, permissions=r.permissions, description=r.description) for r in roles]


@router.put("/roles/{name}")
async def put_role(
    name: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")],
    body: RoleBody,
    request: Request,
    caller: RolesWrite,
) -> RoleInfo:
    async with unit_of_work(request) as uow:
        role = await request.app.state.access.put_role(
            uow, name, body.permissions, body.description, actor_id=caller.user_id
        )
    return RoleInfo(name=role.name, permissions=role.permissions, description=role.description)


@router.get("/api-keys")
async def list_api_keys(request: Request, caller: KeysRead) -> list[ApiKeyInfo]:
    return [info(k) for k in await request.app.state.access.keys_of(request.app.state.db, None)]


@router.delete("/api-keys/{key_id}", status_code=204, responses={404: {"description": "No such key"}})
async def revoke_api_key(key_id: Annotated[str, Path(max_length=32)], request: Request, caller: KeysWrite) -> Response:
    async with unit_of_work(request) as uow:
        if not await request.app.state.access.revoke_key(uow, key_id, owner_id=None, actor_id=caller.user_id):
            raise NotFound
    return Response(status_code=204)


@router.delete("/sessions/{session_id}", status_code=204, responses={404: {"description": "No such session"}})
async def revoke_session(session_id: uuid.UUID, request: Request, caller: SessionsWrite) -> Response:
    async with unit_of_work(request) as uow:
        if not await request.app.state.sessions.revoke(uow, session_id, user_id=None, reason="admin"):
            raise NotFound
    return Response(status_code=204)


@router.delete("/users/{user_id}/sessions", status_code=204)
async def revoke_user_sessions(user_id: uuid.UUID, request: Request, caller: SessionsWrite) -> Response:
    async with unit_of_work(request) as uow:
        await request.app.state.sessions.revoke_all(uow, user_id, reason="admin")
    return Response(status_code=204)


CollectionsRead = Annotated[Principal, Depends(require_mfa(Permission.ADMIN_COLLECTIONS_READ))]
CollectionsWrite = Annotated[Principal, Depends(require_mfa(Permission.ADMIN_COLLECTIONS_WRITE))]
CollectionName = Annotated[str, Path(min_length=1, max_length=48, pattern=r"^[a-z][a-z0-9_]*$")]


class CollectionChanges(BaseModel):
    changes: list[str]


@router.get("/collections")
async def list_collections(request: Request, caller: CollectionsRead) -> dict[str, CollectionSettings]:
    data: DataService = request.app.state.data
    await data.refresh()
    return {name: collection.settings for name, collection in sorted(data.catalog.collections.items())}


@router.put(
    "/collections/{name}",
    responses={409: {"description": "Declared in bastion.toml, or drops data without ?force=true"}},
)
async def put_collection(
    name: CollectionName, body: CollectionSettings, request: Request, caller: CollectionsWrite, force: bool = False
) -> CollectionChanges:
    """Create or change a collection; a change that drops data needs ``?force=true``."""
    plan = await request.app.state.data.define(
        name, body, force=force, origin=origin_of(request), actor_id=caller.user_id
    )
    return CollectionChanges(changes=[change.description for change in plan.changes])


@router.delete(
    "/collections/{name}",
    responses={
        404: {"description": "No such collection"},
        409: {"description": "Declared in bastion.toml, or not forced"},
    },
)
async def delete_collection(
    name: CollectionName, request: Request, caller: CollectionsWrite, force: bool = False
) -> CollectionChanges:
    """Drop a collection and its records (needs ``?force=true``)."""
    plan = await request.app.state.data.define(
        name, None, force=force, origin=origin_of(request), actor_id=caller.user_id
    )
    return CollectionChanges(changes=[change.description for change in plan.changes])


OAuthClientsRead = Annotated[Principal, Depends(require_mfa(Permission.ADMIN_OAUTH_CLIENTS_READ))]
OAuthClientsWrite = Annotated[Principal, Depends(require_mfa(Permission.ADMIN_OAUTH_CLIENTS_WRITE))]
ClientId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Uri = Annotated[str, Field(min_length=1, max_length=2048)]
_NO_CLIENT: dict[int | str, dict[str, Any]] = {404: {"description": "No such client"}}


class OAuthClientBody(BaseModel):
    """A client to register: the command line's options, and custom claims (claim -> user field)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    redirect_uris: list[Uri] = Field([], max_length=16)
    public: bool = False
    token_endpoint_auth_method: str | None = Field(None, max_length=32)
    grant_types: list[Annotated[str, Field(max_length=64)]] = Field([], max_length=8)
    scopes: list[Annotated[str, Field(max_length=128)]] = Field([], max_length=64)
    first_party: bool = False
    jwks: dict[str, Any] | None = None
    jwks_uri: Uri | None = None
    require_par: bool = False
    require_dpop: bool = False
    id_token_alg: str = Field("RS256", max_length=16)
    access_token_alg: str = Field("RS256", max_length=16)
    backchannel_logout_uri: Uri | None = None
    post_logout_redirect_uris: list[Uri] = Field([], max_length=16)
    claims: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=64)]] = Field(
        {}, max_length=16, description=f"Custom claims: claim name -> one of {', '.join(CLAIM_FIELDS)}"
    )
    owner_id: uuid.UUID | None = Field(
        None, description="The user reminded before the secret expires (else the [alerts] mail_to contacts)"
    )


class OAuthClientOwner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    owner_id: uuid.UUID | None = Field(description="The user reminded before the secret expires; null: nobody")


def _created(client: dict[str, Any], secret: str | None) -> dict[str, Any]:
    return {**client, **({"client_secret": secret} if secret is not None else {})}


@router.get("/oauth/clients")
async def list_oauth_clients(request: Request, caller: OAuthClientsRead) -> list[dict[str, Any]]:
    clients = await ClientRegistry.of(request.app.state).list(request.app.state.db)
    return [client.describe() for client in clients]


@router.post("/oauth/clients", status_code=201, responses={422: {"description": "Invalid metadata"}})
async def create_oauth_client(body: OAuthClientBody, request: Request, caller: OAuthClientsWrite) -> dict[str, Any]:
    """Register a client; the answer carries its ``client_secret`` this once."""
    metadata = ClientMetadata(
        **{
            **body.model_dump(
                exclude={"redirect_uris", "grant_types", "scopes", "post_logout_redirect_uris", "owner_id"}
            ),
            "redirect_uris": tuple(body.redirect_uris),
            "grant_types": tuple(body.grant_types),
            "scopes": tuple(body.scopes),
            "post_logout_redirect_uris": tuple(body.post_logout_redirect_uris),
        }
    )
    try:
        async with unit_of_work(request) as uow:
            client, secret = await ClientRegistry.of(request.app.state).create(
                uow, metadata, actor_id=caller.user_id, owner_id=body.owner_id
            )
    except InvalidClientMetadata as refused:
        raise ValidationFailed(refused.message, extra={"error": refused.error}) from None
    return _created(client.describe(), secret)


@router.get("/oauth/clients/{client_id}", responses=_NO_CLIENT)
async def show_oauth_client(client_id: ClientId, request: Request, caller: OAuthClientsRead) -> dict[str, Any]:
    client = await get_client(request.app.state.db, client_id)
    if client is None:
        raise NotFound
    return client.describe()


@router.post(
    "/oauth/clients/{client_id}/rotate-secret",
    responses={**_NO_CLIENT, 422: {"description": "The client has no secret"}},
)
async def rotate_oauth_client_secret(
    client_id: ClientId, request: Request, caller: OAuthClientsWrite
) -> dict[str, Any]:
    """A new secret, shown this once; the old one stops working at once."""
    try:
        async with unit_of_work(request) as uow:
            rotated = await ClientRegistry.of(request.app.state).rotate_secret(uow, client_id, actor_id=caller.user_id)
    except InvalidClientMetadata as refused:
        raise ValidationFailed(refused.message, extra={"error": refused.error}) from None
    if rotated is None:
        raise NotFound
    secret, expires_at = rotated
    return {"client_id": client_id, "client_secret": secret, "secret_expires_at": expires_at.isoformat()}


@router.put(
    "/oauth/clients/{client_id}/owner",
    responses={**_NO_CLIENT, 422: {"description": "No such user"}},
)
async def set_oauth_client_owner(
    client_id: ClientId, body: OAuthClientOwner, request: Request, caller: OAuthClientsWrite
) -> dict[str, Any]:
    """Who is reminded before the client's secret expires (null: the ``[alerts] mail_to`` contacts)."""
    registry = ClientRegistry.of(request.app.state)
    try:
        async with unit_of_work(request) as uow:
            if not await registry.set_owner(uow, client_id, body.owner_id, actor_id=caller.user_id):
                raise NotFound
    except InvalidClientMetadata as refused:
        raise ValidationFailed(refused.message, extra={"error": refused.error}) from None
    client = await get_client(request.app.state.db, client_id)
    if client is None:
        raise NotFound
    return client.describe()


@router.delete("/oauth/clients/{client_id}", status_code=204, responses=_NO_CLIENT)
async def delete_oauth_client(client_id: ClientId, request: Request, caller: OAuthClientsWrite) -> Response:
    """Delete a client, and with it its grants, consents and every token issued to it."""
    async with unit_of_work(request) as uow:
        if not await ClientRegistry.of(request.app.state).delete(uow, client_id, actor_id=caller.user_id):
            raise NotFound
    return Response(status_code=204)
