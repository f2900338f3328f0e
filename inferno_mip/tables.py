"""Candidate tables: every (server, accelerator) option with its replicas, cost, units and predicted metrics.

A candidate follows inferno's rules (spec optimizer.md §2): batch size from the perf data scaled by output tokens
(or, with batch_rule "optimal", the smallest batch with near-peak SLO-feasible throughput, capped there; with
"all", both and the current batch, as separate candidates for the solver to choose from),
queue 10·N, the max SLO-feasible rate per replica from the perf model (all candidates sized in one vectorised
pass), replicas = max(ceil(rate/rateStar), min),
cost = acc.cost · accCount · R, units = R · accCount · multiplicity, and inferno's transition value against the
current allocation. Solvers only choose among candidates; the table is their single source of truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache

import numpy as np

from .policies import BATCH_RULES
from .queueing import InfeasibleTarget, Metrics, QueueingError, make_perf_model
from .queueing.concurrency import DEFAULT_EPSILON, throughput_curves
from .queueing.limits import MAX_BATCH
from .queueing.sizing import analyze_models, size_models
from .spec import Accelerator, PerfData, Server, System, reference_problem

QUEUE_TO_BATCH_RATIO = 10
ACCEL_PENALTY_FACTOR = 0.1
CEIL_RTOL = 1e-9  # total/rateStar within this of an integer counts as that integer (float noise, not load)
# G3 perfParms: the iteration-level model (queue-analysis v0.7's costs, what a continuous-batching server measures)
DEFAULT_PERF_MODEL = {"G1": "v02", "G2": "v02", "G3": "iteration"}
COMPAT_PERF_MODEL = {"G1": "v02", "G2": "v02", "G3": "old3"}  # what inferno's sample solutions were made with


@dataclass(frozen=True)
class ChurnCosts:
    """What changing a running allocation costs, in the cost unit of the objective (per hour, like a candidate's
    cost); added to each candidate's transition value so the solver trades churn against cost. Per replica
    added, per replica removed, for a change of accelerator (all replicas restart: the removals and additions
    are charged too) and for a change of max batch size on the same accelerator. A server with nothing running
    pays only for the replicas it adds."""

    replica_added: float = 0.0
    replica_removed: float = 0.0
    accelerator_change: float = 0.0
    batch_change: float = 0.0

    def __post_init__(self):
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"churn.{name}: must be a finite number >= 0, got {v!r}")

    def of(self, server: Server, acc: str, replicas: int, batch: int) -> float:
        """The churn cost of moving `server` from its current allocation to (acc, replicas, batch)."""
        cur = server.current
        if not cur.accelerator or cur.num_replicas == 0:
            return self.replica_added * replicas
        if cur.accelerator != acc:
            return self.accelerator_change + self.replica_removed * cur.num_replicas + self.replica_added * replicas
        delta = replicas - cur.num_replicas
        cost = self.replica_added * max(delta, 0) + self.replica_removed * max(-delta, 0)
        return cost + (self.batch_change if cur.max_batch and batch != cur.max_batch else 0.0)


@dataclass(frozen=True)
class Settings:
    """How candidates are computed. ``compat`` reproduces inferno exactly; the defaults fix its known bugs."""

    compat: bool = False
    perf_model: str | None = None  # None: by perf-data generation (DEFAULT_PERF_MODEL, compat: COMPAT_PERF_MODEL)
    queue_ratio: int = QUEUE_TO_BATCH_RATIO
    max_num_tokens: int = 8192
    # Max batch size: "inferno" = perf maxBatchSize·atTokens/outTokens (a memory limit); "optimal" = the smallest
    # batch with near-peak SLO-feasible throughput (queue-analysis v0.8), capped at that memory limit; "all" =
    # a candidate for each of these and for the current batch (the MIP presolve keeps the dominant one).
    batch_rule: str = "inferno"
    churn: ChurnCosts | None = None  # costs of changing the current allocation, added to the transition value

    def __post_init__(self):
        if isinstance(self.churn, dict):
            object.__setattr__(self, "churn", ChurnCosts(**self.churn))
        if self.batch_rule not in BATCH_RULES:
            raise ValueError(f"unknown batch rule {self.batch_rule!r}; expected one of {BATCH_RULES}")

    def perf_model_for(self, perf: PerfData) -> str:
        return self.perf_model or (COMPAT_PERF_MODEL if self.compat else DEFAULT_PERF_MODEL)[perf.generation]


@dataclass(frozen=True)
class ServerRow:
    """Per-server facts the solvers and reports need."""

    server: Server
    priority: int
    total_rate: float  # req/s the replicas must serve
    itl_target: float
    ttft_target: float
    tps_target: float
    zero_load: bool
    invalid: str = ""  # reason when the server cannot be sized at all
    rejected: tuple[str, ...] = ()  # why each accelerator gave no candidate


@dataclass(frozen=True)
class CandidateTable:
    """Candidates as parallel arrays, grouped by server and sorted by (value, cost, units, accelerator name)."""

    rows: tuple[ServerRow, ...]
    accelerators: tuple[Accelerator, ...]
    types: tuple[str, ...]
    capacity: np.ndarray  # cards per type (float64; +inf where unlimited)
    server: np.ndarray  # int, index into rows
    acc: np.ndarray  # int, index into accelerators
    type: np.ndarray  # int, index into types
    batch: np.ndarray
    queue: np.ndarray
    replicas: np.ndarray
    cost: np.ndarray
    value: np.ndarray
    units: np.ndarray  # cards of `type` for all replicas
    unit_per_replica: np.ndarray
    rate_star: np.ndarray  # max SLO-feasible req/s per replica
    preset_metrics: np.ndarray  # (n, 3) itl, ttft, rho where fixed without the perf model (zero load), else NaN
    binding: tuple[str, ...]  # target that limits the rate per replica: itl, ttft, tps, none, zero-load
    perf: tuple[PerfData, ...]  # perf data each candidate was sized with
    settings: Settings = field(default_factory=Settings)

    def __len__(self) -> int:
        return len(self.server)

    @cached_property
    def _offsets(self) -> np.ndarray:
        """Candidates are contiguous per server: those of server i are offsets[i]:offsets[i + 1]."""
        return np.searchsorted(self.server, np.arange(len(self.rows) + 1))

    def of_server(self, i: int) -> np.ndarray:
        """Candidate indices of server i, best (lowest value) first."""
        return np.arange(self._offsets[i], self._offsets[i + 1])

    @property
    def itl(self) -> np.ndarray:
        """ITL (ms) of each candidate's replicas at the server's load (computed on first use)."""
        return self.load_metrics(np.arange(len(self)))[:, 0]

    @property
    def ttft(self) -> np.ndarray:
        return self.load_metrics(np.arange(len(self)))[:, 1]

    @property
    def rho(self) -> np.ndarray:
        return self.load_metrics(np.arange(len(self)))[:, 2]

    @cached_property
    def _load_metrics(self) -> np.ndarray:
        return self.preset_metrics.copy()

    def load_metrics(self, cands) -> np.ndarray:
        """(itl, ttft, rho) of candidates `cands` with all their replicas sharing the server's load.

        Computed in one vectorised pass for those not known yet and kept: a solve needs them for the chosen
        candidates only, not for the whole table.
        """
        cands = np.asarray(cands, dtype=np.int64)
        known = self._load_metrics
        todo = cands[np.isnan(known[cands, 0])]
        if len(todo):
            todo = np.flatnonzero(np.bincount(todo))  # unique and sorted; np.unique would import numpy.ma
            rows = [self.rows[int(i)] for i in self.server[todo]]
            models = [_perf_model(self.settings, self.perf[c], row.server, int(self.batch[c]), int(self.queue[c]))
                      for c, row in zip(todo.tolist(), rows)]
            rates = [row.total_rate / int(self.replicas[c]) for c, row in zip(todo.tolist(), rows)]
            for c, m in zip(todo.tolist(), analyze_models(models, rates)):
                known[c] = (m.itl, m.ttft, m.rho)
        return known[cands]

    def evaluate(self, c: int, rate_per_replica: float) -> Metrics:
        """Metrics of candidate c's replica at a given rate (above its SLO rate it may be overloaded)."""
        row = self.rows[int(self.server[c])]
        model = _perf_model(self.settings, self.perf[c], row.server, int(self.batch[c]), int(self.queue[c]),
                            overload=True)
        return model.analyze(rate_per_replica)


