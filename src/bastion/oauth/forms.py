"""Reading OAuth parameters strictly (RFC 6749 §3.1, §3.2).

Parameters sent without a value are treated as omitted, a parameter must
not be included more than once, and request and response parameters are
``application/x-www-form-urlencoded`` on the endpoints clients call. Every
value is bounded, so an oversized one is an ``invalid_request`` before any
work is done, and so is a NUL anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from urllib.parse import parse_qsl

from fastapi import Request

from bastion.oauth.errors import OAuthError

__all__ = ["MAX_VALUE", "Params", "read_form", "read_query"]

# Longer than any legitimate value (a JWT assertion or DPoP-bound request fits).
MAX_VALUE = 8192
MAX_PARAMETERS = 64
FORM = "application/x-www-form-urlencoded"


class Params(Mapping[str, str]):
    """One request's OAuth parameters: each present at most once, none empty."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._values: dict[str, str] = {}
        for count, (name, value) in enumerate(pairs):
            if count >= MAX_PARAMETERS or len(name) > 64 or len(value) > MAX_VALUE:
                raise OAuthError("invalid_request", "A parameter is too long, or there are too many.")
            if name in self._values:
                raise OAuthError("invalid_request", "A parameter is repeated.")
            # No OAuth value holds NUL, and PostgreSQL refuses it in text outright: a
            # client_id of "x%00" must be an invalid_request, not a 500 from the lookup.
            if "\x00" in name or "\x00" in value:
                raise OAuthError("invalid_request", "A parameter holds a NUL character.")
            if value:
                self._values[name] = value

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def required(self, name: str) -> str:
        """The value of ``name``; ``invalid_request`` naming it when it is missing."""
        value = self._values.get(name)
        if value is None:
            raise OAuthError("invalid_request", f"The {name} parameter is missing.")
        return value


async def read_form(request: Request) -> Params:
    """The form body of a POST to an OAuth endpoint (RFC 6749 §3.2)."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != FORM:
        raise OAuthError("invalid_request", f"The body must be {FORM}.")
    body = await request.body()
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=MAX_PARAMETERS)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "The body is not a valid form.") from None
    return Params(pairs)


def read_query(request: Request) -> Params:
    """The query parameters of a GET to an OAuth endpoint (RFC 6749 §3.1)."""
    return Params(request.query_params.multi_items())
