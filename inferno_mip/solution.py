"""The answer of a solve: one entry per server (never all-or-nothing), totals and solver statistics."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .io import go_int
from .tables import CandidateTable

STATUSES = ("ok", "best-effort", "infeasible-SLO", "no-perf-data", "capacity-limited", "zero-load", "invalid-input")


@dataclass(frozen=True)
class Assignment:
    """What a solver decided: replicas per candidate (0 = not chosen), plus solver statistics.

    Single-assign solvers give each server at most one candidate with replicas > 0; fewer replicas than the
    candidate needs is best effort. Multi-assign solvers may spread a server over several candidates.
    """

    counts: np.ndarray  # int[C], replicas run of each candidate
    status: str = "heuristic"  # optimal, feasible, heuristic, time-limit, fallback...
    objective: float | None = None
    bound: float | None = None
    gap: float | None = None
    notes: dict[int, str] = field(default_factory=dict)  # extra reason per server row
    message: str = ""  # why the status is what it is (e.g. the error that forced a fallback)
    timings: dict[str, float] = field(default_factory=dict)  # e.g. {"build": s} of the formulation

    @classmethod
    def from_choices(cls, table: CandidateTable, chosen: np.ndarray, replicas: np.ndarray, **stats) -> Assignment:
        """From one candidate index (or -1) and a replica count per server row."""
        counts = np.zeros(len(table), dtype=np.int64)
        served = chosen >= 0
        counts[chosen[served]] = replicas[served]
        return cls(counts=counts, **stats)


def objective_value(table: CandidateTable, counts: np.ndarray) -> float:
    """inferno's objective: total transition value, pro rata for partial replica counts."""
    return float(np.sum(table.value * counts / np.maximum(table.replicas, 1))) if len(table) else 0.0


@dataclass(frozen=True)
class Placement:
    """Replicas of a server on one accelerator (a multi-assign server has several)."""

    accelerator: str
    accelerator_type: str
    replicas: int
    max_batch: int
    max_queue: int
    cost: float
    units: int
    rate: float  # req/s routed to these replicas
    max_rate_per_replica: float  # req/s per replica at the SLO
    itl: float
    ttft: float
    rho: float


@dataclass(frozen=True)
class ServerAllocation:
    name: str
    service_class: str
    model: str
    priority: int
    status: str
    reason: str
    accelerator: str = ""
    accelerator_type: str = ""
    replicas: int = 0
    max_batch: int = 0
    max_queue: int = 0
    cost: float = 0.0
    units: int = 0
    itl: float = 0.0
    ttft: float = 0.0
    rho: float = 0.0
    arrival_rate: float = 0.0  # req/s offered (the load)
    total_rate: float = 0.0  # req/s the allocation is sized for (load, or TPS target / out tokens)
    served_rate: float = 0.0  # req/s the replicas can serve within the SLOs (best effort: less than total_rate)
    max_rate_per_replica: float = 0.0  # req/s per replica at the SLO
    itl_target: float = 0.0
    ttft_target: float = 0.0
    tps_target: float = 0.0
    avg_in_tokens: float = 0.0
    avg_out_tokens: float = 0.0
    binding: str = ""
    placements: tuple[Placement, ...] = ()

    @property
    def meets_slo(self) -> bool:
        """Predicted ITL and TTFT within their targets (relative tolerance 1e-6 for the root finder)."""
        tol = 1 + 1e-6
        return ((self.itl_target == 0 or self.itl <= self.itl_target * tol)
                and (self.ttft_target == 0 or self.ttft <= self.ttft_target * tol))


JSON_UNITS = {"rates": "requests/second", "latencies": "ms", "cost": "per hour", "timings": "s"}
INFERNO_UNITS = {"arrivalRate": "requests/minute", "itlAverage": "ms", "ttftAverage": "ms", "cost": "per hour"}


