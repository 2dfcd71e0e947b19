"""OAuth error responses: RFC 6749 §5.2 JSON at the token-style endpoints,
and §4.1.2.1 redirects for authorization errors.

Bastion's own routes answer RFC 9457 problems; the ``/oauth2/*`` endpoints
that clients call directly (token, par, revoke, introspect, device) answer
what OAuth clients parse instead. An error is raised as ``OAuthError`` and
rendered by ``oauth_error_response``; its ``description`` is fixed text,
never client input.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from bastion.http.problems import Problem

__all__ = ["OAuthError", "json_response", "oauth_error_response"]

# RFC 6749 §5.2, RFC 8628 §3.5, RFC 9449 §7.1, RFC 6750 §3.1, OpenID Connect Core §3.1.2.6.
ERRORS = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "access_denied",
        "unsupported_response_type",
        "server_error",
        "temporarily_unavailable",
        "login_required",
        "consent_required",
        "interaction_required",
        "invalid_request_uri",
        "request_not_supported",
        "request_uri_not_supported",
        "invalid_request_object",
        "authorization_pending",
        "slow_down",
        "expired_token",
        "invalid_dpop_proof",
        "use_dpop_nonce",
        "invalid_token",
        "insufficient_scope",
        "invalid_redirect_uri",
        "invalid_client_metadata",
    }
)


class OAuthError(Problem):
    """An OAuth error: ``error`` code, fixed ``description``, HTTP ``status``, extra ``headers``.

    A ``Problem``, so that a unit of work commits what a refusal records
    (a spent assertion ``jti``, a revoked grant after a code's reuse, the
    audit event) exactly as it does for Bastion's own refusals; its own
    handler renders it as RFC 6749 §5.2 JSON rather than problem+json.
    """

    title = "OAuth error"

    def __init__(
        self,
        error: str,
        description: str | None = None,
        *,
        status: int = 400,
        headers: dict[str, str] | None = None,
    ) -> None:
        if error not in ERRORS:
            raise ValueError(f"unknown OAuth error code {error!r}")
        super().__init__(description or error, headers=dict(headers or {}))
        self.error = error
        self.description = description
        self.status = status
        if error == "invalid_client" and status == 401:
            # RFC 6749 §5.2: a 401 names the scheme the client should use.
            self.headers.setdefault("WWW-Authenticate", 'Basic realm="oauth2"')

    def body(self, request_id: str = "") -> dict[str, Any]:
        """The RFC 6749 §5.2 members (no problem+json members, no request id)."""
        body = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        return body


def oauth_error_response(error: OAuthError) -> Response:
    """The JSON answer of RFC 6749 §5.2, never cached (§5.1)."""
    return json_response(error.body(), status=error.status, headers=error.headers)


def json_response(body: dict[str, Any], *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """An OAuth JSON answer: tokens and errors are never cached (RFC 6749 §5.1)."""
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", "Pragma": "no-cache", **(headers or {})},
    )