def build_table(system: System, settings: Settings = Settings(), cache: SizingCache | None = None) -> CandidateTable:
    """All candidates of all servers of `system` (servers in name order).

    With a `cache` (see :class:`SizingCache`) servers sized before with the same perf inputs are not sized again;
    the table is the same as without it.
    """
    if cache is not None:
        return cache.build(system, settings)
    unlimited = system.optimizer.unlimited
    types = tuple(sorted({a.type for a in system.accelerators} | set(system.capacity)))
    capacity = np.array([math.inf if unlimited else float(system.capacity.get(t, 0)) for t in types])
    type_index = {t: k for k, t in enumerate(types)}
    acc_index = {a.name: j for j, a in enumerate(system.accelerators)}

    plans = _sized_plans(system, system.servers, settings)
    rows: list[ServerRow] = []
    columns: dict[str, list] = {name: [] for name in _COLUMNS}
    for i, (row, slots) in enumerate(plans):
        candidates, rejected = _finished(slots)
        for cand in candidates:
            cand["value"] = transition_value(row.server, cand["acc"].name, cand["replicas"], cand["cost"])
            if settings.churn is not None:
                cand["value"] += settings.churn.of(row.server, cand["acc"].name, cand["replicas"], cand["batch"])
        rows.append(_with_rejected(row, rejected) if rejected or row.rejected else row)
        candidates.sort(key=lambda c: (c["value"], c["cost"], c["units"], c["acc"].name, c["batch"]))
        for cand in candidates:
            acc = cand["acc"]
            cand.update(server=i, acc=acc_index[acc.name], type=type_index[acc.type])
            for name in _COLUMNS:
                columns[name].append(cand[name])

    def col(name: str, dtype) -> np.ndarray:
        return np.array(columns[name], dtype=dtype)

    return CandidateTable(
        rows=tuple(rows), accelerators=system.accelerators, types=types, capacity=capacity,
        server=col("server", np.int64), acc=col("acc", np.int64), type=col("type", np.int64),
        batch=col("batch", np.int64), queue=col("queue", np.int64), replicas=col("replicas", np.int64),
        cost=col("cost", np.float64), value=col("value", np.float64), units=col("units", np.int64),
        unit_per_replica=col("unit_per_replica", np.int64), rate_star=col("rate_star", np.float64),
        preset_metrics=np.column_stack([col("itl", np.float64), col("ttft", np.float64),
                                        col("rho", np.float64)]).reshape(-1, 3),
        binding=tuple(columns["binding"]), perf=tuple(columns["perf"]), settings=settings)


