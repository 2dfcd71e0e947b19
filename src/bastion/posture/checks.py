"""Configuration posture: what ``bastion check`` prints and ``serve`` enforces.

In prod every ``error`` finding refuses start-up; in dev they are shown as a
banner so nobody mistakes a dev instance for a hardened one.
"""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from bastion.posture.finding import Finding
from bastion.posture.transport import transport_findings
from bastion.security import KeyringError, MasterKey, check_key_file_permissions
from bastion.settings import ConfigError, Settings


def check_settings(settings: Settings) -> list[Finding]:
    """Every insecure setting, as findings; prod turns the serious ones into errors."""
    serious: Literal["error", "warning"] = "error" if settings.mode == "prod" else "warning"
    findings = _master_key_findings(settings, serious)

    if not settings.server.tls and not settings.server.trusted_proxies:
        findings.append(
            Finding(
                serious,
                "server.tls",
                "TLS is off and no trusted proxy terminates it",
                "set server.tls = true, or list the TLS proxy in server.trusted_proxies",
            )
        )
    if _group_or_world_accessible(settings.data_dir):
        findings.append(
            Finding(
                serious,
                "data_dir",
                f"{settings.data_dir} is accessible by group or others",
                f"run: chmod 700 {settings.data_dir}",
            )
        )
    if "*" in settings.cors.allow_origins and settings.cors.allow_credentials:
        findings.append(
            Finding(
                serious,
                "cors.allow_origins",
                "CORS allows any origin with credentials",
                "list the exact origins in cors.allow_origins",
            )
        )
    if settings.server.workers > 1 and settings.redis_url is None:
        # In memory, each worker counts on its own: with 4 workers a limit of
        # 10 lets about 40 through, and a detection rule over HTTP signals
        # (5xx, records probing, API-key 401s) needs 4 times its threshold
        # when they are spread over the workers. Refused in dev too: the
        # throttles and the rules are security controls, not a production nicety.
        findings.append(
            Finding(
                "error",
                "server.workers",
                f"{settings.server.workers} workers without redis_url would each keep their own throttle and "
                "detection counters, multiplying every rate limit and every HTTP-signal alert threshold",
                "set redis_url so the workers share counters, or set server.workers = 1",
            )
        )
    if settings.debug:
        findings.append(Finding(serious, "debug", "debug is on", "set debug = false (BASTION_DEBUG=false)"))
    if settings.alerts.webhook_urls and settings.alerts.webhook_secret is None:
        # Unsigned alerts can be forged by anyone who can reach the receiver (bastion.monitor.delivery).
        findings.append(
            Finding(
                serious,
                "alerts.webhook_secret",
                "alert webhooks would be sent unsigned",
                "set alerts.webhook_secret (BASTION_ALERTS__WEBHOOK_SECRET_FILE) to whsec_ and the base64 of "
                "32 random bytes",
            )
        )
    findings += transport_findings(settings, serious, now=datetime.now(UTC))
    findings += _audit_findings(settings, serious)  # the audit log's checkpoint sinks (docs/audit.md)
    if settings.mode == "dev":
        findings.append(
            Finding(
                "info",
                "mode",
                "running in dev mode: insecure settings are allowed",
                'set mode = "prod" for any deployment',
            )
        )
    return findings


def _master_key_findings(settings: Settings, serious: Literal["error", "warning"]) -> list[Finding]:
    fix = "set BASTION_MASTER_KEY_FILE to a 0600 file outside the data dir holding 32+ random bytes"
    try:
        text, path = settings.master_key_source()
    except ConfigError as exc:
        return [Finding("error", "master_key", str(exc), fix)]
    if text is None:
        return [Finding("error", "master_key", "no master key is configured", fix)]
    findings = []
    try:
        MasterKey.from_text(text)
    except KeyringError as exc:
        findings.append(Finding("error", "master_key", str(exc), fix))
    if path is not None:
        if _is_inside(path, settings.data_dir):
            findings.append(
                Finding(serious, "master_key_file", "the master key lies inside the data dir it protects", fix)
            )
        problem = check_key_file_permissions(path)
        if problem:
            findings.append(Finding(serious, "master_key_file", problem, f"run: chmod 600 {path}"))
    return findings


def _audit_findings(settings: Settings, serious: Literal["error", "warning"]) -> list[Finding]:
    """Checkpoints must leave the data directory: a copy beside the database is
    rewritten with it, and then nothing catches a rewrite of the whole log."""
    audit = settings.audit
    if audit.checkpoint_dir is not None and _is_inside(audit.checkpoint_dir, settings.data_dir):
        return [
            Finding(
                serious,
                "audit.checkpoint_dir",
                f"{audit.checkpoint_dir} is inside the data directory: a rewrite of the database can rewrite it too",
                "set audit.checkpoint_dir to storage the database host cannot rewrite (another disk, a mount)",
            )
        ]
    if settings.mode == "prod" and not (
        audit.checkpoint_dir or audit.checkpoint_webhook_urls or audit.checkpoint_syslog
    ):
        return [
            Finding(
                "warning",
                "audit.checkpoint_dir",
                "audit checkpoints go nowhere outside the database: a rewrite of the whole log would go unnoticed",
                "set audit.checkpoint_dir, audit.checkpoint_webhook_urls or audit.checkpoint_syslog",
            )
        ]
    return []


def _is_inside(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory.resolve())


def _group_or_world_accessible(path: Path) -> bool:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return False
    return bool(mode & (stat.S_IRWXG | stat.S_IRWXO))
