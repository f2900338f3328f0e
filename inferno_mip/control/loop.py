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
from .protocols import (ActuationError, Actuator, CollectError, Collector, FleetObservation, ServerObservation,
                        Target, slo_by_server)
from .record import cycle_record
from .stabilise import HOLD, Decision, ServerInput, StabilityOptions, Stabiliser
from .tune import ParameterGate, TuneError, Tuner, evidence_from, sizing_perf_model, slo_targets

EVIDENCE_KEEP = 10  # recent observations per (model, accelerator) a tuned parameter change is checked against
DEFAULT_CHURN = ChurnCosts(replica_added=2.0, replica_removed=4.0, accelerator_change=20.0, batch_change=5.0)


@dataclass(frozen=True)
class LoopConfig:
    """Everything that makes one configuration of the loop (``full()``, ``inferno()`` and ablations)."""

    period: float = 30.0  # seconds between cycles
    startup_delay: float = 60.0  # seconds a new replica takes to serve
    forecast: str = "auto"  # none, last, ewma, holt-winters, auto
    margin_quantile: float | None = 0.9  # safety margin from this forecast-error quantile; None: no margin
    max_margin: float = 0.15  # the margin never adds more than this share of the forecast
    at_least_last: bool = True  # never size for less than the load just observed
    at_most_shift: float = 0.5  # never size for more than (1 + this) x the load just observed (0: no bound)
    forecast_switch: float = 0.2  # auto keeps its forecaster until another errs less by more than this share
    stability: StabilityOptions = field(default_factory=StabilityOptions)
    churn: ChurnCosts | None = DEFAULT_CHURN
    solver: str | None = "highs"
    solve_options: Mapping = field(default_factory=dict)  # extra options for solve(): batch_rule, compat, ...
    time_limit: float = 5.0  # seconds per solve
    max_param_change: float = 0.5  # tuned-parameter jump held for confirmation beyond this relative change
    confirm_cycles: int = 3
    param_band: float = 3.0  # tuned parameters beyond this factor from the scenario's are implausible (0: off)
    demonstrated_margin: float | None = 0.1  # tuned capacity at most this above what the fleet showed (None: off)
    steady_rate: float | None = 0.25  # tune only on windows whose rate moved at most this much (None: all)
    stale_after: float | None = None  # seconds; an observation older than this holds everything (None: 2 periods)
    slo_feedback: bool = True  # correct the model's error from measured latencies (see SloFeedback)
    name: str = "full"

    @property
    def horizon(self) -> float:
        """How far ahead a decision acts: the next period plus a new replica's start-up."""
        return self.period + self.startup_delay

    @classmethod
    def inferno(cls, **kw) -> LoopConfig:
        """inferno's loop: greedy, no forecast, no stability rules, only its 10 % accelerator-switch penalty."""
        base = dict(forecast="none", margin_quantile=None, stability=StabilityOptions.off(), churn=None,
                    solver="greedy", slo_feedback=False, name="inferno")
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
                                   for p in system.perf}, config.max_param_change, config.confirm_cycles,
                                  band=config.param_band, perf_model=sizing_perf_model(config.solve_options),
                                  targets=slo_targets(system) if config.demonstrated_margin is not None else {},
                                  demonstrated_margin=config.demonstrated_margin or 0.0, window=config.period)
        self.forecasters: dict[str, object] = {}
        self.units = unit_lookup(system)
        self.priority = {s.name: system.class_by_name[s.class_name].priority
                         if s.class_name in system.class_by_name else 100 for s in system.servers}
        self.tokens = TokenMeans()
        self.feedback = SloFeedback(self.system) if config.slo_feedback else None
        self.evidence: dict = {}  # (model, accelerator) -> recent unsaturated observations, for the gate
        self.last_seen: dict[str, tuple] = {}  # server -> (rate, ready replicas) of the last cycle
        self.max_queue = {s.name: s.max_queue_size for s in system.servers}
        self.count = 0
        self.last_obs: FleetObservation | None = None
        self.targets: dict[str, Target] = {}  # what was last asked for, per server
        self.last_time = -math.inf
        self.last_demand: dict[str, float] = {}

    def options(self) -> dict:
        opts = {"solver": self.config.solver, "time_limit": self.config.time_limit,
                **dict(self.config.solve_options)}
        if self.config.churn is not None:
            opts["churn"] = self.config.churn
        if self.config.stability.max_replica_change is not None:  # in the model: the optimum within the step
            opts.setdefault("max_replica_change", self.config.stability.max_replica_change)
        return opts

    def cycle(self) -> dict:
        cfg, timing = self.config, {}
        started = clock.perf_counter()
        self.count += 1
        obs, hold_all = self._collect(timing)
        if obs is None and self.last_obs is not None:  # keep every known server in the record, held
            obs = _identity_only(self.last_obs, getattr(self.collector, "now", self.last_obs.time))
        elif obs is not None and not hold_all:
            self.last_obs = obs
        params, tune_notes = self._tune(obs, hold_all, timing)
        demand, forecasts, unmargined = self._forecast(obs, hold_all, timing)

        if self.feedback is not None and obs is not None and not hold_all:
            demand = self.feedback.apply(obs, demand, forecasts)
        t = clock.perf_counter()
        faults, scale_up_only = self._faults(obs, hold_all)
        solve_names = {n for n in obs.servers if n not in faults} if obs else set()
        outcome = None
        if solve_names:
            observed = {n: self.tokens.apply(s) for n, s in obs.servers.items()}
            reduced = cycle_system(self.system, observed, demand, solve_names, self.units)
            outcome = run_solve(reduced, self.solve, params, self.options())
            outcome, params, retry_notes = self._retry_with_seeds(reduced, outcome, params)
            tune_notes = tune_notes + retry_notes
            # margins yield to capacity, the forecast's first, then the SLO feedback's: every server served for
            # its forecast beats some with margins
            factor = self.feedback.factor if self.feedback is not None else {}
            steps = (("forecast margins", {n: v * factor.get(n, 1.0) for n, v in unmargined.items()}),
                     ("forecast margins and SLO feedback", dict(unmargined)))
            for what, lean_demand in steps:
                if not _short(outcome) or not any(lean_demand.get(n, v) < v for n, v in demand.items()):
                    break
                lean = cycle_system(self.system, observed, {**demand, **lean_demand}, solve_names, self.units)
                again = run_solve(lean, self.solve, params, self.options())
                if _short(again) < _short(outcome):
                    outcome = again
                    demand = {**demand, **lean_demand}
                    tune_notes = tune_notes + [f"capacity too short for the {what}: solved without"]
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
        if hold_all:  # nothing this cycle can be trusted: ask for nothing (a stale view must not undo orders)
            decisions = {n: Decision(None, (HOLD,), f"held: {hold_all}") for n in inputs}
        else:
            decisions = self.stabiliser.decide(obs.time if obs else 0.0, inputs, self._capacity(), self.units) \
                if inputs else {}
        for name in kept_up:
            if decisions[name].target is not None:
                d = decisions[name]
                decisions[name] = replace(d, rules=("partial-report",) + d.rules,
                                          reason="; ".join(x for x in (scale_up_only[name], d.reason) if x))
        if self.feedback is not None:  # only a full (SLO-sized) recommendation makes a later miss the model's
            for name, inp in inputs.items():
                alloc = outcome.solution[name] if outcome is not None and outcome.solution is not None \
                    and name in outcome.targets else None
                full = alloc is not None and alloc.status == "ok"
                self.feedback.recommended[name] = inp.recommended.replicas if full else 10**9
        timing["stabiliseMs"] = _ms(t)

        t = clock.perf_counter()
        actions, actuation_error = self._actuate(inputs, decisions)
        for name, inp in inputs.items():
            d = decisions.get(name)
            if d is not None and d.target is not None and not actions.get(name, "").startswith("failed"):
                self.targets[name] = d.target
            elif name not in self.targets and inp.current is not None:
                self.targets[name] = inp.current
        timing["actuateMs"] = _ms(t)
        timing["totalMs"] = _ms(started)
        return cycle_record(
            cycle=self.count, system=self.system, observation=obs, hold_all=hold_all, params=params,
            tune_notes=tune_notes, demand=demand, forecasts=forecasts, outcome=outcome, inputs=inputs,
            decisions=decisions, actions=actions, actuation_error=actuation_error, timing=timing,
            units=self.units, config=cfg, extra=getattr(self.collector, "extra", {}), last_targets=self.targets)

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
            steady, moving = self._steady(obs)
            if moving:
                notes.append(f"not steady (load or replicas changed): {', '.join(moving)} left out of tuning")
            try:
                result = self.tuner.tune(steady)
                notes.extend(result.notes)
            except TuneError as exc:
                notes.append(f"{exc}: last accepted parameters kept")
            for key, seen in evidence_from(steady, self.max_queue).items():
                self.evidence[key] = (self.evidence.get(key, []) + seen)[-EVIDENCE_KEEP:]
        params, gate_notes = self.gate.apply(result, self.evidence)
        timing["tuneMs"] = _ms(t)
        return params, notes + gate_notes

    def _steady(self, obs: FleetObservation) -> tuple[FleetObservation, list[str]]:
        """`obs` without the servers whose window was not steady: a replica starting, a ready count other than
        the last cycle's, or a rate more than ``steady_rate`` off the last cycle's. The queue of such a window
        has not settled (a surge's first window meets the SLO at rates no replica sustains), so its averages
        would teach the tuner a capacity that is not there."""
        keep, moving = {}, []
        for name, s in obs.servers.items():
            last = self.last_seen.get(name)
            rate = s.arrival_rate
            bound = self.config.steady_rate
            steady = bound is None or (last is not None and s.replicas_starting == 0 and s.replicas_ready == last[1]
                                       and rate is not None and last[0] is not None
                                       and abs(rate - last[0]) <= bound * max(last[0], 1e-9))
            self.last_seen[name] = (rate, s.replicas_ready)
            if steady:
                keep[name] = s
            else:
                moving.append(name)
        return replace(obs, servers=keep), sorted(moving)

    def _forecast(self, obs, hold_all: str, timing: dict):
        t = clock.perf_counter()
        demand, forecasts, raw = {}, {}, {}
        for name, s in (obs.servers.items() if obs and not hold_all else ()):
            if s.arrival_rate is None or not math.isfinite(s.arrival_rate):
                continue
            f = self.forecasters.get(name)
            if name not in self.forecasters:
                f = self.forecasters[name] = make_forecaster(self.config.forecast, self.config.horizon,
                                                             margin_quantile=self.config.margin_quantile,
                                                             max_margin=self.config.max_margin,
                                                             at_least_last=self.config.at_least_last,
                                                             level_shift=self.config.at_most_shift,
                                                             switch=self.config.forecast_switch)
            if f is None:
                demand[name] = raw[name] = float(s.arrival_rate)
                continue
            f.update(obs.time, float(s.arrival_rate))
            demand[name] = max(float(f.predict()), 0.0)
            raw[name] = max(float(f.raw), 0.0) if math.isfinite(f.raw) else demand[name]
            forecasts[name] = {"forecaster": f.name, "margin": float(f.margin)}
        self.last_demand.update(demand)
        timing["forecastMs"] = _ms(t)
        return demand, forecasts, raw

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
            elif not s.complete and not (s.replicas_ready + s.replicas_starting == 0 and s.arrival_rate is not None
                                         and s.in_tokens is None):
                # (a server with nothing running has no latencies: its offered load alone starts it)
                missing = [k for k in ("arrival_rate", "in_tokens", "out_tokens", "itl", "ttft")
                           if getattr(s, k) is None]
                faults[name] = f"missing metrics: {', '.join(missing)}"
            elif not s.accelerator and (s.replicas_ready or s.replicas_starting):
                faults[name] = "no accelerator reported"
            elif s.replicas and len(s.replicas) < s.replicas_ready:
                up_only[name] = f"partial report: {len(s.replicas)} of {s.replicas_ready} ready replicas"
        return faults, up_only

    def _retry_with_seeds(self, system: System, outcome, params):
        """Servers the tuned parameters make infeasible are solved again with the seed (scenario) parameters:
        a model that cannot meet an SLO the fleet met before is more likely wrong than the fleet."""
        model = {s.name: s.model for s in system.servers}
        suspects = {(model[n], s.current.accelerator) for n in outcome.faults if "infeasible-SLO" in outcome.faults[n]
                    for s in system.servers if s.name == n}
        suspects = {k for k in suspects if k in self.gate.seeds and params.get(k) != self.gate.seeds[k]}
        if not suspects:
            return outcome, params, []
        retry = {**params, **{k: self.gate.seeds[k] for k in suspects}}
        again = run_solve(system, self.solve, retry, self.options())
        targets = {**outcome.targets, **again.targets}
        faults = {n: f for n, f in again.faults.items() if n not in targets}
        notes = [f"{m}/{a}: tuned parameters make the SLO infeasible; solved with the seed parameters"
                 for m, a in sorted(suspects)]
        return replace(again, targets=targets, faults=faults), retry, notes

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


