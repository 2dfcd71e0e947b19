"""The detection engine: signals in, ``Fired`` out.

``await engine.feed(signal)`` counts the signal into every rule that matches
it and returns the rules that reached their threshold. It reads no clock and
touches no database: time is ``signal.at``, state is the ``Counters`` it was
given (memory, or Redis so that instances count together). A replay of a
day of events therefore counts exactly as the live stream did, in seconds.

Once a rule has fired for a group, it fires again for that group at most
once per ``refire`` seconds (claimed in the counters, so once across
instances too); in between, the matching events are counted (``pending``)
and handed over with the next firing, so the alert's count keeps growing
without a write per attacker request.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bastion.monitor.counters import Counters, Op
from bastion.monitor.rules import RatioRule, Rule
from bastion.monitor.signals import Fired, Signal

__all__ = ["Engine", "network_of"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Per-group firing state kept in this process (bounded like the counters).
_MAX_GROUPS = 10_000
# Over-threshold counts are exact up to this many above the threshold.
_CAP_MARGIN = 1
# No key keeps more than this many timestamps or members, whatever a rule's
# threshold says: a larger threshold then never fires (docs/monitoring.md).
MAX_CAP = 10_000


def network_of(address: str) -> str | None:
    """The /24 (IPv4) or /64 (IPv6) around ``address``; None when it is not an address."""
    parts = address.split(".")
    # The common case without ipaddress's parser (a third of a failure's cost, measured).
    if len(parts) == 4 and all(part.isdigit() and len(part) <= 3 and int(part) <= 255 for part in parts):
        return f"{int(parts[0])}.{int(parts[1])}.{int(parts[2])}.0/24"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.version == 4:
        return str(ipaddress.IPv4Network((int(ip) >> 8 << 8, 24)))
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))


def _seconds(at: dt.datetime) -> float:
    return (at - _EPOCH).total_seconds()


@dataclass
class _Group:
    first_seen: dt.datetime
    last_seen: dt.datetime
    pending: int = 0
    # Until when not to ask the counters for the firing token again (a round
    # trip to Redis per event of a flood otherwise).
    quiet_until: float = 0.0


class Engine:
    def __init__(
        self,
        rules: Iterable[Rule],
        counters: Counters,
        *,
        ratio: RatioRule | None = None,
        refire: float = 30.0,
    ) -> None:
        self.rules = list(rules)
        self.ratio = ratio
        self.counters = counters
        self.refire = refire
        # tag → [(outcome or None, rule)], so a signal looks at its own rules only.
        self._by_tag: dict[str, list[tuple[str | None, Rule]]] = {}
        for rule in self.rules:
            for event in rule.events:
                tag, _, outcome = event.partition("/")
                self._by_tag.setdefault(tag, []).append((outcome or None, rule))
        self._ratio_tags: dict[str, tuple[str | None, bool]] = {}
        if ratio is not None:
            for events, failure in ((ratio.failures, True), (ratio.successes, False)):
                for event in events:
                    tag, _, outcome = event.partition("/")
                    self._ratio_tags[f"{tag}/{outcome}" if outcome else tag] = (outcome or None, failure)
        self._groups: OrderedDict[tuple[str, str], _Group] = OrderedDict()

    def watches(self, tag: str) -> bool:
        """Whether any rule reads signals with ``tag`` (the tail skips the rest cheaply)."""
        return tag in self._by_tag or any(key.partition("/")[0] == tag for key in self._ratio_tags)

    async def feed(self, signal: Signal) -> list[Fired]:
        """Count ``signal`` into every rule it matches; the rules that fire.

        All of a signal's counts go to the counters in one ``run`` (one
        round trip to Redis, however many rules match).
        """
        now = _seconds(signal.at)
        matched, ops = self._plan(signal, now)
        ratio = self._ratio_match(signal)
        if ratio is not None:
            ops.append(Op("add", f"{ratio[0].name}|all", now, ratio[0].window, 1))
            ops.append(Op("add" if ratio[1] else "total", f"{ratio[0].name}|failures", now, ratio[0].window, 1))
        if not ops:
            return []
        counts = await self.counters.run(ops)
        fired: list[Fired] = []
        for (rule, group), count in zip(matched, counts, strict=False):
            over = count >= rule.threshold
            if not over and (rule.name, group) not in self._groups:
                continue  # the common case: under the threshold, no incident going on
            hit = await self._crossed(
                rule.name, group, count=count, over=over, signal=signal, now=now, window=rule.window
            )
            if hit is not None:
                fired.append(_fired(rule, group, hit, signal))
        if ratio is not None:
            rule_ratio, failure = ratio
            attempts, failures = counts[-2], counts[-1]
            over = failure and attempts >= rule_ratio.min_volume and failures >= rule_ratio.ratio * attempts
            hit = await self._crossed(
                rule_ratio.name, "global", count=failures, over=over, signal=signal, now=now, window=rule_ratio.window
            )
            if hit is not None:
                fired.append(_fired(rule_ratio, "global", hit, signal))
        return fired

    def _plan(self, signal: Signal, now: float) -> tuple[list[tuple[Rule, str]], list[Op]]:
        """The rules ``signal`` counts into, with their groups, and the counts to make."""
        matched: list[tuple[Rule, str]] = []
        ops: list[Op] = []
        for outcome, rule in self._by_tag.get(signal.tag, ()):
            if outcome is not None and outcome != signal.outcome:
                continue
            if rule.when is not None and not rule.when(signal):
                continue
            group = _group_value(rule.group_by, signal)
            if group is None:
                continue
            key, cap = f"{rule.name}|{group}", min(rule.threshold + _CAP_MARGIN, MAX_CAP)
            if rule.distinct is None:
                ops.append(Op("hit", key, now, rule.window, cap))
            elif (member := _group_value(rule.distinct, signal)) is not None:
                ops.append(Op("distinct", key, now, rule.window, cap, member))
            else:
                continue
            matched.append((rule, group))
        return matched, ops

    def _ratio_match(self, signal: Signal) -> tuple[RatioRule, bool] | None:
        """The ratio rule and whether ``signal`` is one of its failures; None when it does not count."""
        if self.ratio is None:
            return None
        match = self._ratio_tags.get(f"{signal.tag}/{signal.outcome}") or self._ratio_tags.get(signal.tag)
        return None if match is None else (self.ratio, match[1])

    async def _crossed(
        self, rule: str, group: str, *, count: int, over: bool, signal: Signal, now: float, window: float
    ) -> tuple[dt.datetime, int] | None:
        """Whether to fire now: (first seen, events counted since the last firing) or None.

        A group quiet for a whole window ends its incident: the next firing is a new one.
        """
        state = self._groups.get((rule, group))
        if state is not None and (signal.at - state.last_seen).total_seconds() > window:
            del self._groups[(rule, group)]
            state = None
        if state is not None:
            self._groups.move_to_end((rule, group))
            state.pending += 1
            state.last_seen = max(state.last_seen, signal.at)
        if not over:
            return None
        if state is None:
            state = _Group(first_seen=signal.at, last_seen=signal.at, pending=count)
            self._groups[(rule, group)] = state
            while len(self._groups) > _MAX_GROUPS:
                self._groups.popitem(last=False)
        if now < state.quiet_until:
            return None
        if not await self.counters.claim(f"{rule}|{group}", now, self.refire):
            # Another instance fired it: ask again in a moment, not at every event.
            state.quiet_until = now + min(self.refire, 1.0)
            return None
        state.quiet_until = now + self.refire
        counted, state.pending = state.pending, 0
        return state.first_seen, counted


def _network(signal: Signal) -> str | None:
    network = network_of(signal.address) if signal.address else None
    return f"network:{network}" if network else None


_GROUPS: dict[str, Callable[[Signal], str | None]] = {
    "global": lambda _: "global",
    "address": lambda s: f"address:{s.address}" if s.address else None,
    "network": _network,
    "login": lambda s: f"login:{s.login}" if s.login else None,
    "account": lambda s: f"account:{s.account_id}" if s.account_id else None,
    "principal": lambda s: f"principal:{s.principal}" if s.principal else None,
    "api_key": lambda s: f"api_key:{s.api_key}" if s.api_key else None,
}


def _fired(rule: Rule | RatioRule, group: str, hit: tuple[dt.datetime, int], signal: Signal) -> Fired:
    first_seen, counted = hit
    return Fired(
        rule=rule.name,
        severity=rule.severity,
        group_key=group,
        count=counted,
        window_seconds=rule.window,
        first_seen=first_seen,
        last_seen=signal.at,
        actions=rule.actions,
        signal=signal,
        block_for=rule.block_for if isinstance(rule, Rule) else 0.0,
    )


def _group_value(group_by: str, signal: Signal) -> str | None:
    """The value ``signal`` is counted under for ``group_by``, with its kind (the alert's group key)."""
    value = _GROUPS.get(group_by)
    return None if value is None else value(signal)
