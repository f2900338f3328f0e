"""Tune stage: perf parameters learned from the fleet's observations, gated before they reach the solver.

A tuner (:class:`InProcessTuner` around ``inferno_mip.tuner.TunerService``, or :class:`RemoteTuner` for a tuner
service URL speaking inferno's API) turns one :class:`FleetObservation` into parameters per (model, accelerator).
:class:`ParameterGate` decides what the solver gets: the seed (scenario) parameters while the tuner warms up;
never a non-positive or non-finite value; a change beyond ``max_change`` (relative, on any of alpha, beta, gamma)
only after it has been seen ``confirm_cycles`` cycles in a row (within ``max_change`` of itself); never outside
a plausibility band of ``band`` times the seed either way (drift adds up where each step looks small); and, given
recent unsaturated observations of the pair, never parameters that explain them worse than those in use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from .protocols import FleetObservation, ServerObservation

Key = tuple[str, str]  # (model, accelerator)
Params = dict[str, float]  # alpha, beta, gamma
PARAM_NAMES = ("alpha", "beta", "gamma")


class TuneError(RuntimeError):
    """The tuner could not be reached or answered nothing usable; the loop keeps the parameters it has."""


@dataclass(frozen=True)
class TuneResult:
    params: dict[Key, Params]
    warming_up: bool = False
    notes: tuple[str, ...] = ()


class Tuner(Protocol):
    def tune(self, observation: FleetObservation) -> TuneResult:
        """Feed one cycle's observations; the parameters learned so far. Raise :class:`TuneError` when down."""
        ...


SATURATED_BATCH = 0.95  # a replica running this share of its max batch, or with requests waiting, is saturated


def saturated(reading: Mapping[str, float], max_batch: int) -> bool:
    """A saturated replica's latencies follow its queue, not the perf model: the tuner must not see them."""
    waiting, running = reading.get("waiting"), reading.get("running")
    return bool((waiting is not None and waiting >= 1.0)
                or (running is not None and max_batch > 0 and running >= SATURATED_BATCH * max_batch))


def server_specs(observation: FleetObservation, max_queue: Mapping[str, int] | None = None) -> list[dict]:
    """inferno's per-replica ServerSpec list (what ``POST /tune`` takes) from an observation: one entry per
    reporting replica, or one for the server (its per-replica mean) when the collector gave no replica detail.
    TTFT is the engine's (``engine_ttft``) where it was measured, the model's TTFT being the engine's; saturated
    replicas are left out (see :func:`saturated`)."""
    specs = []
    for name in sorted(observation.servers):
        s = observation.servers[name]
        queue = (max_queue or {}).get(name, 0)
        replicas = s.replicas or ({f"{name}/all": _server_as_replica(s)} if s.complete else {})
        for rname in sorted(replicas):
            r = replicas[rname]
            ttft = r.get("engine_ttft", r.get("ttft"))
            if not all(isinstance(v, (int, float)) for v in (r.get("arrival_rate"), r.get("itl"), ttft)):
                continue
            if saturated(r, s.max_batch):
                continue
            specs.append({
                "name": rname, "model": s.model, "class": s.service_class, "maxQueueSize": queue,
                "currentAlloc": {
                    "accelerator": s.accelerator, "maxBatch": s.max_batch, "numReplicas": 1,
                    "itlAverage": r["itl"], "ttftAverage": ttft,
                    "load": {"arrivalRate": 60.0 * r["arrival_rate"], "avgInTokens": r.get("in_tokens", s.in_tokens),
                             "avgOutTokens": r.get("out_tokens", s.out_tokens)}}})
    return specs


def _server_as_replica(s: ServerObservation) -> dict:
    n = max(s.replicas_ready, 1)
    out = {"arrival_rate": s.arrival_rate / n, "itl": s.itl, "ttft": s.ttft, "in_tokens": s.in_tokens,
           "out_tokens": s.out_tokens}
    if s.engine_ttft is not None:
        out["engine_ttft"] = s.engine_ttft
    for key in ("running", "waiting"):
        if getattr(s, key) is not None:
            out[key] = getattr(s, key) / n
    return out


def _params_from_model_data(data: Mapping) -> dict[Key, Params]:
    out: dict[Key, Params] = {}
    for m in data.get("models", []) or []:
        perf = {str(k).lower(): v for k, v in (m.get("perfParms") or {}).items()}
        if m.get("name") and m.get("acc") and all(k in perf for k in PARAM_NAMES):
            out[(m["name"], m["acc"])] = {k: float(perf[k]) for k in PARAM_NAMES}
    return out


