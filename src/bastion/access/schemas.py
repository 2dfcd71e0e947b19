"""Bodies of the API-key and admin routes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from bastion.clock import in_utc

# A permission name such as records:notes:read, or a subtree such as records:*.
Scope = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[a-z0-9*][a-z0-9:*_-]*$")]


class NewApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    scopes: list[Scope] = Field(min_length=1, max_length=64)
    expires_at: Annotated[AwareDatetime, AfterValidator(in_utc)] | None = None


class ApiKeyInfo(BaseModel):
    id: str
    name: str
    scopes: list[str]
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    user_id: uuid.UUID


class CreatedApiKey(ApiKeyInfo):
    key: str = Field(description="The full key. Shown once: store it now.")
