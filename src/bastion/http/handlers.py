"""Exception handlers: every error leaves as problem+json, nothing else."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import compile_path

from bastion.http.problems import NotReady, Problem, ValidationFailed, for_status, render


def problem_response(request: Request, problem: Problem) -> Response:
    body, headers = render(problem, request.state.request_id)
    return Response(body, status_code=problem.status, headers=headers)


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)  # noqa: S101
    return problem_response(request, exc)


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    # Raised by routing (404, 405) or by Starlette itself: keep the status,
    # never the detail, which may echo the request.
    assert isinstance(exc, HTTPException)  # noqa: S101
    problem = for_status(exc.status_code)
    if exc.status_code == 405 and exc.headers and "Allow" in exc.headers:
        problem.headers["Allow"] = _allowed_methods(request) or exc.headers["Allow"]
    return problem_response(request, problem)


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (RFC 9110 §15.5.6). Starlette's own 405
    names only the first route that matched the path: one route per method (FastAPI's way)
    would make ``Allow: POST`` of a path that also answers DELETE."""
    methods: set[str] = set()
    for context in iter_route_contexts(list(request.app.router.routes)):
        if context.methods and compile_path(str(context.path or ""))[0].match(request.url.path):
            methods |= set(context.methods)
    return ", ".join(sorted(methods))


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)  # noqa: S101
    return problem_response(request, ValidationFailed(extra={"errors": locate(exc.errors())}))


def locate(errors: Sequence[Any]) -> list[dict[str, str]]:
    """Where each validation error is, as RFC 6901 pointers, never the value."""
    located = []
    for error in errors:
        where, *path = error["loc"]
        entry = {"detail": error["msg"]}
        if where == "body":
            entry["pointer"] = "/" + "/".join(_escape(str(part)) for part in path)
        else:
            entry["parameter"] = ".".join(str(part) for part in path)
            entry["in"] = str(where)
        located.append(entry)
    return located


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


async def _on_unavailable(request: Request, exc: Exception) -> Response:
    return problem_response(request, NotReady("The database is not available."))


def install(app: FastAPI, *, unavailable: tuple[type[Exception], ...] = ()) -> None:
    """``unavailable``: exceptions meaning a dependency is gone, answered 503."""
    for kind in unavailable:
        app.add_exception_handler(kind, _on_unavailable)
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(HTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
