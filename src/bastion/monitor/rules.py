"""The detection rules: the built-in defaults and those of ``[[monitor.rules]]``.

A rule matches signals by tag (and optionally outcome: ``"auth:login/failure"``),
counts them per group (``group_by``: an account, a login, an address, a /24 or
/64 network, a principal, an API key, or everything), either as events or as
distinct values of another field (``distinct``), and fires when the count in
``window`` reaches ``threshold``.

Why these defaults (all on; turn one off with ``monitor.disabled_rules``, or
replace it by naming it in ``[[monitor.rules]]``):

- Per-address limits catch one noisy source (fail2ban's and CrowdSec's
  model). ``login-spraying`` catches what they miss: one password tried on
  many accounts from many addresses, each staying under every per-address
  limit. It counts *distinct logins* (a keyed hash of the address as typed,
  so unknown accounts count too: an attacker's list is mostly addresses that
  have no account) over every source, globally.
- Account-level rules alert and ask for a stronger sign-in
  (``require_step_up``), never lock: a lock is what an attacker who wants the
  owner out would ask for. The only automatic block is of the single address
  of a fast burst, for 15 minutes (the responder caps how many are live).
- Thresholds are set so that ordinary traffic — people mistyping a password
  two or three times — raises nothing (tests/unit/monitor replays 10,000
  ordinary sign-ins).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bastion.monitor.signals import Signal
from bastion.settings import MonitorSettings, RuleSettings

__all__ = ["BUILTIN_RULES", "RATIO_RULE", "RatioRule", "Rule", "active_rules"]

# Sign-in failures: a wrong password, an unknown account, a disabled or locked one.
_LOGIN_FAILURES = ("auth:login/failure", "auth:login/denied")


def _is_admin(signal: Signal) -> bool:
    return bool(signal.details.get("admin"))


@dataclass(frozen=True)
class Rule:
    name: str
    events: tuple[str, ...]
    group_by: str
    threshold: int
    window: float
    severity: str
    actions: tuple[str, ...] = ("alert",)
    distinct: str | None = None
    block_for: float = 900.0
    # A built-in rule's extra condition on the signal (admin sign-ins).
    when: Callable[[Signal], bool] | None = None

    @classmethod
    def of(cls, settings: RuleSettings) -> Rule:
        return cls(
            name=settings.name,
            events=tuple(settings.events),
            group_by=settings.group_by,
            threshold=settings.threshold,
            window=settings.window,
            severity=settings.severity,
            actions=tuple(settings.actions),
            distinct=settings.distinct,
            block_for=settings.block_for,
        )


@dataclass(frozen=True)
class RatioRule:
    """Failures over all sign-in attempts in ``window``, once there are ``min_volume`` attempts."""

    name: str
    failures: tuple[str, ...]
    successes: tuple[str, ...]
    ratio: float
    min_volume: int
    window: float
    severity: str = "high"
    actions: tuple[str, ...] = ("alert",)


def _rule(
    name: str, events: Sequence[str], group_by: str, threshold: int, *, window: float, severity: str, **kw: Any
) -> Rule:
    return Rule(name, tuple(events), group_by, threshold, window, severity, **kw)


BUILTIN_RULES: tuple[Rule, ...] = (
    # Guessing one account's password (its login as typed, so unknown accounts too).
    _rule(
        "account-brute-force",
        _LOGIN_FAILURES,
        "login",
        10,
        window=900,
        severity="high",
        actions=("alert", "require_step_up"),
    ),
    # One address failing fast: the 6th failure within 10 s; that address alone is blocked for a while.
    _rule(
        "address-burst", _LOGIN_FAILURES, "address", 6, window=10, severity="high", actions=("alert", "block_address")
    ),
    # One address failing slowly, and one network (/24, /64) failing a lot.
    _rule("address-failures", _LOGIN_FAILURES, "address", 30, window=900, severity="medium"),
    _rule("network-failures", _LOGIN_FAILURES, "network", 100, window=900, severity="medium"),
    # Password spraying and credential stuffing: many distinct logins failing, whatever the sources.
    _rule("login-spraying", _LOGIN_FAILURES, "global", 20, window=900, severity="high", distinct="login"),
    # Stolen or replayed credentials.
    _rule(
        "refresh-reuse",
        ("auth:refresh:reuse_detected", "oauth:refresh_reuse_detected"),
        "account",
        1,
        window=900,
        severity="high",
        actions=("alert", "require_step_up"),
    ),
    _rule("oauth-replay", ("oauth:code_reuse_detected", "oauth:dpop_replay"), "global", 1, window=900, severity="high"),
    _rule(
        "mfa-failures",
        ("auth:mfa/failure", "auth:mfa/denied"),
        "account",
        5,
        window=900,
        severity="high",
        actions=("alert", "require_step_up"),
    ),
    _rule(
        "recovery-code-used",
        ("auth:mfa",),
        "account",
        1,
        window=3600,
        severity="medium",
        when=lambda s: s.outcome == "success" and s.details.get("method") == "recovery_code",
    ),
    _rule("mfa-removed", ("auth:totp:disable/success",), "account", 1, window=3600, severity="medium"),
    # Changes to who may do what, and sign-ins that can make them.
    _rule("privilege-change", ("admin:user:role", "admin:role:change"), "global", 1, window=300, severity="medium"),
    _rule("admin-sign-in", ("auth:login/success",), "account", 1, window=3600, severity="low", when=_is_admin),
    _rule("api-key-created", ("auth:api_key:create/success",), "account", 1, window=300, severity="low"),
    _rule("oauth-client-created", ("oauth:client:create/success",), "global", 1, window=300, severity="low"),
    # Enumeration and scanning, seen by the HTTP observer (no event per attacker request).
    _rule("records-probing", ("http:records_denied",), "principal", 20, window=60, severity="medium"),
    _rule("api-key-401-burst", ("http:api_key_401",), "api_key", 10, window=60, severity="medium"),
    _rule("server-errors", ("http:5xx",), "global", 50, window=60, severity="high"),
    # The audit log itself.
    _rule("audit-verify-failed", ("audit:verify/failure",), "global", 1, window=3600, severity="critical"),
    _rule("audit-sink-failed", ("audit:sink_failed",), "global", 1, window=3600, severity="high"),
    _rule("audit-backdated", ("audit:backdated",), "global", 1, window=3600, severity="critical"),
    # Backups: a failed scheduled (or manual) backup, and a drill that could not restore the newest one.
    _rule("backup-failed", ("backup:create/failure",), "global", 1, window=3600, severity="critical"),
    _rule("backup-drill-failed", ("backup:drill/failure",), "global", 1, window=3600, severity="critical"),
    # The incident toolkit: whoever runs it, every contact hears of it.
    _rule("lockdown-on", ("incident:lockdown:on",), "global", 1, window=60, severity="critical"),
    _rule("lockdown-off", ("incident:lockdown:off",), "global", 1, window=60, severity="high"),
    _rule("revoke-all", ("incident:revoke_all",), "global", 1, window=60, severity="critical"),
)

RATIO_RULE = RatioRule(
    name="failure-ratio",
    failures=_LOGIN_FAILURES,
    successes=("auth:login/success",),
    ratio=0.5,
    min_volume=200,
    window=600,
)


def active_rules(settings: MonitorSettings) -> tuple[list[Rule], RatioRule | None]:
    """The built-in rules, minus the disabled, with ``[[monitor.rules]]`` replacing or adding by name."""
    disabled = set(settings.disabled_rules)
    configured = {rule.name: rule for rule in settings.rules}
    rules = [rule for rule in BUILTIN_RULES if rule.name not in disabled and rule.name not in configured]
    rules += [Rule.of(rule) for rule in configured.values() if rule.enabled and rule.name not in disabled]
    ratio = None if RATIO_RULE.name in disabled else RATIO_RULE
    return rules, ratio
