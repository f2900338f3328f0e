"""Stability rules between the solver's recommendation and the actuator, each switchable.

Per server, in this order: hold on failure (any upstream fault: the last allocation stays, never zero for missing
data); floor (``min_replicas``: the solver may answer 0 for a server it could not place, the loop never scales a
running server to zero); scale-down window (a scale-down goes only to the highest recommendation of the last
``scale_down_window`` seconds, as Kubernetes' HPA, leaving out those sized for a demand more than ``level_shift``
above today's: the load has left that level, which is no noise to ride out); deadband (scale-downs smaller
than ``deadband`` of the current count are skipped); replicas starting (no second scale-up for the same demand,
no scale-down while replicas start); step limit (``max_replica_change`` per cycle). Then for the fleet: never
above capacity (what stability added above the recommendation goes first, then scale-ups, lowest priority first;
as a last resort anything).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from .protocols import Target

# rule names as recorded per server
HOLD, FLOOR, WINDOW, DEADBAND, STARTING, STEP, CAPACITY = (
    "hold", "floor", "scale-down-window", "deadband", "replicas-starting", "step-limit", "capacity")


@dataclass(frozen=True)
class StabilityOptions:
    """Switches of the rules above; ``off()`` keeps only the safety rules (hold, floor, capacity)."""

    scale_down_window: float = 120.0  # seconds; 0: off
    level_shift: float = 0.5  # a recommendation sized for more than (1 + this) x today's demand is past a level
    # change, not noise, and does not hold a scale-down (0: off)
    deadband: float = 0.1  # fraction of the current replicas; 0: off
    starting_aware: bool = True
    starting_tolerance: float = 0.05  # demand growth over the pending scale-up's that allows another one
    max_replica_change: int | None = None  # per server per cycle; None: off
    hold_on_failure: bool = True
    min_replicas: int = 1  # never below this for a running server (0 allows scale to zero on zero load)
    capacity_guard: bool = True

    @classmethod
    def off(cls) -> StabilityOptions:
        return cls(scale_down_window=0.0, deadband=0.0, starting_aware=False, max_replica_change=None)

    @classmethod
    def parse(cls, text: str) -> StabilityOptions:
        """From ``on``, ``off`` or comma-separated ``key=value`` (window=180,deadband=0.1,starting=on,step=2)."""
        text = text.strip()
        if text in ("", "on"):
            return cls()
        if text == "off":
            return cls.off()
        aliases = {"window": "scale_down_window", "shift": "level_shift", "step": "max_replica_change",
                   "starting": "starting_aware", "hold": "hold_on_failure", "floor": "min_replicas",
                   "capacity": "capacity_guard"}
        kw: dict = {}
        for item in text.split(","):
            key, sep, value = item.partition("=")
            name = aliases.get(key.strip(), key.strip().replace("-", "_"))
            if not sep or name not in cls.__dataclass_fields__:
                raise ValueError(f"--stability: unknown setting {item.strip()!r}; known: on, off, "
                                 + ", ".join(f"{k}=..." for k in sorted(set(aliases) | {"deadband"})))
            kw[name] = _parse_value(name, value.strip())
        return cls(**kw)


def _parse_value(name: str, value: str):
    if name in ("starting_aware", "hold_on_failure", "capacity_guard"):
        if value not in ("on", "off", "true", "false", "1", "0"):
            raise ValueError(f"--stability: {name} expects on/off, got {value!r}")
        return value in ("on", "true", "1")
    try:
        if name == "max_replica_change":
            return None if value in ("off", "none") else int(value)
        if name == "min_replicas":
            return int(value)
        number = float(value)
    except ValueError:
        raise ValueError(f"--stability: {name} expects a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"--stability: {name} must be >= 0, got {value!r}")
    return number


@dataclass(frozen=True)
class ServerInput:
    """What the stabiliser knows of one server this cycle."""

    current: Target | None  # what was last asked for (ready + starting replicas); None: not running
    recommended: Target | None  # the solver's answer; None when there is none for this server
    fault: str = ""  # why this server's decision cannot be trusted (missing metrics, solver failure, ...)
    demand: float = 0.0  # the (forecast) load the recommendation was sized for, req/s
    starting: int = 0  # replicas still starting
    priority: int = 100  # 1 highest; lower priorities give way first under the capacity guard


@dataclass(frozen=True)
class Decision:
    target: Target | None  # None: leave the server alone
    rules: tuple[str, ...] = ()  # stability rules that changed the recommendation, in order
    reason: str = ""


@dataclass
class _History:
    recommendations: deque = field(default_factory=deque)  # (time, Target, demand it was sized for)
    scale_up_demand: float = math.nan  # demand when the last scale-up was ordered


Units = Callable[[str, str], tuple[str, int]]  # (server, accelerator) -> (type, cards per replica)


class Stabiliser:
    """Keeps the per-server history the windowed rules need; ``decide`` is one cycle."""

    def __init__(self, options: StabilityOptions = StabilityOptions()):
        self.options = options
        self.history: dict[str, _History] = {}

    def decide(self, time: float, servers: Mapping[str, ServerInput], capacity: Mapping[str, float] | None = None,
               units: Units | None = None) -> dict[str, Decision]:
        """Final targets for every server named (sorted by name); capacity per type and ``units`` enable the guard."""
        decisions = {name: self._one(time, name, servers[name]) for name in sorted(servers)}
        if self.options.capacity_guard and capacity is not None and units is not None:
            decisions = _guard_capacity(decisions, servers, capacity, units, self.options.min_replicas)
        return decisions

    def _one(self, time: float, name: str, s: ServerInput) -> Decision:
        opt, cur, rec = self.options, s.current, s.recommended
        hist = self.history.setdefault(name, _History())
        if s.fault or rec is None:
            why = s.fault or "no recommendation"
            if cur is None:
                return Decision(None, (HOLD,), f"not running; {why}")
            if opt.hold_on_failure or rec is None:
                return Decision(cur, (HOLD,), f"held at {cur.replicas}: {why}")
        rules: list[str] = []
        notes: list[str] = []
        target = rec
        if cur is not None and target.replicas < opt.min_replicas <= cur.replicas:
            rules.append(FLOOR)
            notes.append(f"recommended {target.replicas} raised to the floor {opt.min_replicas}")
            target = replace(target, replicas=opt.min_replicas)
        self._remember(time, hist, target, s.demand)
        if cur is None or cur.accelerator != target.accelerator:
            return self._finish(hist, s, target, rules, notes)
        if target.replicas < cur.replicas and opt.scale_down_window > 0:
            shift = opt.level_shift
            held = max(t.replicas for _, t, d in hist.recommendations if t.accelerator == target.accelerator
                       and not (shift > 0 and d > (1 + shift) * s.demand))
            if held > target.replicas:
                rules.append(WINDOW)
                notes.append(f"scale-down to {target.replicas} limited to {min(held, cur.replicas)}, the highest "
                             f"recommendation of the last {opt.scale_down_window:g} s")
                target = replace(target, replicas=min(held, cur.replicas))
        if target.replicas < cur.replicas and opt.deadband > 0 and \
                (cur.replicas - target.replicas) < opt.deadband * cur.replicas:
            rules.append(DEADBAND)
            notes.append(f"scale-down {cur.replicas}->{target.replicas} within the {opt.deadband:.0%} deadband")
            target = replace(target, replicas=cur.replicas)
        if opt.starting_aware and s.starting > 0 and target.replicas != cur.replicas:
            pending = hist.scale_up_demand
            if target.replicas < cur.replicas:
                rules.append(STARTING)
                notes.append(f"no scale-down while {s.starting} replicas start")
                target = replace(target, replicas=cur.replicas)
            elif math.isfinite(pending) and s.demand <= pending * (1 + opt.starting_tolerance):
                rules.append(STARTING)
                notes.append(f"{s.starting} replicas starting for the same demand ({s.demand:.3g} req/s vs "
                             f"{pending:.3g}): no second scale-up")
                target = replace(target, replicas=cur.replicas)
        k = opt.max_replica_change
        if k is not None and abs(target.replicas - cur.replicas) > k:
            step = cur.replicas + (k if target.replicas > cur.replicas else -k)
            rules.append(STEP)
            notes.append(f"{cur.replicas}->{target.replicas} limited to {step} (max {k} per cycle)")
            target = replace(target, replicas=max(step, 0))
        return self._finish(hist, s, target, rules, notes)

    def _remember(self, time: float, hist: _History, target: Target, demand: float) -> None:
        hist.recommendations.append((time, target, demand))
        while hist.recommendations and hist.recommendations[0][0] < time - self.options.scale_down_window:
            hist.recommendations.popleft()

    @staticmethod
    def _finish(hist: _History, s: ServerInput, target: Target, rules: list[str], notes: list[str]) -> Decision:
        cur = s.current
        if cur is None or target.accelerator != cur.accelerator or target.replicas > cur.replicas:
            hist.scale_up_demand = s.demand
        return Decision(target, tuple(rules), "; ".join(notes))


def _guard_capacity(decisions: dict[str, Decision], servers: Mapping[str, ServerInput],
                    capacity: Mapping[str, float], units: Units, floor: int) -> dict[str, Decision]:
    """Lower targets until every type fits: stability extras and scale-ups of the lowest priorities first."""
    used: dict[str, float] = {}
    per: dict[str, tuple[str, int]] = {}
    for name, d in decisions.items():
        if d.target is not None and d.target.replicas > 0:
            per[name] = units(name, d.target.accelerator)
            used[per[name][0]] = used.get(per[name][0], 0.0) + per[name][1] * d.target.replicas

    def over(kind: str) -> bool:
        return used.get(kind, 0.0) > capacity.get(kind, math.inf) + 1e-9

    if not any(over(k) for k in used):
        return decisions
    order = sorted(per, key=lambda n: (-servers[n].priority, n))  # lowest priority first
    out = dict(decisions)

    def lower_to(name: str, bound: int) -> None:
        kind, size = per[name]
        d = out[name]
        n = d.target.replicas
        while n > bound and over(kind):
            n -= 1
            used[kind] -= size
        if n != d.target.replicas:
            note = f"lowered to {n} to stay within {kind} capacity {capacity.get(kind):g}"
            out[name] = Decision(replace(d.target, replicas=n), d.rules + (CAPACITY,),
                                 "; ".join(x for x in (d.reason, note) if x))

    def bound_of(name: str, which: str) -> int:
        s, target = servers[name], out[name].target.replicas
        cur = s.current.replicas if s.current and s.current.accelerator == out[name].target.accelerator else 0
        if which == "extras":  # what stability added on top of the recommendation (a held server has none)
            if s.fault or s.recommended is None or s.recommended.accelerator != out[name].target.accelerator:
                return target
            return max(s.recommended.replicas, floor if cur >= floor else 0)
        if which == "scale-ups":
            return min(cur, target) if target > cur else target
        return 0  # last resort: capacity wins over the floor

    for which in ("extras", "scale-ups", "anything"):
        for name in order:
            lower_to(name, bound_of(name, which))
    return out