def sizing_perf_model(solve_options: Mapping | None = None) -> str:
    """The perf model the solver sizes tuned (alpha, beta, gamma: perfParms) parameters with: they mean something
    only in the model they were fitted with, so the tuner and the gate must fit this one."""
    from ..tables import COMPAT_PERF_MODEL, DEFAULT_PERF_MODEL

    opts = dict(solve_options or {})
    return opts.get("perf_model") or (COMPAT_PERF_MODEL if opts.get("compat") else DEFAULT_PERF_MODEL)["G3"]


def slo_targets(system) -> dict[Key, tuple[float, float]]:
    """(itl, ttft) per (model, accelerator): the tightest SLO of the servers running the model."""
    out: dict[Key, tuple[float, float]] = {}
    for server in system.servers:
        t = system.target(server)
        if t is None or not (t.itl > 0 and t.ttft > 0):
            continue
        for p in system.perf:
            if p.model == server.model:
                key = (p.model, p.accelerator)
                itl, ttft = out.get(key, (math.inf, math.inf))
                out[key] = (min(itl, t.itl), min(ttft, t.ttft))
    return out


class InProcessTuner:
    """``inferno_mip.tuner.TunerService`` in this process (state in memory unless its settings name a file),
    fitting `perf_model` (give the solver's, :func:`sizing_perf_model`; None: the tuner's default)."""

    def __init__(self, settings=None, max_queue: Mapping[str, int] | None = None, perf_model: str | None = None):
        from ..tuner.service import ServiceSettings, TunerService

        settings = settings or ServiceSettings()
        if perf_model is not None:
            settings = replace(settings, options=replace(settings.tuner_options, perf_model=perf_model))
        self.service = TunerService(settings)
        self.max_queue = dict(max_queue or {})

    def tune(self, observation: FleetObservation) -> TuneResult:
        from ..tuner.errors import TunerError
        from ..tuner.service import ServiceError

        specs = server_specs(observation, self.max_queue)
        notes: tuple[str, ...] = ()
        try:
            _, issues = self.service.tune(specs)
            notes = tuple(issues)
        except ServiceError as exc:  # still collecting, or no traffic: not an outage
            notes = (str(exc),)
        except TunerError as exc:
            raise TuneError(f"tuner: {exc}") from None
        return TuneResult(self.service.params(), self.service.warming_up(), notes)


class RemoteTuner:
    """A tuner service at ``url`` speaking inferno's API: ``POST /tune`` (ModelData back; 422 while it collects
    its first observations) and ``GET /warmup``."""

    def __init__(self, url: str, *, timeout: float = 5.0, max_queue: Mapping[str, int] | None = None, client=None):
        import httpx

        self.url = url.rstrip("/")
        self.client = client or httpx.Client(base_url=self.url, timeout=timeout)
        self.max_queue = dict(max_queue or {})
        self.params: dict[Key, Params] = {}  # the /tune answer names only pairs with traffic: keep the others

    def tune(self, observation: FleetObservation) -> TuneResult:
        import httpx

        specs = server_specs(observation, self.max_queue)
        if not specs:
            return TuneResult(dict(self.params), not self.params, ("no replica observations to tune on",))
        try:
            r = self.client.post("/tune", json=specs)
            if r.status_code not in (200, 422):
                raise TuneError(f"tuner {self.url}: /tune answered HTTP {r.status_code}: {r.text[:200]}")
            body = r.json()
            warm = self.client.get("/warmup")
            warming = bool(warm.json().get("warmingUp", True)) if warm.status_code == 200 else True
        except httpx.HTTPError as exc:
            raise TuneError(f"tuner {self.url}: {type(exc).__name__}: {exc}") from None
        except (ValueError, AttributeError) as exc:
            raise TuneError(f"tuner {self.url}: unreadable answer: {exc}") from None
        notes: tuple[str, ...] = ()
        if r.status_code == 200 and isinstance(body, Mapping):
            self.params.update(_params_from_model_data(body))
            notes = tuple(str(i) for i in body.get("issues", []) or [])
        else:
            notes = (f"/tune: {body.get('error', body) if isinstance(body, Mapping) else body}",)
        return TuneResult(dict(self.params), warming, notes)


@dataclass
class _Candidate:
    params: Params
    seen: int = 1


