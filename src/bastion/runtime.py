"""The running instance's services, built once from settings.

Shared by the HTTP app (in its lifespan) and the command line, so both act
through the same code with the same keys and policies.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from bastion.access.service import AccessService
from bastion.clock import Clock
from bastion.data.sealing import FieldSealer
from bastion.data.service import DataService
from bastion.db import Database, open_database
from bastion.http.ratelimit import RateLimiter
from bastion.identity.hashing import AsyncHasher
from bastion.identity.policy import PasswordPolicy
from bastion.identity.service import IdentityService
from bastion.mail import Postman, build_mailer
from bastion.oauth.service import OAuthService
from bastion.secrets import Keyrings, open_keyrings, token_signer
from bastion.security import Argon2Params, BlindIndex, Encryptor, PasswordHasher
from bastion.sessions.service import SessionService
from bastion.settings import Settings


@dataclass
class Services:
    settings: Settings
    clock: Clock
    keys: Keyrings
    db: Database
    rate_limiter: RateLimiter
    postman: Postman
    identity: IdentityService
    sessions: SessionService
    access: AccessService
    data: DataService
    oauth: OAuthService

    async def close(self) -> None:
        await self.postman.drain()
        await self.rate_limiter.close()
        await self.db.close()


def build_services(settings: Settings, clock: Clock) -> Services:
    keys = open_keyrings(settings)
    db = open_database(settings.sqlalchemy_url)
    redis = settings.redis_url.get_secret_value() if settings.redis_url else None
    auth, passwords = settings.auth, settings.passwords
    hasher = PasswordHasher(
        Argon2Params(
            memory_cost_kib=passwords.memory_cost_kib,
            time_cost=passwords.time_cost,
            parallelism=passwords.parallelism,
        )
    )
    signer = token_signer(settings, keys)
    identity = IdentityService(
        auth,
        clock=clock,
        hasher=AsyncHasher(hasher, auth.hash_concurrency),
        policy=PasswordPolicy(
            min_length=auth.password_min_length,
            max_length=auth.password_max_length,
            service_name=auth.service_name,
        ),
        encryptor=Encryptor(keys.encryption),
    )
    sessions = SessionService(auth, clock=clock, signer=signer)
    access = AccessService(
        clock=clock,
        key_lifetime=dt.timedelta(days=auth.api_key_default_days),
        max_key_lifetime=dt.timedelta(days=auth.api_key_max_days),
    )
    return Services(
        settings=settings,
        clock=clock,
        keys=keys,
        db=db,
        rate_limiter=RateLimiter(redis or "memory://", ipv6_prefix=auth.ipv6_prefix),
        postman=Postman(build_mailer(settings)),
        identity=identity,
        sessions=sessions,
        access=access,
        data=DataService(clock=clock, db=db, sealer=FieldSealer(Encryptor(keys.encryption), BlindIndex(keys.hmac))),
        oauth=OAuthService(settings, clock, signer, identity, sessions, access),
    )
