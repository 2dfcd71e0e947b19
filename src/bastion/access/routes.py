"""``/api/v1/me/api-keys``: scoped, expiring API keys, the secret shown once."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response

from bastion.access import schemas
from bastion.access.deps import require
from bastion.access.permissions import Permission
from bastion.access.principal import Principal
from bastion.access.service import AccessService
from bastion.http.problems import NotFound
from bastion.uow import unit_of_work

router = APIRouter(prefix="/api/v1/me/api-keys", tags=["api-keys"])
Owner = Annotated[Principal, Depends(require(Permission.API_KEYS))]


def _service(request: Request) -> AccessService:
    service: AccessService = request.app.state.access
    return service


def info(key: Any) -> schemas.ApiKeyInfo:
    """A key's public fields (``key``: a row with ApiKey's columns)."""
    return schemas.ApiKeyInfo(
        id=key.id,
        name=key.name,
        scopes=key.scopes,
        created_at=key.created_at,
        expires_at=key.expires_at,
        last_used_at=key.last_used_at,
        user_id=key.user_id,
    )


@router.post(
    "",
    status_code=201,
    responses={422: {"description": "Scopes beyond the owner's permissions, or expires_at past the maximum lifetime"}},
)
async def create(body: schemas.NewApiKey, owner: Owner, request: Request) -> schemas.CreatedApiKey:
    async with unit_of_work(request) as uow:
        key, text = await _service(request).create_key(
            uow, owner, name=body.name, scopes=body.scopes, expires_at=body.expires_at
        )
    return schemas.CreatedApiKey(**info(key).model_dump(), key=text)


@router.get("")
async def list_keys(owner: Owner, request: Request) -> list[schemas.ApiKeyInfo]:
    return [info(key) for key in await _service(request).keys_of(request.app.state.db, owner.account_id)]


@router.delete("/{key_id}", status_code=204, responses={404: {"description": "No such key"}})
async def revoke(key_id: Annotated[str, Path(max_length=32)], owner: Owner, request: Request) -> Response:
    async with unit_of_work(request) as uow:
        if not await _service(request).revoke_key(uow, key_id, owner_id=owner.account_id, actor_id=owner.account_id):
            raise NotFound
    return Response(status_code=204)