def _sized_plans(system: System, servers, settings: Settings) -> list[tuple[ServerRow, list]]:
    """Each server's row and slots, every pending slot sized (in one vectorised pass)."""
    plans = [_plan_server(system, server, settings) for server in servers]
    if settings.batch_rule == "all":
        plans = [(row, _with_batch_variants(slots, settings)) for row, slots in plans]
    _size_all([slot for _, slots in plans for slot in slots if isinstance(slot, _Pending)], settings)
    return plans


def _finished(slots: list) -> tuple[list[dict], list[str]]:
    """A server's sized candidates (one per accelerator and batch size) and the reasons of the rejected ones."""
    candidates, rejected, seen = [], [], set()
    for slot in slots:
        cand = slot.result if isinstance(slot, _Pending) else slot
        if isinstance(cand, str):
            rejected.append(cand)
        elif cand is not None and (cand["acc"].name, cand["batch"]) not in seen:  # batch variants may coincide
            seen.add((cand["acc"].name, cand["batch"]))
            candidates.append(cand)
    return candidates, rejected


@dataclass(frozen=True)
class _Sized:
    """A server's candidates as far as they do not depend on its arrival rate or current allocation."""

    rejected: tuple[str, ...]
    acc: np.ndarray  # index into the system's accelerators
    batch: np.ndarray
    queue: np.ndarray
    rate_star: np.ndarray
    unit_per_replica: np.ndarray
    unit_cost: np.ndarray  # cost of one replica
    fixed_replicas: np.ndarray  # zero-load candidates: their replicas; -1 where sized from the load
    preset: np.ndarray  # (n, 3)
    binding: tuple[str, ...]
    perf: tuple[PerfData, ...]


