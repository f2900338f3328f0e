"""A fleet of servers, each with replicas on accelerators, fed by a workload and observed in windows.

Servers are independent (no shared resource), so each is simulated on its own up to the fleet's clock.
Requests go to ready replicas: join-shortest-queue (fewest requests held; ties to the oldest replica) or round
robin; with no ready replica they are rejected. New replicas become ready ``startup_delay`` seconds after they
are asked for; removed replicas stop taking requests and finish those they hold. A change of accelerator or
max batch starts the new replicas first and drains the old ones when the new are ready. Clock in seconds.

Perf parameters per (model, accelerator) come from the system's perf data, by attribute access only:
generation G3 ``perfParms`` alpha/beta/gamma as they are; G2 decode alpha/beta and prefill gamma/delta as
alpha = decode alpha, beta = decode beta per decoding request, gamma = 0, prompt tokens at prefill delta each,
and prefill gamma - decode alpha added to an iteration that prefills (so a decode iteration of B requests takes
alpha + beta B and a lone prefill of n tokens gamma + delta n, as in that generation's own model); G1 (decode
only) like G2 with free prompt tokens.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from .errors import SimulationError
from .lengths import LengthDist
from .replica import Replica, ReplicaConfig, Request
from .stats import Sample, replica_sample
from .workload import ArrivalStream, ServerWorkload, Workload
from .rates import Phases

ROUTINGS = ("jsq", "round-robin")
DEFAULT_QUEUE_RATIO = 10
DEFAULT_MAX_NUM_TOKENS = 8192

WINDOW_METRICS = ("offered_rate", "completed_rate", "ttft_mean", "ttft_p95", "itl_mean", "itl_p95", "running_mean",
                  "waiting_mean", "rejected", "completed", "in_tokens_mean", "out_tokens_mean", "in_tokens_cv",
                  "out_tokens_cv")


@dataclass(frozen=True)
class ServerWindow:
    """One server over one window, as vLLM would export it (rates per second, latencies in ms)."""

    offered_rate: float
    completed_rate: float
    ttft_mean: float
    ttft_p95: float
    itl_mean: float
    itl_p95: float
    running_mean: float
    waiting_mean: float
    rejected: int
    completed: int
    in_tokens_mean: float
    out_tokens_mean: float
    in_tokens_cv: float
    out_tokens_cv: float
    accelerator: str
    max_batch: int
    replicas_ready: int
    replicas_starting: int
    per_replica: Mapping[str, dict[str, float]]
    sample: Sample = field(repr=False, compare=False)

    def within_slo(self, itl_ms: float, ttft_ms: float) -> float:
        """Fraction of the window's completed requests whose own mean ITL and TTFT meet both targets."""
        return self.sample.within_slo(itl_ms, ttft_ms)


class ReplicaSummaries(Mapping):
    """Per-replica window metrics, each computed on first access (a fleet window may cover hundreds of replicas
    while a reader looks at a few)."""

    def __init__(self, entries: dict[str, tuple[Sample, dict]]):
        self._entries = entries
        self._done: dict[str, dict] = {}

    def __getitem__(self, name: str) -> dict:
        if name not in self._done:
            sample, extra = self._entries[name]
            self._done[name] = {**sample.summary(), **extra}
        return self._done[name]

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"ReplicaSummaries({list(self._entries)})"


def perf_config(perf, max_batch: int, max_queue: int, max_num_tokens: int | None) -> ReplicaConfig:
    """A replica's config from one perf-data entry (anything with generation, alpha, beta, gamma, delta)."""
    generation = getattr(perf, "generation", "G3")
    if generation == "G3":
        return ReplicaConfig(perf.alpha, perf.beta, perf.gamma, max_batch, max_queue, max_num_tokens)
    prefill_delta = getattr(perf, "delta", 0.0) if generation == "G2" else 0.0
    prefill_gamma = perf.gamma if generation == "G2" else 0.0
    return ReplicaConfig(perf.alpha, perf.beta, 0.0, max_batch, max_queue, max_num_tokens,
                         prefill_beta=prefill_delta, prefill_overhead=max(prefill_gamma - perf.alpha, 0.0))


