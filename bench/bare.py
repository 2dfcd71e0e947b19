"""The bare-framework ceiling: a plain Starlette JSON handler on the same ASGI server."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

RECORD = {
    "id": "019b76da-a800-7989-9888-361ef50db8a0",
    "owner": "7dc25f9d-2bb1-4bd9-b244-a8cd6a7e099d",
    "created_at": "2026-01-01T00:00:00+00:00",
    "updated_at": "2026-01-01T00:00:00+00:00",
    "a": "secret number one",
    "b": "secret number two",
    "c": "secret number three",
}


async def record(request: Request) -> JSONResponse:
    return JSONResponse(RECORD)


app = Starlette(routes=[Route("/record", record)])