@dataclass
class ParameterGate:
    """What the solver gets: seeds while warming up, no invalid values, big jumps only once confirmed."""

    seeds: dict[Key, Params]
    max_change: float = 0.5
    confirm_cycles: int = 3
    min_gain: float = 0.1  # a change must cut the fit error on the recent observations by this share
    band: float = 3.0  # plausible: within [seed / band, seed * band] for every parameter (0: no band)
    perf_model: str | None = None  # the model the evidence check evaluates (None: the tuner's default)
    # (itl, ttft) SLO per pair: with them, tuned parameters may not claim a per-replica capacity more than
    # ``demonstrated_margin`` above the highest per-replica rate the fleet was observed serving within the SLO
    targets: dict[Key, tuple[float, float]] = field(default_factory=dict)
    demonstrated_margin: float = 0.1
    window: float = 0.0  # seconds an observation's rate is counted over (0: rates taken as exact)
    z: float = 1.0  # a shown rate counts at its lower confidence bound, z Poisson standard errors below
    accepted: dict[Key, Params] = field(default_factory=dict)
    pending: dict[Key, _Candidate] = field(default_factory=dict)

    def __post_init__(self):
        self.accepted = {k: dict(v) for k, v in self.seeds.items()}

    def apply(self, result: TuneResult | None, evidence: Mapping[Key, list] | None = None
              ) -> tuple[dict[Key, Params], list[str]]:
        """The parameters to solve with and a note per decision that was not a plain acceptance. `evidence`:
        recent observations (``inferno_mip.tuner.Observation``) per pair to check a change against (and, with
        ``targets``, to bound the capacity the change claims: :meth:`_demonstrated`)."""
        notes: list[str] = []
        if result is None:
            return self.current(), notes
        if result.warming_up:
            return self.current(), ["tuner warming up: seed parameters kept"]
        for key in sorted(result.params):
            new = result.params[key]
            label = f"{key[0]}/{key[1]}"
            bad = [k for k in PARAM_NAMES if not (math.isfinite(new.get(k, math.nan)) and new.get(k, 0.0) > 0)]
            if bad:
                notes.append(f"{label}: rejected {', '.join(f'{k}={new.get(k)}' for k in bad)} (must be > 0)")
                continue
            seed = self.seeds.get(key)
            if self.band > 0 and seed is not None and _change(seed, new) > self.band - 1.0:
                notes.append(f"{label}: tuned parameters {_fmt(new)} are more than {self.band:g}x from the "
                             f"scenario's {_fmt(seed)}: implausible, kept those in use")
                continue
            old = self.accepted.get(key)
            if old is not None and new != old and (evidence or {}).get(key):
                e_new, e_old = (fit_error(p, evidence[key], self.perf_model) for p in (new, old))
                if not e_new < (1.0 - self.min_gain) * e_old:
                    self.pending.pop(key, None)
                    notes.append(f"{label}: tuned parameters explain the last {len(evidence[key])} observations "
                                 f"no better ({e_new:.3g} vs {e_old:.3g}): kept those in use")
                    continue
            if old is not None and key in self.targets and (evidence or {}).get(key):
                new, note = self._demonstrated(key, old, new, evidence[key])
                if note:
                    notes.append(f"{label}: {note}")
                if new == old:
                    self.pending.pop(key, None)
                    continue
            if old is None or _change(old, new) <= self.max_change:
                self.accepted[key] = dict(new)
                self.pending.pop(key, None)
                continue
            cand = self.pending.get(key)
            if cand is not None and _change(cand.params, new) <= self.max_change:
                cand.seen += 1
                cand.params = dict(new)
            else:
                cand = self.pending[key] = _Candidate(dict(new))
            if cand.seen >= self.confirm_cycles:
                self.accepted[key] = dict(new)
                del self.pending[key]
                notes.append(f"{label}: jump of {_change(old, new):.0%} confirmed over {self.confirm_cycles} cycles")
            else:
                notes.append(f"{label}: jump of {_change(old, new):.0%} held for confirmation "
                             f"({cand.seen}/{self.confirm_cycles})")
        return self.current(), notes

    def _demonstrated(self, key: Key, old: Params, new: Params, evidence: list) -> tuple[Params, str]:
        """`new`, or the point on the log-line from `old` to it whose capacity the evidence supports.

        Window averages near saturation are optimistic (a queue has not built up in one window), so a fit to
        them extrapolates capacity the fleet has not shown. A change that raises the per-replica capacity
        (max rate within the SLO, sized by the solver's perf model) is identified only up to
        ``1 + demonstrated_margin`` times the highest rate an observed replica served within the SLO (at its
        lower confidence bound, :meth:`_lower_bound`; and never below what ``old`` claims): the tuner can raise
        capacity step by step as the fleet shows it, not at once. A change that lowers capacity costs cards,
        not SLOs: it passes."""
        itl, ttft = self.targets[key]
        ref = evidence[-1]
        cap_old, cap_new = (capacity(p, ref, itl, ttft, self.perf_model) for p in (old, new))
        shown = max((self._lower_bound(o.rpm) for o in evidence if o.itl <= itl and o.ttft <= ttft), default=0.0)
        limit = max(shown * (1.0 + self.demonstrated_margin), cap_old)
        if not cap_new > limit:
            return new, ""
        lo, hi = 0.0, 1.0  # capacity along the log-line is monotone in practice; bisect for the limit
        for _ in range(12):
            mid = 0.5 * (lo + hi)
            if capacity(_blend(old, new, mid), ref, itl, ttft, self.perf_model) <= limit:
                lo = mid
            else:
                hi = mid
        part = _blend(old, new, lo) if lo > 0 else old
        return part, (f"tuned parameters claim {cap_new:.3g} rpm per replica within the SLO, the fleet has shown "
                      f"{shown:.3g}: not identified, "
                      + (f"moved {lo:.0%} of the way ({_fmt(part)})" if lo > 0 else "kept those in use"))

    def _lower_bound(self, rpm: float) -> float:
        """A window's rate at `z` standard errors below what it counted (arrivals are Poisson: a 30-s window of
        a few requests per second overstates a replica's sustained rate by chance as often as it understates it,
        and the highest of several is the chance one)."""
        if not self.window > 0 or not rpm > 0:
            return rpm
        count = rpm * self.window / 60.0
        return max(rpm * (1.0 - self.z / math.sqrt(count)), 0.0)

    def current(self) -> dict[Key, Params]:
        return {k: dict(v) for k, v in sorted(self.accepted.items())}