class SizingCache:
    """Sized candidates per server, kept across :func:`build_table` calls on one fleet (a controller's cycles).

    The rate a replica sustains within its SLO depends on the perf data, the targets, the token counts and the
    batch and queue sizes, not on the arrival rate: a load change only changes replica counts, and with them
    costs, units and transition values, which every call recomputes (vectorised), as it does for a change of the
    current allocation. Entries are keyed by a server's perf inputs; the cache empties itself when the
    accelerators, perf data, classes or settings change. The table is the same as an uncached build's.
    """

    def __init__(self, max_entries: int = 100_000):
        self.max_entries = max_entries
        self._context: tuple | None = None
        self._entries: dict[tuple, _Sized] = {}
        self.hits = self.misses = 0

    def build(self, system: System, settings: Settings) -> CandidateTable:
        context = (settings, system.accelerators, system.perf, system.classes)
        if context != self._context:
            self._context, self._entries = context, {}
        keys = [_sizing_key(server, settings) for server in system.servers]
        missing = {}
        for server, key in zip(system.servers, keys):
            if key not in self._entries:
                missing.setdefault(key, server)
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            if len(self._entries) + len(missing) > self.max_entries:
                self._entries = {}
            acc_index = {a.name: j for j, a in enumerate(system.accelerators)}
            for key, (_, slots) in zip(missing, _sized_plans(system, list(missing.values()), settings)):
                self._entries[key] = _sized(*_finished(slots), acc_index)
        return _assemble(system, settings, [self._entries[k] for k in keys])


def _sizing_key(server: Server, settings: Settings) -> tuple:
    """What a server's sizing depends on besides the fleet's accelerators, perf data, classes and settings."""
    load, current = server.load, server.current
    zero_load = load.arrival_rate == 0 or load.avg_out_tokens == 0
    return (server.model, server.class_name, load.avg_in_tokens, load.avg_out_tokens, load.in_tokens_cv,
            load.out_tokens_cv, zero_load, server.max_batch_size, server.max_queue_size,
            server.min_num_replicas if zero_load else None,
            current.accelerator if server.keep_accelerator else None,
            (current.accelerator, current.max_batch) if settings.batch_rule == "all" else None)


def _sized(candidates: list[dict], rejected: list[str], acc_index: dict[str, int]) -> _Sized:
    def col(dtype, fn) -> np.ndarray:
        return np.array([fn(c) for c in candidates], dtype=dtype)

    return _Sized(
        rejected=tuple(rejected), acc=col(np.int64, lambda c: acc_index[c["acc"].name]),
        batch=col(np.int64, lambda c: c["batch"]), queue=col(np.int64, lambda c: c["queue"]),
        rate_star=col(np.float64, lambda c: c["rate_star"]),
        unit_per_replica=col(np.int64, lambda c: c["unit_per_replica"]),
        unit_cost=col(np.float64, lambda c: c["acc"].cost * c["perf"].acc_count),
        fixed_replicas=col(np.int64, lambda c: c["replicas"] if c["binding"] == "zero-load" else -1),
        preset=col(np.float64, lambda c: (c["itl"], c["ttft"], c["rho"])).reshape(-1, 3),
        binding=tuple(c["binding"] for c in candidates), perf=tuple(c["perf"] for c in candidates))