class SimReplica:
    """A replica of a server: its engine plus when it is ready and when it stops taking requests."""

    __slots__ = ("name", "accelerator", "max_batch", "engine", "ready_at", "drain_at", "gone_at")

    def __init__(self, name: str, accelerator: str, cfg: ReplicaConfig, ready_at: float, now: float):
        self.name = name
        self.accelerator = accelerator
        self.max_batch = cfg.max_batch
        self.engine = Replica(cfg, now)
        self.ready_at = ready_at
        self.drain_at = math.inf
        self.gone_at = math.inf  # drained and empty

    def routable(self, t: float) -> bool:
        return self.ready_at <= t < self.drain_at


class ServerSim:
    """One server: its workload stream, its replicas and the router."""

    def __init__(self, name: str, model: str, perf: dict, stream: ArrivalStream | None, routing: str,
                 max_queue_of, max_num_tokens: int | None, startup_delay: float):
        self.name = name
        self.model = model
        self.perf = perf  # accelerator name -> perf entry
        self.stream = stream
        self.routing = routing
        self.max_queue_of = max_queue_of
        self.max_num_tokens = max_num_tokens
        self.startup_delay = startup_delay
        self.replicas: list[SimReplica] = []  # every replica ever, in creation order
        self.accelerator = ""
        self.max_batch = 0
        self.target = 0
        self.now = 0.0
        self._count = 0
        self._rr = 0
        self.unrouted: list[float] = []  # arrivals rejected for want of a ready replica

    # -- allocation --------------------------------------------------------------------------------------------
    def config(self, accelerator: str, max_batch: int) -> ReplicaConfig:
        perf = self.perf.get(accelerator)
        if perf is None:
            known = ", ".join(sorted(self.perf)) or "none"
            raise SimulationError(f"server {self.name}: no perf data for model {self.model!r} on accelerator "
                                  f"{accelerator!r} (known: {known})")
        return perf_config(perf, max_batch, self.max_queue_of(max_batch), self.max_num_tokens)

    def _start(self, accelerator: str, cfg: ReplicaConfig, ready_at: float) -> SimReplica:
        self._count += 1
        rep = SimReplica(f"{self.name}/r{self._count}", accelerator, cfg, ready_at, self.now)
        self.replicas.append(rep)
        return rep

    def active(self) -> list[SimReplica]:
        """Replicas started and not told to drain."""
        return [r for r in self.replicas if r.drain_at == math.inf]

    def set_allocation(self, accelerator: str, replicas: int, max_batch: int, delay: float) -> str:
        if not (isinstance(replicas, numbers.Integral) and replicas >= 0):
            raise SimulationError(f"server {self.name}: replicas must be an integer >= 0, got {replicas!r}")
        if replicas and not (isinstance(max_batch, numbers.Integral) and max_batch >= 1):
            raise SimulationError(f"server {self.name}: max_batch must be an integer >= 1, got {max_batch!r}")
        now = self.now
        old = self.active()
        before = f"{len(old)}x {self.accelerator or '-'} batch {self.max_batch}" if old else "none"
        if replicas == 0:
            for r in old:
                r.drain_at = now
            self.target = 0
            return f"stopped ({before})" if old else "unchanged"
        cfg = self.config(accelerator, max_batch)
        if old and (accelerator, max_batch) == (self.accelerator, self.max_batch):
            if replicas == len(old):
                return "unchanged"
            if replicas > len(old):
                for _ in range(replicas - len(old)):
                    self._start(accelerator, cfg, now + delay)
            else:
                # Drop replicas still starting first (latest first), then the newest ready ones.
                newest_first = sorted(range(len(old)), key=lambda i: (old[i].ready_at <= now, -old[i].ready_at, -i))
                for r in (old[i] for i in newest_first[: len(old) - replicas]):
                    r.drain_at = now
            self.target = replicas
            return f"scaled {len(old)}->{replicas}"
        ready_at = now + delay
        for _ in range(replicas):
            self._start(accelerator, cfg, ready_at)
        for r in old:  # keep serving until the new replicas are ready
            r.drain_at = ready_at
        self.accelerator, self.max_batch, self.target = accelerator, max_batch, replicas
        return f"moved {before} -> {replicas}x {accelerator} batch {max_batch}" if old else \
            f"started {replicas}x {accelerator} batch {max_batch}"

    def initial(self, accelerator: str, replicas: int, max_batch: int) -> None:
        """Replicas already running at time 0."""
        if replicas <= 0:
            return
        cfg = self.config(accelerator, max_batch)
        for _ in range(replicas):
            self._start(accelerator, cfg, 0.0)
        self.accelerator, self.max_batch, self.target = accelerator, max_batch, replicas

    # -- simulation --------------------------------------------------------------------------------------------
    def advance(self, until: float) -> None:
        if self.stream is not None:
            times, n_in, n_out = self.stream.until(until)
            route = self._jsq if self.routing == "jsq" else self._round_robin
            for t, n, m in zip(times.tolist(), n_in.tolist(), n_out.tolist()):
                rep = route(t)
                if rep is None:
                    self.unrouted.append(t)
                else:
                    rep.engine.arrive(Request(t, n, m), t)
        for r in self.replicas:
            if r.gone_at == math.inf:
                r.engine.advance(until)
                if r.drain_at <= until and not r.engine.busy and not r.engine.in_system:
                    r.gone_at = max(r.drain_at, r.engine.end)
        self.now = until

    def _jsq(self, t: float) -> SimReplica | None:
        best, held = None, 0
        for r in self.replicas:
            if r.ready_at <= t < r.drain_at:
                r.engine.advance(t)
                n = r.engine.in_system
                if best is None or n < held:
                    best, held = r, n
        return best

    def _round_robin(self, t: float) -> SimReplica | None:
        ready = [r for r in self.replicas if r.ready_at <= t < r.drain_at]
        if not ready:
            return None
        rep = ready[self._rr % len(ready)]
        self._rr += 1
        rep.engine.advance(t)
        return rep

    def window(self, since: float) -> ServerWindow:
        now = self.now
        samples, per_replica = [], {}
        for r in self.replicas:
            if r.gone_at < since or r.ready_at > now:
                continue
            s = replica_sample(r.engine, since, now)
            samples.append(s)
            per_replica[r.name] = (s, {"accelerator": r.accelerator, "max_batch": r.max_batch,
                                       "ready": r.ready_at <= now < r.drain_at})
        unrouted = np.asarray(self.unrouted)
        lost = int(np.count_nonzero((unrouted >= since) & (unrouted < now)))
        merged = Sample.merge(samples, now - since)
        merged = replace(merged, offered=merged.offered + lost, rejected=merged.rejected + lost)
        m = merged.summary()
        ready = sum(1 for r in self.replicas if r.ready_at <= now < r.drain_at)
        starting = sum(1 for r in self.replicas if r.ready_at > now and r.drain_at == math.inf)
        return ServerWindow(**{k: m[k] for k in WINDOW_METRICS}, accelerator=self.accelerator,
                            max_batch=self.max_batch, replicas_ready=ready, replicas_starting=starting,
                            per_replica=ReplicaSummaries(per_replica), sample=merged)


