"""Transport posture: what ``bastion check`` reports about TLS, the admin plane and IP policy."""

from __future__ import annotations

import datetime as dt
from ipaddress import IPv4Network, IPv6Network
from typing import Literal

from bastion.network.ca import CaPaths
from bastion.network.listener import admin_mode
from bastion.network.tls import days_until_expiry, profile_of
from bastion.posture.finding import Finding
from bastion.settings import Settings

_ANYWHERE = (IPv4Network("0.0.0.0/0"), IPv6Network("::/0"))


def transport_findings(settings: Settings, serious: Literal["error", "warning"], *, now: dt.datetime) -> list[Finding]:
    """What ``bastion check`` says about TLS, the admin plane and IP policy."""
    findings: list[Finding] = []
    findings += _certificate(settings, serious, now)
    findings += _admin(settings, serious)
    if settings.server.tls and settings.http.hsts_max_age < 31_536_000:
        findings.append(
            Finding("warning", "http.hsts_max_age", "HSTS is shorter than one year", "set http.hsts_max_age = 31536000")
        )
    findings += _summary(settings)
    return findings


def _certificate(settings: Settings, serious: Literal["error", "warning"], now: dt.datetime) -> list[Finding]:
    if not (settings.server.tls or settings.admin.enabled):
        return []
    cert = settings.cert_file
    fix = "renew it, replace server.cert_file/key_file, then send SIGHUP to `bastion serve`"
    try:
        days = days_until_expiry(cert, now=now)
    except FileNotFoundError:
        return [
            Finding(serious, "server.cert_file", f"TLS certificate {cert} is missing", "run `bastion init` or set it")
        ]
    except (OSError, ValueError):
        return [Finding(serious, "server.cert_file", f"TLS certificate {cert} cannot be read", "check the file")]
    if days <= 0:
        return [Finding("error", "server.cert_file", f"TLS certificate {cert} has expired", fix)]
    if days <= settings.tls.expiry_warning_days:
        return [Finding("warning", "server.cert_file", f"TLS certificate {cert} expires in {int(days)} days", fix)]
    return []


def _admin(settings: Settings, serious: Literal["error", "warning"]) -> list[Finding]:
    admin = settings.admin
    if not admin.enabled:
        return []
    findings: list[Finding] = []
    mode = admin_mode(settings)
    if not admin.require_client_cert:
        findings.append(
            Finding(
                serious,
                "admin.require_client_cert",
                "the admin listener would accept clients without a certificate",
                "set admin.require_client_cert = true and run `bastion ca init`",
            )
        )
    elif not CaPaths.of(settings).initialised():
        where = "runs without client certificates (dev only)" if mode == "open" else "stays off"
        findings.append(Finding("warning", "admin", f"no CA yet: the admin listener {where}", "run `bastion ca init`"))
    if not admin.allow:
        findings.append(
            Finding(
                serious, "admin.allow", "the admin listener has no IP allowlist", 'set admin.allow = ["127.0.0.1/32"]'
            )
        )
    elif any(network in _ANYWHERE for network in admin.allow):
        findings.append(
            Finding(
                "warning", "admin.allow", "the admin allowlist admits every address", "list the operators' networks"
            )
        )
    if admin.port in (settings.server.port, settings.server.redirect_port):
        findings.append(
            Finding("error", "admin.port", "the admin port is also a public listener's port", "pick another port")
        )
    return findings


def _summary(settings: Settings) -> list[Finding]:
    """One short line per listener and one for the limits (the table wraps long cells)."""
    server, admin = settings.server, settings.admin
    profile = profile_of(settings)
    tls = f"TLS {profile.name} ({'+'.join(profile.versions)})" if server.tls else "plain HTTP behind a proxy"
    findings: list[Finding] = [Finding("info", "transport", f"public :{server.port} {tls}", "see docs/deployment.md")]
    if admin.enabled:
        state = {"mtls": "mTLS", "open": "NO client certificates", "off": "off until `ca init`"}[admin_mode(settings)]
        findings.append(
            Finding("info", "transport", f"admin :{admin.port} {state}", f"{len(admin.allow)} allowed network(s)")
        )
    if server.redirect_port:
        findings.append(
            Finding("info", "transport", f"redirect :{server.redirect_port} to HTTPS", "server.redirect_port")
        )
    findings.append(
        Finding(
            "info",
            "transport",
            f"headers {server.header_read_timeout:g}s/{server.max_header_count}/{server.max_header_bytes}B",
            f"{server.max_connections} connections per worker",
        )
    )
    return findings