def _assemble(system: System, settings: Settings, sized: list[_Sized]) -> CandidateTable:
    """The candidate table from each server's sized candidates: replicas, cost, units and value at its load and
    current allocation, computed as the uncached build does (same float operations, same order)."""
    unlimited = system.optimizer.unlimited
    types = tuple(sorted({a.type for a in system.accelerators} | set(system.capacity)))
    capacity = np.array([math.inf if unlimited else float(system.capacity.get(t, 0)) for t in types])
    accs = system.accelerators
    acc_type = np.array([types.index(a.type) for a in accs], dtype=np.int64)
    acc_names = [a.name for a in accs]
    name_rank = np.argsort(np.argsort(np.array(acc_names, dtype=object), kind="stable"), kind="stable")
    rows = []
    for server, s in zip(system.servers, sized):
        row = _server_row(system, server, settings)
        rows.append(_with_rejected(row, list(s.rejected)) if s.rejected or row.rejected else row)
    sizes = np.array([len(s.acc) for s in sized], dtype=np.int64)
    server = np.repeat(np.arange(len(rows), dtype=np.int64), sizes)

    def cat(name: str, dtype) -> np.ndarray:
        return np.concatenate([getattr(s, name) for s in sized] or [np.zeros(0)]).astype(dtype, copy=False)

    acc, rate_star, fixed = cat("acc", np.int64), cat("rate_star", np.float64), cat("fixed_replicas", np.int64)
    total = np.array([r.total_rate for r in rows], dtype=np.float64)[server]
    min_replicas = np.array([r.server.min_num_replicas for r in rows], dtype=np.int64)[server]
    with np.errstate(divide="ignore", invalid="ignore"):
        needed = np.maximum(np.ceil((total / rate_star) * (1 - CEIL_RTOL)), min_replicas)
    replicas = np.where(fixed >= 0, fixed, needed).astype(np.int64)
    cost = cat("unit_cost", np.float64) * replicas
    upr = cat("unit_per_replica", np.int64)
    units = replicas * upr
    current = [r.server.current for r in rows]
    cur_cost = np.array([c.cost for c in current], dtype=np.float64)[server]
    cur_replicas = np.array([c.num_replicas for c in current], dtype=np.int64)[server]
    cur_acc = np.array([acc_names.index(c.accelerator) if c.accelerator in acc_names else -1 for c in current],
                       dtype=np.int64)[server]
    value = np.where(cur_acc == acc, np.where(cur_replicas == replicas, 0.0, cost - cur_cost),
                     ACCEL_PENALTY_FACTOR * (cur_cost + cost) + (cost - cur_cost))
    batch = cat("batch", np.int64)
    binding = tuple(b for s in sized for b in s.binding)
    perf = tuple(p for s in sized for p in s.perf)
    if settings.churn is not None:
        value = value + np.array([settings.churn.of(rows[i].server, acc_names[a], int(r), int(b))
                                  for i, a, r, b in zip(server.tolist(), acc.tolist(), replicas.tolist(),
                                                        batch.tolist())], dtype=np.float64)
    order = np.lexsort((batch, name_rank[acc], units, cost, value, server))
    preset = np.concatenate([s.preset for s in sized] or [np.zeros((0, 3))]).reshape(-1, 3)
    return CandidateTable(
        rows=tuple(rows), accelerators=accs, types=types, capacity=capacity, server=server, acc=acc[order],
        type=acc_type[acc[order]], batch=batch[order], queue=cat("queue", np.int64)[order],
        replicas=replicas[order], cost=cost[order], value=value[order], units=units[order],
        unit_per_replica=upr[order], rate_star=rate_star[order], preset_metrics=preset[order],
        binding=tuple(binding[k] for k in order.tolist()), perf=tuple(perf[k] for k in order.tolist()),
        settings=settings)


_COLUMNS = ("server", "acc", "type", "batch", "queue", "replicas", "cost", "value", "units", "unit_per_replica",
            "rate_star", "itl", "ttft", "rho", "binding", "perf")


@dataclass
class _Pending:
    """A (server, accelerator) candidate waiting for the vectorised sizing pass; result is a dict or a reason."""

    server: Server
    row: ServerRow
    acc: Accelerator
    perf: PerfData
    batch: int
    queue: int = 0
    model: object = None
    result: dict | str | None = None
    optimal: bool = True  # move to the optimal batch when the batch rule asks for it


def _with_batch_variants(slots: list, settings: Settings) -> list:
    """batch_rule "all": per (server, accelerator) inferno's batch, the optimal one, and the current batch."""
    out = []
    for slot in slots:
        out.append(slot)
        if not isinstance(slot, _Pending):
            continue
        slot.optimal = False  # this one keeps inferno's batch
        out.append(replace(slot, optimal=True))
        current = slot.server.current
        if current.accelerator == slot.acc.name and 0 < current.max_batch <= slot.batch:
            out.append(replace(slot, batch=current.max_batch, optimal=False))
    return out