class Fleet:
    """Servers with replicas, driven by a workload; see the module docstring."""

    def __init__(self, servers: dict[str, ServerSim], startup_delay: float):
        self.servers = servers
        self.startup_delay = startup_delay
        self.now = 0.0

    @staticmethod
    def from_system(system, workload: Workload | None = None, allocation: dict | None = None,
                    startup_delay: float = 60.0, routing: str = "jsq", seed: int = 0,
                    max_num_tokens: int | None = DEFAULT_MAX_NUM_TOKENS,
                    queue_ratio: int = DEFAULT_QUEUE_RATIO) -> Fleet:
        """A fleet for ``system``'s servers (read by attribute access: servers with name, model, load,
        current, max_queue_size; perf entries with model, accelerator, generation, alpha..delta).

        ``allocation``: {server: (accelerator, replicas, max_batch)}; None = each server's current allocation.
        Servers the workload does not cover run at their scenario load (Poisson, fixed token lengths).
        """
        if routing not in ROUTINGS:
            raise SimulationError(f"routing must be one of {', '.join(ROUTINGS)}, got {routing!r}")
        if not (isinstance(startup_delay, (int, float)) and math.isfinite(startup_delay) and startup_delay >= 0):
            raise SimulationError(f"startup_delay must be a finite number >= 0, got {startup_delay!r}")
        servers = list(getattr(system, "servers", ()))
        if not servers:
            raise SimulationError("the scenario has no servers")
        names = {s.name for s in servers}
        if workload is not None:
            unknown = sorted(set(workload.servers) - names - {"*"})
            if unknown:
                raise SimulationError(f"{workload.source or 'workload'}: servers.{unknown[0]}: no such server in the "
                                      f"scenario")
        if allocation is not None:
            unknown = sorted(set(allocation) - names)
            if unknown:
                raise SimulationError(f"allocation: {unknown[0]}: no such server in the scenario")
        perf_by_model: dict[str, dict] = {}
        for p in getattr(system, "perf", ()):
            perf_by_model.setdefault(p.model, {})[p.accelerator] = p
        base = workload if workload is not None else Workload({})
        sims = {}
        for s in sorted(servers, key=lambda s: s.name):
            spec = base.for_server(s.name) or _scenario_load(s)
            stream = None if spec is None else ArrivalStream(spec, (base.seed, seed), s.name, base.resolution)
            fixed_queue = getattr(s, "max_queue_size", 0) or 0
            sim = ServerSim(s.name, s.model, perf_by_model.get(s.model, {}), stream, routing,
                            (lambda b, q=fixed_queue: q if q > 0 else queue_ratio * b), max_num_tokens,
                            startup_delay)
            if allocation is not None:
                acc, replicas, batch = allocation.get(s.name, ("", 0, 0))
            else:
                cur = s.current
                acc, replicas, batch = cur.accelerator, cur.num_replicas, cur.max_batch
                if replicas and not batch:
                    batch = _default_batch(sim, acc, s)
            if replicas:
                sim.initial(acc, int(replicas), int(batch))
            sims[s.name] = sim
        return Fleet(sims, float(startup_delay))

    def advance(self, until: float) -> None:
        """Simulate every server up to time ``until`` (seconds)."""
        if not until >= self.now:
            raise SimulationError(f"cannot advance to {until!r}: the fleet is at {self.now!r}")
        for sim in self.servers.values():
            sim.advance(until)
        self.now = float(until)

    def window(self, since: float) -> dict[str, ServerWindow]:
        """Per-server observations over [since, now)."""
        if not (0 <= since < self.now):
            raise SimulationError(f"window start must be in [0, now={self.now!r}), got {since!r}")
        return {name: sim.window(since) for name, sim in self.servers.items()}

    def set_allocation(self, server: str, accelerator: str, replicas: int, max_batch: int) -> str:
        """Change one server's allocation now; returns what was done ("scaled 2->3", "unchanged", ...)."""
        sim = self.servers.get(server)
        if sim is None:
            raise SimulationError(f"no server {server!r} in the fleet")
        return sim.set_allocation(accelerator, replicas, max_batch, self.startup_delay)


def _scenario_load(server) -> ServerWorkload | None:
    load = getattr(server, "load", None)
    rate = getattr(load, "arrival_rate", 0.0) if load is not None else 0.0
    if not rate:
        return None
    n = max(1.0, getattr(load, "avg_in_tokens", 0.0) or 1.0)
    m = max(1.0, getattr(load, "avg_out_tokens", 0.0) or 1.0)
    return ServerWorkload(Phases((1.0,), (float(rate),), (False,)), LengthDist.fixed(n), LengthDist.fixed(m))


def _default_batch(sim: ServerSim, accelerator: str, server) -> int:
    """inferno's rule when the allocation gives no batch: the perf data's max batch at its token count."""
    if getattr(server, "max_batch_size", 0):
        return int(server.max_batch_size)
    perf = sim.perf.get(accelerator)
    if perf is None:
        return 1
    out = getattr(getattr(server, "load", None), "avg_out_tokens", 0) or 0
    if perf.max_batch_size and perf.at_tokens and out:
        return max(int(perf.max_batch_size * perf.at_tokens // out), 1)
    return max(int(perf.max_batch_size), 1)