def _fmt(p: Params) -> str:
    return "/".join(f"{p.get(k, 0.0):.3g}" for k in PARAM_NAMES)


def _blend(old: Params, new: Params, t: float) -> Params:
    """The point a share `t` along the log-line from `old` to `new`."""
    return {k: old[k] ** (1.0 - t) * new[k] ** t for k in PARAM_NAMES}


def capacity(params: Params, ref, itl: float, ttft: float, perf_model: str | None = None) -> float:
    """Max per-replica rate (rpm) within the ITL and TTFT targets (ms) at the token sizes and batch of the
    observation `ref` (0 when no rate meets them or the model cannot be evaluated)."""
    from ..queueing import QueueingError, make_perf_model
    from ..tuner.perfmodel import TUNED_PERF_MODEL

    try:
        model = make_perf_model(perf_model or TUNED_PERF_MODEL, params, in_tokens=ref.in_tokens,
                                out_tokens=ref.out_tokens, max_batch=int(ref.max_batch),
                                max_queue=int(ref.max_queue), in_tokens_cv=ref.in_tokens_cv,
                                out_tokens_cv=ref.out_tokens_cv)
        return 60.0 * model.size(ttft=ttft, itl=itl).rate
    except QueueingError:
        return 0.0


def fit_error(params: Params, observations: list, perf_model: str | None = None) -> float:
    """Mean absolute log error of the perf model's TTFT and ITL at the observations (inf if not evaluable)."""
    from ..tuner import predict

    x = [params[k] for k in PARAM_NAMES]
    errors = []
    for obs in observations:
        ttft, itl = predict(x, obs, **({"perf_model": perf_model} if perf_model else {}))
        if not (ttft > 0 and itl > 0):
            return math.inf
        errors.append(abs(math.log(ttft / obs.ttft)) + abs(math.log(itl / obs.itl)))
    return sum(errors) / len(errors) if errors else math.inf


def evidence_from(observation: FleetObservation, max_queue: Mapping[str, int] | None = None) -> dict[Key, list]:
    """The tuner's observations of this cycle per (model, accelerator) (unsaturated replicas only)."""
    from ..tuner.specs import parse_specs

    out: dict[Key, list] = {}
    for r in parse_specs(server_specs(observation, max_queue)):
        if r.observation is not None:
            out.setdefault((r.model, r.accelerator), []).append(r.observation)
    return out


def _change(old: Params, new: Params) -> float:
    """Largest relative change over the parameters, in log terms symmetric (x2 and /2 count the same)."""
    worst = 0.0
    for k in PARAM_NAMES:
        a, b = old.get(k, 0.0), new.get(k, 0.0)
        if a > 0 and b > 0:
            worst = max(worst, math.exp(abs(math.log(b / a))) - 1.0)
    return worst
