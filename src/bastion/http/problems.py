"""RFC 9457 problem details: every error Bastion answers is one of these.

Clients get a generic title and a request id; the precise cause goes to the
log only. Errors are data: one class per public error, carrying its status and
public title, so no handler decides ad hoc what a client may learn.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """A public error. ``detail`` must never contain client input or internals."""

    status: int = 500
    title: str = "Internal Server Error"
    detail: str | None = None

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or type(self).detail
        self.headers = headers or {}
        self.extra = extra or {}

    @property
    def type_uri(self) -> str:
        return f"https://bastion.dev/problems/{self.status}"

    def body(self, request_id: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail or self.title,
            "request_id": request_id,
        }
        body.update(self.extra)
        return body


class BadRequest(Problem):
    status = 400
    title = "Bad Request"
    detail = "The request body is not valid JSON."


class Unauthorized(Problem):
    status = 401
    title = "Unauthorized"
    detail = "Authentication is required or has failed."


class Forbidden(Problem):
    status = 403
    title = "Forbidden"
    detail = "You are not allowed to do this."


class NotFound(Problem):
    status = 404
    title = "Not Found"
    detail = "The requested resource does not exist."


class MethodNotAllowed(Problem):
    status = 405
    title = "Method Not Allowed"
    detail = "This method is not allowed on this resource."


class RequestTimeout(Problem):
    status = 408
    title = "Request Timeout"
    detail = "The request body did not arrive in time."


class Conflict(Problem):
    status = 409
    title = "Conflict"
    detail = "The request conflicts with the current state."


class PayloadTooLarge(Problem):
    status = 413
    title = "Content Too Large"
    detail = "The request body is larger than allowed."


class UnsupportedMediaType(Problem):
    status = 415
    title = "Unsupported Media Type"
    detail = "Request bodies must be application/json."


class ValidationFailed(Problem):
    status = 422
    title = "Unprocessable Content"
    detail = "The request has invalid fields."


class TooManyRequests(Problem):
    status = 429
    title = "Too Many Requests"
    detail = "Too many requests; retry later."


class InternalError(Problem):
    status = 500
    title = "Internal Server Error"
    detail = "An unexpected error occurred. Quote the request id when reporting it."


class NotReady(Problem):
    status = 503
    title = "Service Unavailable"
    detail = "The service is not ready."


class LockdownActive(Problem):
    """An incident lockdown is on (``bastion incident lockdown``): writes and
    sign-ins are refused, reads go on. Its own ``type`` so that clients and
    load balancers can tell it from an outage."""

    status = 503
    title = "Service Unavailable"
    detail = "The service is in lockdown: sign-ins and changes are refused for now; reads go on."

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.headers.setdefault("Retry-After", "300")

    @property
    def type_uri(self) -> str:
        return "https://bastion.dev/problems/lockdown"


_BY_STATUS: dict[int, type[Problem]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        RequestTimeout,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        ValidationFailed,
        TooManyRequests,
        InternalError,
        NotReady,
    )
}


def for_status(status: int) -> Problem:
    """The public problem for a bare status code (from routing, for example)."""
    cls = _BY_STATUS.get(status)
    if cls is not None:
        return cls()
    problem = Problem("The request could not be processed.")
    problem.status = status
    problem.title = HTTPStatus(status).phrase
    return problem


def render(problem: Problem, request_id: str) -> tuple[bytes, dict[str, str]]:
    """Body bytes and headers of a problem response."""
    body = orjson.dumps(problem.body(request_id))
    return body, {"content-type": PROBLEM_JSON, **problem.headers}
