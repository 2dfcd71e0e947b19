"""``OAuthService``: what every OAuth module works with, built once by the runtime.

The issuer is ``auth.public_url`` exactly (RFC 8414 §2, OpenID Discovery
§3): every absolute URL Bastion writes starts with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from bastion.access.service import AccessService
from bastion.clock import Clock
from bastion.identity.service import IdentityService
from bastion.security import TokenSigner
from bastion.sessions.service import SessionService
from bastion.settings import OAuthSettings, Settings

__all__ = ["OAuthService"]


@dataclass
class OAuthService:
    settings: Settings
    clock: Clock
    signer: TokenSigner
    identity: IdentityService
    sessions: SessionService
    access: AccessService

    @property
    def config(self) -> OAuthSettings:
        return self.settings.oauth

    @property
    def issuer(self) -> str:
        return self.settings.auth.public_url

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` ("/oauth2/token") under the issuer."""
        return self.issuer.rstrip("/") + path

    def now(self) -> int:
        """Now, in seconds since the epoch: JWT time claims (RFC 7519 §2 NumericDate)."""
        return int(self.clock.now().timestamp())