def _plan_server(system: System, server: Server, settings: Settings) -> tuple[ServerRow, list]:
    """The server's row and one slot per accelerator: a _Pending, a finished candidate, or a rejection."""
    row = _server_row(system, server, settings)
    if row.invalid:
        return row, []

    accelerators = system.accelerators
    if server.keep_accelerator and server.current.accelerator:
        accelerators = tuple(a for a in accelerators if a.name == server.current.accelerator)
        if not accelerators:
            return row, [f"keepAccelerator: current accelerator {server.current.accelerator!r} does not exist"]

    slots: list = []
    for acc in accelerators:
        perf = system.perf_by_key.get((server.model, acc.name))
        if perf is None:
            continue
        if row.zero_load:
            slots.append(_zero_load_candidate(server, acc, perf))
        elif perf.alpha == perf.beta == perf.gamma == perf.delta == 0:
            slots.append(f"{acc.name}: all perf parameters are zero")
        else:
            slots.append(_Pending(server, row, acc, perf, batch_size(server, perf, settings)))
    return row, slots


def _server_row(system: System, server: Server, settings: Settings) -> ServerRow:
    """Per-server facts: priority, the rate to serve, the targets; `invalid` says why it cannot be sized."""
    problem = reference_problem(server, system)
    cls = system.class_by_name.get(server.class_name)
    target = system.target(server)
    load = server.load
    zero_load = load.arrival_rate == 0 or load.avg_out_tokens == 0
    tps_rate = target.tps / load.avg_out_tokens if target and target.tps > 0 and load.avg_out_tokens > 0 else 0.0
    if settings.compat:
        total = tps_rate if target and target.tps > 0 else load.arrival_rate  # the TPS target replaces the load
    else:
        total = max(load.arrival_rate, tps_rate)  # serve both the observed load and the TPS target
    return ServerRow(server=server, priority=cls.priority if cls else 100, total_rate=total,
                     itl_target=target.itl if target else 0.0, ttft_target=target.ttft if target else 0.0,
                     tps_target=target.tps if target else 0.0, zero_load=zero_load, invalid=problem or "")


def _size_all(pending: list[_Pending], settings: Settings) -> None:
    """Size every pending candidate in vectorised passes and fill in its result."""
    for p in pending:
        p.queue = queue_size(p.server, p.batch, settings)
        try:
            p.model = _perf_model(settings, p.perf, p.server, p.batch, p.queue)
        except QueueingError as exc:
            p.result = f"{p.acc.name}: perf model error at max batch {p.batch}: {exc}"
    if settings.batch_rule != "inferno":
        _choose_optimal_batches([p for p in pending if p.result is None and p.optimal], settings)
    live = [p for p in pending if p.result is None]
    sizings = size_models([p.model for p in live], [_targets(p.row) for p in live])
    ok = []
    for p, sizing in zip(live, sizings):
        if isinstance(sizing, InfeasibleTarget):
            p.result = f"{p.acc.name}: infeasible at max batch {p.batch}: {sizing}"
        elif isinstance(sizing, Exception):
            p.result = f"{p.acc.name}: perf model error at max batch {p.batch}: {sizing}"
        elif not sizing.throughput > 0:
            p.result = f"{p.acc.name}: no positive SLO-feasible rate at max batch {p.batch}"
        else:
            p.result = sizing
            ok.append(p)
    for p in ok:  # metrics at the load: on demand (CandidateTable.load_metrics)
        r = replicas_needed(p.row.total_rate, float(p.result.throughput), p.server.min_num_replicas)
        p.result = _columns(p.acc, p.perf, r, p.batch, p.queue, float(p.result.throughput), math.nan, math.nan,
                            math.nan, p.result.binding)


def _targets(row: ServerRow) -> tuple[float, float, float]:
    return row.ttft_target, row.itl_target, row.tps_target


def _choose_optimal_batches(pending: list[_Pending], settings: Settings) -> None:
    """batch_rule "optimal": the smallest batch M <= inferno's memory-derived N with near-peak f(M)."""
    ratios = [settings.queue_ratio if settings.compat or p.server.max_queue_size <= 0 else None for p in pending]
    queues = [p.queue for p in pending]
    curves = throughput_curves([p.model for p in pending], [_targets(p.row) for p in pending],
                               max_queue=queues, queue_ratio=ratios)
    for p, curve in zip(pending, curves):
        if not curve.peak_throughput > 0:
            continue  # infeasible at every batch size: keep inferno's batch (and its rejection reason)
        m_star = curve.onset(DEFAULT_EPSILON)
        if m_star != p.batch:
            p.batch = m_star
            p.queue = queue_size(p.server, m_star, settings)
            p.model = _perf_model(settings, p.perf, p.server, p.batch, p.queue)


