"""The running instance's services, built once from settings.

Shared by the HTTP app (in its lifespan) and the command line, so both act
through the same code with the same keys and policies.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from typing import Protocol

from bastion.access.service import AccessService
from bastion.audit.notary import notary_of
from bastion.audit.sinks import sinks_of
from bastion.audit.tree import AuditLog, origin_of
from bastion.audit.verify_job import ScheduledVerify
from bastion.backups.ledger_sync import sync_ledger
from bastion.backups.schedule import scheduled_backups
from bastion.clock import Clock
from bastion.data.sealing import FieldSealer
from bastion.data.service import DataService
from bastion.db import Database, open_database
from bastion.db.leases import LeasedLoop
from bastion.http.ratelimit import RateLimiter
from bastion.identity.hashing import AsyncHasher
from bastion.identity.policy import PasswordPolicy
from bastion.identity.service import IdentityService
from bastion.incident.state import Lockdown
from bastion.logging import get_logger
from bastion.mail import Postman, build_mailer
from bastion.monitor.actions import Responder
from bastion.monitor.delivery import Dispatcher
from bastion.monitor.devices import KnownDevices
from bastion.monitor.service import MonitorService
from bastion.network.blocks import BlockList
from bastion.oauth.service import OAuthService
from bastion.privacy.erasure import Eraser
from bastion.privacy.ledger import catch_up
from bastion.privacy.retention import Retention
from bastion.rotation.job import WATCH_SECONDS, RotationJob
from bastion.rotation.reload import FileReloader
from bastion.secrets import Keyrings, open_keyrings, token_signer
from bastion.security import Argon2Params, BlindIndex, Encryptor, PasswordHasher, hash_token
from bastion.sessions.service import SessionService
from bastion.settings import Settings

log = get_logger(__name__)


class Job(Protocol):
    """Background work of a serving process (the audit sequencer, the detection
    tail, alert delivery): started by the app's lifespan, never by the command
    line. Work that must run once cluster-wide holds a lease (``bastion.db.leases``)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


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
    lockdown: Lockdown
    # Blocked addresses (the network guard reads app.state.blocks), the rules'
    # automatic responses, and the new-device notices (the monitor's tail calls both).
    blocks: BlockList
    responder: Responder
    devices: KnownDevices
    # Detection: the audit tail and the HTTP signals (also one of ``jobs``).
    monitor: MonitorService | None = None
    jobs: list[Job] = field(default_factory=list)
    # Alert delivery (bastion.monitor.delivery): the alert store enqueues into it.
    dispatcher: Dispatcher | None = None
    # The audit log's sequencer and checkpointer (also one of the jobs).
    audit: AuditLog | None = None
    # The scheduled verification of the whole log (also one of the jobs, as a LeasedLoop).
    audit_verify: ScheduledVerify | None = None
    # The [privacy] retention purges (also one of the jobs, as a LeasedLoop).
    retention: Retention | None = None
    # Erasure (bastion.privacy.erasure); its ``on_erased`` is the backups' ledger sync.
    eraser: Eraser | None = None

    async def start(self) -> None:
        """Start the serving process's background work (the app's lifespan)."""
        await self.data.start()
        try:
            await catch_up(self.settings, self.db)  # erasures whose ledger line a crash or a full disk lost
        except Exception:
            log.exception("erasure ledger: appending the lines erasures recorded failed")
        for job in self.jobs:
            await job.start()

    async def close(self) -> None:
        for job in reversed(self.jobs):
            await job.stop()
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
        login_index=BlindIndex(keys.hmac),
    )
    lockdown = Lockdown(
        db, refresh=settings.incident.state_refresh, allows_reads=settings.incident.lockdown_allows_reads
    )
    sessions = SessionService(auth, clock=clock, signer=signer, lockdown=lockdown)
    access = AccessService(
        clock=clock,
        key_lifetime=dt.timedelta(days=auth.api_key_default_days),
        max_key_lifetime=dt.timedelta(days=auth.api_key_max_days),
    )
    postman = Postman(build_mailer(settings))
    blocks = BlockList(db, clock, refresh=settings.incident.state_refresh)
    responder = Responder(
        settings=settings, clock=clock, db=db, postman=postman, identity=identity, sessions=sessions, blocks=blocks
    )
    devices = KnownDevices(db, clock, keys.hmac, postman, identity, service=auth.service_name)
    # Detection (bastion.monitor.service): the tail hands new alerts to the
    # dispatcher (delivery) and the responder (automatic responses), and
    # successful sign-ins to the known devices.
    monitor = MonitorService(settings, clock, db, responder=responder, devices=devices)
    services = Services(
        settings=settings,
        clock=clock,
        keys=keys,
        db=db,
        # Instances that share the database share their throttle counters; another
        # deployment on the same Redis counts apart (as the monitor's counters do).
        rate_limiter=RateLimiter(
            redis or "memory://",
            ipv6_prefix=auth.ipv6_prefix,
            key_prefix=f"bastion:{hash_token(settings.sqlalchemy_url)[:12]}",
        ),
        postman=postman,
        identity=identity,
        sessions=sessions,
        access=access,
        data=DataService(clock=clock, db=db, sealer=FieldSealer(Encryptor(keys.encryption), BlindIndex(keys.hmac))),
        oauth=OAuthService(settings, clock, signer, identity, sessions, access),
        monitor=monitor,
        jobs=[monitor],
        blocks=blocks,
        responder=responder,
        devices=devices,
        lockdown=lockdown,
    )
    # Alert delivery: always there to enqueue into; its sending loop runs only
    # where there is somewhere to send (no lease traffic otherwise).
    # Started before the tail and stopped after it, so a last alert is still sent.
    services.dispatcher = monitor.dispatcher = Dispatcher(settings, clock, db, services.postman.mailer)
    if settings.alerts.webhook_urls or settings.alerts.mail_to:
        services.jobs.insert(0, services.dispatcher)
    # Right after an erasure, its ledger line goes beside the backups in every destination,
    # so a restore of an older backup erases the user again (bastion.backups.ledger_sync).
    services.eraser = Eraser(
        settings, keys, db, services.data, services.postman, on_erased=functools.partial(sync_ledger, settings)
    )
    notary = notary_of(keys, origin_of(settings))
    services.audit = AuditLog(settings, db, clock, keys.hmac, notary, sinks=sinks_of(settings))
    services.jobs.append(services.audit)
    # The whole log verified every [audit] verify_interval, once cluster-wide (audit-verify):
    # a failure is an audit:verify event the monitor alerts on, without an operator's run.
    services.audit_verify = ScheduledVerify(settings, db, clock, keys.hmac, notary, origin=origin_of(settings))
    services.jobs.append(services.audit_verify.job())
    if settings.rotation.enabled:
        # Scheduled key rotations, the background rewrap, expiry reminders, reloads of changed files.
        rotation = RotationJob(settings, clock, db, keys, postman)
        interval = min(settings.rotation.check_interval, WATCH_SECONDS)
        services.jobs.append(LeasedLoop(db, "rotation", rotation.tick, interval=interval))
        # Every process watches its own certificate and *_FILE secrets (not leased).
        services.jobs.append(FileReloader(settings, clock, db, interval=interval))
    # Retention ([privacy]): purges on its interval, once cluster-wide (privacy-retention).
    services.retention = Retention(settings, db, clock)
    services.jobs.append(services.retention.job())
    # Scheduled backups, prune and drills (bastion.backups.schedule): only once there is
    # someone to encrypt to; without recipients a backup cannot be made at all.
    if settings.backups.recipients:
        services.jobs.append(scheduled_backups(settings, clock, db, keys))
    return services
