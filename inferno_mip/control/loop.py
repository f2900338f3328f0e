"""The control loop: collect -> tune -> forecast -> solve -> stabilise -> actuate -> record, one cycle per call.

Nothing upstream can stop it: a collector error or stale metrics hold every server; missing or partial metrics
hold (or allow only scale-ups for) the server concerned; a tuner outage keeps the last accepted parameters; a
solver error, timeout or an infeasible server holds what it concerns. Every cycle returns one record (inferno's
CycleRecord fields plus the forecast, parameters, decision, reason and rule per server, and phase timings).
"""

from __future__ import annotations

import math
import time as clock
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from ..spec import System
from ..tables import ChurnCosts
from .decide import current_target, cycle_system, run_solve, unit_lookup
from .forecast import make_forecaster
from .protocols import ActuationError, Actuator, CollectError, Collector, FleetObservation, Target
from .record import cycle_record
from .stabilise import ServerInput, StabilityOptions, Stabiliser
from .tune import ParameterGate, TuneError, Tuner

DEFAULT_CHURN = ChurnCosts(replica_added=2.0, replica_removed=4.0, accelerator_change=20.0, batch_change=5.0)


@dataclass(frozen=True)
class LoopConfig:
    """Everything that makes one configuration of the loop (``full()``, ``inferno()`` and ablations)."""

    period: float = 30.0  # seconds between cycles
    startup_delay: float = 60.0  # seconds a new replica takes to serve
    forecast: str = "auto"  # none, last, ewma, holt-winters, auto
    margin_quantile: float | None = 0.9  # safety margin from this forecast-error quantile; None: no margin
    stability: StabilityOptions = field(default_factory=StabilityOptions)
    churn: ChurnCosts | None = DEFAULT_CHURN
    solver: str | None = "highs"
    solve_options: Mapping = field(default_factory=dict)  # extra options for solve(): batch_rule, compat, ...
    time_limit: float = 5.0  # seconds per solve
    max_param_change: float = 0.5  # tuned-parameter jump held for confirmation beyond this relative change
    confirm_cycles: int = 3
    stale_after: float | None = None  # seconds; an observation older than this holds everything (None: 2 periods)
    name: str = "full"

    @property
    def horizon(self) -> float:
        """How far ahead a decision acts: the next period plus a new replica's start-up."""
        return self.period + self.startup_delay

    @classmethod
    def inferno(cls, **kw) -> LoopConfig:
        """inferno's loop: greedy, no forecast, no stability rules, only its 10 % accelerator-switch penalty."""
        base = dict(forecast="none", margin_quantile=None, stability=StabilityOptions.off(), churn=None,
                    solver="greedy", name="inferno")
        return cls(**{**base, **kw})


