"""``/admin/api/v1/blocks``: the blocked addresses and networks.

The same operations as ``bastion block list | add | remove``, audited the
same way (``monitor:block:add`` / ``monitor:block:remove``, the admin as the
actor). Every process refuses a new block within ``incident.state_refresh``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from bastion.access import Permission, Principal, require_mfa
from bastion.http.problems import NotFound, ValidationFailed
from bastion.monitor.actions import add_block, remove_block
from bastion.network.blocks import BlockInfo, InvalidNetwork, parse_network
from bastion.settings import Duration
from bastion.uow import unit_of_work

router = APIRouter(prefix="/admin/api/v1", tags=["admin"])

BlocksRead = Annotated[Principal, Depends(require_mfa(Permission.ADMIN_BLOCKS_READ))]
BlocksWrite = Annotated[Principal, Depends(require_mfa(Permission.ADMIN_BLOCKS_WRITE))]


class BlockOut(BaseModel):
    id: uuid.UUID
    network: str
    source: str
    rule: str | None
    reason: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    created_by: str | None

    @classmethod
    def of(cls, info: BlockInfo) -> BlockOut:
        return cls(
            id=info.id, network=info.network, source=info.source, rule=info.rule, reason=info.reason,
            created_at=info.created_at, expires_at=info.expires_at, created_by=info.created_by,
        )  # fmt: skip


class BlockIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # An address (its /32 or /128) or a CIDR network with its host bits zero.
    network: str = Field(min_length=2, max_length=64)
    # "30s", "15m", "2h", "7d" or seconds; a block always ends.
    duration: Duration
    reason: str = Field("manual block", min_length=1, max_length=256)


@router.get("/blocks")
async def list_blocks(request: Request, caller: BlocksRead) -> list[BlockOut]:
    """The blocks in force, newest first."""
    return [BlockOut.of(info) for info in await request.app.state.blocks.live(request.app.state.db)]


@router.post("/blocks", status_code=201, responses={422: {"description": "Not an address or network"}})
async def post_block(body: BlockIn, request: Request, caller: BlocksWrite) -> BlockOut:
    try:
        network = parse_network(body.network)
    except InvalidNetwork:
        raise ValidationFailed("network: not an address or a CIDR network with its host bits zero") from None
    state = request.app.state
    async with unit_of_work(request) as uow:
        info = await add_block(
            uow, state.blocks, state.clock, network, for_seconds=body.duration, reason=body.reason,
            by=f"user:{caller.user_id}", actor_id=caller.user_id,
        )  # fmt: skip
    state.blocks.forget()
    return BlockOut.of(info)


@router.delete("/blocks/{block_id}", status_code=204, responses={404: {"description": "No such block"}})
async def delete_block(block_id: uuid.UUID, request: Request, caller: BlocksWrite) -> Response:
    state = request.app.state
    async with unit_of_work(request) as uow:
        if not await remove_block(uow, state.blocks, state.clock, block_id, actor_id=caller.user_id):
            raise NotFound
    state.blocks.forget()
    return Response(status_code=204)