def _identity_only(obs: FleetObservation, time: float) -> FleetObservation:
    """The servers of `obs` with what they run and no measurements (for a cycle whose collection failed)."""
    blank = {n: ServerObservation(name=s.name, model=s.model, service_class=s.service_class,
                                  accelerator=s.accelerator, max_batch=s.max_batch, replicas_ready=s.replicas_ready,
                                  replicas_starting=s.replicas_starting) for n, s in obs.servers.items()}
    return FleetObservation(time=time, servers=blank)


def _waiting(s: ServerObservation) -> float | None:
    """Requests waiting at a server: its own count, else the sum over its replicas' (None: not reported)."""
    if s.waiting is not None:
        return float(s.waiting)
    counts = [r["waiting"] for r in (s.replicas or {}).values() if r.get("waiting") is not None]
    return float(sum(counts)) if counts else None


def _short(outcome) -> int:
    """Servers the solver could not serve in full (best effort, capacity-limited)."""
    solution = getattr(outcome, "solution", None)
    if solution is None:
        return 0
    return sum(a.status in ("best-effort", "capacity-limited") for a in solution.allocations)


class SloFeedback:
    """Integral correction of the perf model's error from what the fleet measures: a per-server factor on the
    demand, raised by ``up`` each cycle the server's cycle-average ITL or TTFT exceeds its SLO while it has run
    at least what was last recommended, with no replica starting, for ``settle`` cycles in a row and no queue
    drains (so the miss is the model's, not a capacity shortage's, a start-up's or the backlog they left: the
    requests queued at the old replicas stay there when new ones come up), lowered by ``down`` while both are
    under ``relax`` of their SLO; within [1, ``cap``]. The solver then sizes for load it would otherwise
    underestimate."""

    def __init__(self, system: System, up: float = 1.15, down: float = 0.97, relax: float = 0.7, cap: float = 3.0,
                 settle: int = 4):
        self.up, self.down, self.relax, self.cap, self.settle = up, down, relax, cap, settle
        self.settled: dict[str, int] = {}  # cycles in a row each server has run what was recommended
        self.slo = slo_by_server(system)
        self.factor: dict[str, float] = {}
        self.recommended: dict[str, int] = {}  # last recommendation per server (set by the loop)
        self.waiting: dict[str, float] = {}  # requests waiting at the last cycle, per server

    def excess(self, s) -> float | None:
        """The worst of measured/target over ITL and TTFT (None without measurements or targets)."""
        itl_slo, ttft_slo = self.slo.get(s.name, (0.0, 0.0))
        ratios = [m / t for m, t in ((s.itl, itl_slo), (s.ttft, ttft_slo)) if m is not None and t > 0]
        return max(ratios) if ratios else None

    def apply(self, obs, demand: Mapping[str, float], forecasts: dict) -> dict[str, float]:
        out = dict(demand)
        for name, s in obs.servers.items():
            if name not in out:
                continue
            f = self.factor.get(name, 1.0)
            e = self.excess(s)
            got_it = s.replicas_ready >= self.recommended.get(name, 0)
            waiting = _waiting(s)
            draining = waiting is not None and 1.0 <= waiting < self.waiting.get(name, math.inf)
            self.waiting[name] = waiting if waiting is not None else math.inf
            settled = self.settled[name] = self.settled.get(name, 0) + 1 \
                if got_it and s.replicas_starting == 0 else 0
            if e is not None and s.replicas_starting == 0:
                if e > 1.0 and settled >= self.settle and not draining:
                    f = min(f * self.up, self.cap)
                elif e < self.relax:
                    f = max(f * self.down, 1.0)
            self.factor[name] = f
            out[name] = demand[name] * f
            forecasts.setdefault(name, {})["sloFactor"] = f
        return out


class TokenMeans:
    """Token means per server over the last `keep` windows, weighted by completions: one window's completions
    are few and skewed (long requests finish late), and the solver must not swing with them."""

    def __init__(self, keep: int = 10):
        self.keep = keep
        self.windows: dict[str, list[tuple[float, float, float]]] = {}

    def apply(self, s):
        """`s` with its token means replaced by the smoothed ones (the window's own when there is no history)."""
        weight = float(s.throughput or 0.0)
        hist = self.windows.setdefault(s.name, [])
        if s.in_tokens is not None and s.out_tokens is not None and weight > 0:
            hist.append((weight, float(s.in_tokens), float(s.out_tokens)))
            del hist[:-self.keep]
        if not hist:
            return s
        total = sum(w for w, _, _ in hist)
        return replace(s, in_tokens=sum(w * a for w, a, _ in hist) / total,
                       out_tokens=sum(w * b for w, _, b in hist) / total)


def _ms(since: float) -> float:
    return round(1000.0 * (clock.perf_counter() - since), 3)