class ControlLoop:
    """One configured loop over a collector and an actuator; ``cycle()`` runs one cycle and returns its record."""

    def __init__(self, system: System, collector: Collector, actuator: Actuator, config: LoopConfig = LoopConfig(),
                 tuner: Tuner | None = None, solve: Callable[..., object] | None = None):
        from ..api import solve as solve_in_process

        self.system, self.collector, self.actuator, self.config, self.tuner = system, collector, actuator, config, tuner
        self.solve = solve or solve_in_process
        self.stabiliser = Stabiliser(config.stability)
        self.gate = ParameterGate({(p.model, p.accelerator): {"alpha": p.alpha, "beta": p.beta, "gamma": p.gamma}
                                   for p in system.perf}, config.max_param_change, config.confirm_cycles)
        self.forecasters: dict[str, object] = {}
        self.units = unit_lookup(system)
        self.priority = {s.name: system.class_by_name[s.class_name].priority
                         if s.class_name in system.class_by_name else 100 for s in system.servers}
        self.count = 0
        self.last_time = -math.inf
        self.last_demand: dict[str, float] = {}

    def options(self) -> dict:
        opts = {"time_limit": self.config.time_limit, **dict(self.config.solve_options)}
        if self.config.churn is not None:
            opts["churn"] = self.config.churn
        return opts

    def cycle(self) -> dict:
        cfg, timing = self.config, {}
        started = clock.perf_counter()
        self.count += 1
        obs, hold_all = self._collect(timing)
        params, tune_notes = self._tune(obs, hold_all, timing)
        demand, forecasts = self._forecast(obs, hold_all, timing)

        t = clock.perf_counter()
        faults, scale_up_only = self._faults(obs, hold_all)
        solve_names = {n for n in obs.servers if n not in faults} if obs else set()
        outcome = None
        if solve_names:
            reduced = cycle_system(self.system, obs.servers, demand, solve_names, self.units)
            outcome = run_solve(reduced, self.solve, params, self.options())
            faults.update(outcome.faults)
        timing["optimizeMs"] = _ms(t)

        t = clock.perf_counter()
        inputs, kept_up = {}, set()
        for name, s in (obs.servers.items() if obs else ()):
            cur = current_target(s) if s.accelerator else None
            rec = outcome.targets.get(name) if outcome else None
            if rec is not None and name in scale_up_only and cur is not None and rec.replicas < cur.replicas:
                rec, _ = cur, kept_up.add(name)  # an under-count must not shrink the server
            inputs[name] = ServerInput(cur, rec, fault=faults.get(name, ""), demand=demand.get(name, 0.0),
                                       starting=s.replicas_starting, priority=self.priority.get(name, 100))
        decisions = self.stabiliser.decide(obs.time if obs else 0.0, inputs, self._capacity(), self.units) \
            if inputs else {}
        for name in kept_up:
            if decisions[name].target is not None:
                d = decisions[name]
                decisions[name] = replace(d, rules=("partial-report",) + d.rules,
                                          reason="; ".join(x for x in (scale_up_only[name], d.reason) if x))
        timing["stabiliseMs"] = _ms(t)

        t = clock.perf_counter()
        actions, actuation_error = self._actuate(inputs, decisions)
        timing["actuateMs"] = _ms(t)
        timing["totalMs"] = _ms(started)
        return cycle_record(
            cycle=self.count, system=self.system, observation=obs, hold_all=hold_all, params=params,
            tune_notes=tune_notes, demand=demand, forecasts=forecasts, outcome=outcome, inputs=inputs,
            decisions=decisions, actions=actions, actuation_error=actuation_error, timing=timing,
            units=self.units, config=cfg, extra=getattr(self.collector, "extra", {}))

    # -- stages ---------------------------------------------------------------------------------------------
    def _collect(self, timing: dict) -> tuple[FleetObservation | None, str]:
        t = clock.perf_counter()
        try:
            obs = self.collector.collect()
        except CollectError as exc:
            timing["collectMs"] = _ms(t)
            return None, f"collector error: {exc}"
        timing["collectMs"] = _ms(t)
        stale = self.config.stale_after if self.config.stale_after is not None else 2 * self.config.period
        if obs.time <= self.last_time:
            return obs, f"stale metrics: observation time {obs.time:g} s not after the last one"
        now = getattr(self.collector, "now", None)
        if now is not None and now - obs.time > stale:
            return obs, f"stale metrics: {now - obs.time:g} s old (limit {stale:g} s)"
        self.last_time = obs.time
        if not obs.servers:
            return obs, "collector reported no servers"
        return obs, ""

    def _tune(self, obs, hold_all: str, timing: dict):
        t = clock.perf_counter()
        notes: list[str] = []
        result = None
        if self.tuner is not None and obs is not None and not hold_all:
            try:
                result = self.tuner.tune(obs)
                notes.extend(result.notes)
            except TuneError as exc:
                notes.append(f"{exc}: last accepted parameters kept")
        params, gate_notes = self.gate.apply(result)
        timing["tuneMs"] = _ms(t)
        return params, notes + gate_notes

    def _forecast(self, obs, hold_all: str, timing: dict):
        t = clock.perf_counter()
        demand, forecasts = {}, {}
        for name, s in (obs.servers.items() if obs and not hold_all else ()):
            if s.arrival_rate is None or not math.isfinite(s.arrival_rate):
                continue
            f = self.forecasters.get(name)
            if name not in self.forecasters:
                f = self.forecasters[name] = make_forecaster(self.config.forecast, self.config.horizon,
                                                             margin_quantile=self.config.margin_quantile)
            if f is None:
                demand[name] = float(s.arrival_rate)
                continue
            f.update(obs.time, float(s.arrival_rate))
            demand[name] = max(float(f.predict()), 0.0)
            forecasts[name] = {"forecaster": f.name, "margin": float(f.margin)}
        self.last_demand.update(demand)
        timing["forecastMs"] = _ms(t)
        return demand, forecasts

    def _faults(self, obs, hold_all: str) -> tuple[dict[str, str], dict[str, str]]:
        """Servers to hold (and why), and servers allowed only to scale up (partial reports)."""
        if obs is None:
            return {}, {}
        if hold_all:
            return {n: hold_all for n in obs.servers}, {}
        faults, up_only = {}, {}
        known = {s.name for s in self.system.servers}
        for name, s in obs.servers.items():
            if name not in known:
                faults[name] = "not in the scenario"
            elif not s.complete:
                missing = [k for k in ("arrival_rate", "in_tokens", "out_tokens", "itl", "ttft")
                           if getattr(s, k) is None]
                faults[name] = f"missing metrics: {', '.join(missing)}"
            elif not s.accelerator:
                faults[name] = "no accelerator reported"
            elif s.replicas and len(s.replicas) < s.replicas_ready:
                up_only[name] = f"partial report: {len(s.replicas)} of {s.replicas_ready} ready replicas"
        return faults, up_only

    def _capacity(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.system.capacity.items()} if not self.system.optimizer.unlimited else {}

    def _actuate(self, inputs, decisions) -> tuple[dict[str, str], str]:
        changes: dict[str, Target] = {}
        for name, d in decisions.items():
            if d.target is not None and d.target != inputs[name].current:
                changes[name] = d.target
        if not changes:
            return {}, ""
        try:
            return dict(self.actuator.actuate(changes)), ""
        except ActuationError as exc:
            return {}, f"actuator error: {exc}"


def _ms(since: float) -> float:
    return round(1000.0 * (clock.perf_counter() - since), 3)