def _with_rejected(row: ServerRow, rejected: list[str]) -> ServerRow:
    return ServerRow(**{**row.__dict__, "rejected": tuple(rejected)})


def batch_size(server: Server, perf: PerfData, settings: Settings) -> int:
    """inferno's rule: the server's maxBatchSize, else perf maxBatchSize at atTokens scaled to the output tokens.

    The scaled size is capped at MAX_BATCH (short outputs would otherwise ask for a chain of millions of slots).
    """
    if server.max_batch_size > 0:
        return server.max_batch_size
    if perf.at_tokens == 0 and not settings.compat:
        return max(perf.max_batch_size, 1)  # no reference token count: take the batch size as given
    out_tokens = max(int(server.load.avg_out_tokens), 1)  # under one token (not zero load): no division by zero
    return min(max(perf.max_batch_size * perf.at_tokens // out_tokens, 1), MAX_BATCH)


def queue_size(server: Server, batch: int, settings: Settings) -> int:
    """Queue size: 10·N in compat mode (inferno's optimizer); otherwise the server's maxQueueSize if set."""
    if not settings.compat and server.max_queue_size > 0:
        return server.max_queue_size
    return settings.queue_ratio * batch


def transition_value(server: Server, acc: str, replicas: int, cost: float) -> float:
    """inferno's transition penalty (spec optimizer.md §2.3): what heuristics minimise instead of cost."""
    cur = server.current
    if cur.accelerator == acc:
        return 0.0 if cur.num_replicas == replicas else cost - cur.cost
    return ACCEL_PENALTY_FACTOR * (cur.cost + cost) + (cost - cur.cost)


def replicas_needed(total_rate: float, rate_per_replica: float, min_replicas: int) -> int:
    ratio = total_rate / rate_per_replica
    return max(math.ceil(ratio * (1 - CEIL_RTOL)), min_replicas)


def _zero_load_candidate(server: Server, acc: Accelerator, perf: PerfData) -> dict | None:
    """inferno's zero-load allocation (spec optimizer.md §2.4): minNumReplicas replicas, ad hoc metrics."""
    if server.min_num_replicas == 0:
        return None  # nothing to run; the server is reported as zero-load
    batch = server.max_batch_size if server.max_batch_size > 0 else max(perf.max_batch_size, 1)
    itl = perf.alpha + perf.beta
    if perf.generation == "G3":
        ttft = itl + perf.gamma * batch
        denominator = ttft + perf.alpha + perf.beta * batch
    else:
        ttft = perf.gamma + perf.delta
        denominator = ttft + perf.alpha + perf.beta * batch
    rate_star = 1000.0 * batch / denominator if denominator > 0 else 0.0
    return _columns(acc, perf, server.min_num_replicas, batch, 0, rate_star, itl, ttft, 0.0, "zero-load")


def _columns(acc: Accelerator, perf: PerfData, replicas: int, batch: int, queue: int, rate_star: float,
             itl: float, ttft: float, rho: float, binding: str) -> dict:
    return {"acc": acc, "batch": batch, "queue": queue, "replicas": replicas,
            "cost": acc.cost * perf.acc_count * replicas, "units": replicas * perf.acc_count * acc.multiplicity,
            "unit_per_replica": perf.acc_count * acc.multiplicity, "rate_star": rate_star, "itl": float(itl),
            "ttft": float(ttft), "rho": float(rho), "binding": binding, "perf": perf}


def _perf_model(settings: Settings, perf: PerfData, server: Server, batch: int, queue: int, overload: bool = False):
    load = server.load
    return _cached_perf_model(settings.perf_model_for(perf), tuple(sorted(perf.params.items())),
                              load.avg_in_tokens, load.avg_out_tokens, batch, queue,
                              settings.max_num_tokens, settings.compat and not overload, load.in_tokens_cv,
                              load.out_tokens_cv)


@lru_cache(maxsize=65536)
def _cached_perf_model(kind, params, in_tokens, out_tokens, batch, queue, max_num_tokens, compat, in_cv, out_cv):
    return make_perf_model(kind, dict(params), in_tokens=in_tokens, out_tokens=out_tokens, max_batch=batch,
                           max_queue=queue, max_num_tokens=max_num_tokens, compat=compat, in_tokens_cv=in_cv,
                           out_tokens_cv=out_cv)