@dataclass(frozen=True)
class Solution:
    allocations: tuple[ServerAllocation, ...]
    solver: str
    status: str
    total_cost: float
    units_used: dict[str, int]
    capacity: dict[str, float]
    objective: float | None = None
    bound: float | None = None
    gap: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    issues: tuple[str, ...] = ()
    message: str = ""

    def __getitem__(self, name: str) -> ServerAllocation:
        for alloc in self.allocations:
            if alloc.name == name:
                return alloc
        raise KeyError(name)

    def counts(self) -> dict[str, int]:
        """Number of servers per status."""
        out = {s: 0 for s in STATUSES}
        for alloc in self.allocations:
            out[alloc.status] += 1
        return {s: n for s, n in out.items() if n}

    def to_dict(self) -> dict:
        """JSON-ready form: totals, solver statistics and one entry per server; rates in req/s (see ``units``)."""
        return {
            "units": JSON_UNITS,
            "solver": self.solver, "status": self.status, "message": self.message, "totalCost": self.total_cost,
            "objective": self.objective, "bound": self.bound, "gap": self.gap,
            "unitsUsed": self.units_used,
            "capacity": {t: (None if c == float("inf") else c) for t, c in self.capacity.items()},
            "counts": self.counts(), "timings": self.timings, "issues": list(self.issues),
            "servers": [_camel(asdict(a)) for a in self.allocations],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Solution:
        """The Solution of :meth:`to_dict`'s JSON (e.g. from the optimizer service): ``from_dict(s.to_dict()) == s``."""
        def allocation(entry: dict) -> ServerAllocation:
            fields = _snake(entry, ServerAllocation)
            fields["placements"] = tuple(Placement(**_snake(p, Placement)) for p in entry.get("placements", ()))
            return ServerAllocation(**fields)

        return cls(
            allocations=tuple(allocation(a) for a in data["servers"]), solver=data["solver"], status=data["status"],
            total_cost=data["totalCost"], units_used=dict(data["unitsUsed"]),
            capacity={t: float("inf") if c is None else float(c) for t, c in data["capacity"].items()},
            objective=data.get("objective"), bound=data.get("bound"), gap=data.get("gap"),
            timings=dict(data.get("timings", {})), issues=tuple(data.get("issues", ())),
            message=data.get("message", ""))

    def to_inferno(self) -> dict:
        """inferno's AllocationSolution, extended with a status and reason per server (unallocated ones included).

        As in inferno, ``load.arrivalRate`` is in requests/minute (the native form, :meth:`to_dict`, uses req/s);
        the top-level ``units`` entry says so and is ignored by inferno's Go decoder.
        """
        out = {}
        for a in self.allocations:
            out[a.name] = {
                "accelerator": a.accelerator, "numReplicas": a.replicas, "maxBatch": a.max_batch, "cost": a.cost,
                "itlAverage": a.itl, "ttftAverage": a.ttft,
                "load": {"arrivalRate": a.arrival_rate * 60.0, "avgInTokens": go_int(a.avg_in_tokens),
                         "avgOutTokens": go_int(a.avg_out_tokens)},
                "status": a.status, "reason": a.reason,
            }
        return {"units": INFERNO_UNITS, "allocations": out}


def _camel_name(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.capitalize() for w in rest)


def _camel(d: dict) -> dict:
    return {_camel_name(k): [_camel(x) for x in v] if k == "placements" else v for k, v in d.items()}


def _snake(d: dict, cls) -> dict:
    """The dataclass fields of `cls` from their camelCase keys in `d` (the inverse of :func:`_camel`)."""
    return {name: d[_camel_name(name)] for name in cls.__dataclass_fields__
            if _camel_name(name) in d and name != "placements"}


def build_solution(table: CandidateTable, assignment: Assignment, solver: str, invalid=(), issues=(),
                   timings=None) -> Solution:
    """Turn a solver's assignment into per-server allocations with status, reason and metrics."""
    table.load_metrics(np.flatnonzero(assignment.counts))  # the chosen candidates' metrics, in one pass
    allocations = [_allocation(table, i, assignment) for i in range(len(table.rows))]
    allocations += [ServerAllocation(name=s.name, service_class="", model="", priority=0, status="invalid-input",
                                     reason=s.reason) for s in invalid]
    allocations.sort(key=lambda a: a.name)
    used = {t: 0 for t in table.types}
    for a in allocations:
        for p in a.placements:
            used[p.accelerator_type] += p.units
    return Solution(
        allocations=tuple(allocations), solver=solver, status=assignment.status,
        total_cost=float(sum(a.cost for a in allocations)), units_used=used,
        capacity=dict(zip(table.types, map(float, table.capacity))), objective=assignment.objective,
        bound=assignment.bound, gap=assignment.gap, timings=dict(timings or {}), issues=tuple(map(str, issues)),
        message=assignment.message)


def _allocation(table: CandidateTable, i: int, assignment: Assignment) -> ServerAllocation:
    row = table.rows[i]
    s = row.server
    base = dict(name=s.name, service_class=s.class_name, model=s.model, priority=row.priority,
                arrival_rate=s.load.arrival_rate, total_rate=row.total_rate, itl_target=row.itl_target,
                ttft_target=row.ttft_target, tps_target=row.tps_target, avg_in_tokens=s.load.avg_in_tokens,
                avg_out_tokens=s.load.avg_out_tokens)
    note = assignment.notes.get(i, "")
    if row.invalid:
        return ServerAllocation(**base, status="invalid-input", reason=row.invalid)
    chosen = [int(c) for c in table.of_server(i) if assignment.counts[c] > 0]
    if not chosen:
        status, reason = _unallocated(table, i)
        return ServerAllocation(**base, status=status, reason=_join(reason, note))

    placements = _placements(table, row, chosen, assignment.counts)
    main = max(range(len(chosen)), key=lambda k: (placements[k].rate, placements[k].replicas, -k))
    c, first = chosen[main], placements[main]
    capacity_rate = sum(p.max_rate_per_replica * p.replicas for p in placements)
    served = min(row.total_rate, capacity_rate)
    alloc = dict(
        accelerator=first.accelerator if len(chosen) == 1 else "+".join(p.accelerator for p in placements),
        accelerator_type=first.accelerator_type, replicas=sum(p.replicas for p in placements),
        max_batch=first.max_batch, max_queue=first.max_queue, cost=sum(p.cost for p in placements),
        units=sum(p.units for p in placements), max_rate_per_replica=first.max_rate_per_replica,
        binding=table.binding[c], itl=max(p.itl for p in placements), ttft=max(p.ttft for p in placements),
        rho=max(p.rho for p in placements), served_rate=served, placements=tuple(placements))
    k = alloc["replicas"]
    if row.zero_load:
        return ServerAllocation(**base, **alloc, status="zero-load",
                                reason=f"no load: minNumReplicas = {k} kept on {first.accelerator}")
    if capacity_rate < row.total_rate * (1 - 1e-9):
        full = int(table.replicas[c])
        share = f"{k} of {full} replicas" if len(chosen) == 1 else f"{k} replicas"
        reason = (f"capacity: {share} on {alloc['accelerator']}, serves {served / row.total_rate:.1%} "
                  f"of the load within SLO")
        return ServerAllocation(**base, **alloc, status="best-effort", reason=_join(reason, note))
    reason = _ok_reason(table, i, c, row) if len(chosen) == 1 else (
        "load split over " + ", ".join(f"{p.accelerator} x{p.replicas}" for p in placements) + " in proportion to rate")
    return ServerAllocation(**base, **alloc, status="ok", reason=_join(reason, note))


def _placements(table: CandidateTable, row, chosen: list[int], counts: np.ndarray) -> list[Placement]:
    """Split the server's rate over its candidates in proportion to their SLO rate (all of it to one)."""
    capacity = [float(table.rate_star[c]) * int(counts[c]) for c in chosen]
    total_capacity = sum(capacity)
    out = []
    for c, cap in zip(chosen, capacity):
        n = int(counts[c])
        rate = row.total_rate * cap / total_capacity if total_capacity > 0 else 0.0
        if len(chosen) == 1 and n == int(table.replicas[c]) or row.zero_load or rate <= 0:
            itl, ttft, rho = map(float, table.load_metrics([c])[0])
        else:
            m = table.evaluate(c, rate / n)
            itl, ttft, rho = float(m.itl), float(m.ttft), float(m.rho)
        acc = table.accelerators[int(table.acc[c])]
        out.append(Placement(
            accelerator=acc.name, accelerator_type=acc.type, replicas=n, max_batch=int(table.batch[c]),
            max_queue=int(table.queue[c]), cost=float(table.cost[c]) * n / int(table.replicas[c]),
            units=int(table.unit_per_replica[c]) * n, rate=rate, max_rate_per_replica=float(table.rate_star[c]),
            itl=itl, ttft=ttft, rho=rho))
    return out


def _ok_reason(table: CandidateTable, i: int, c: int, row) -> str:
    acc = table.accelerators[int(table.acc[c])].name
    binding = table.binding[c]
    limit = {"itl": f"ITL {row.itl_target:g} ms", "ttft": f"TTFT {row.ttft_target:g} ms",
             "tps": "stability margin", "none": "max stable rate"}.get(binding, binding)
    why = f"{limit} limits a replica to {table.rate_star[c]:.4g} req/s"
    if int(table.replicas[c]) == row.server.min_num_replicas and row.server.min_num_replicas > 0:
        why += f"; minNumReplicas = {row.server.min_num_replicas}"
    best = int(table.of_server(i)[0])
    if best != c:
        preferred = table.accelerators[int(table.acc[best])].name
        return f"{why}; preferred {preferred} x{table.replicas[best]} did not fit the capacity"
    return f"{why}; best value on {acc}"


def _unallocated(table: CandidateTable, i: int) -> tuple[str, str]:
    row = table.rows[i]
    if row.zero_load:
        return "zero-load", "no load and minNumReplicas = 0: nothing to run"
    if len(table.of_server(i)):
        return "capacity-limited", "capacity: no candidate accelerator has enough free cards"
    if row.rejected:
        return "infeasible-SLO", "; ".join(row.rejected)
    return "no-perf-data", f"no perf data for model {row.server.model!r} on any usable accelerator"


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a and b else a or b
