"""One control cycle on Kubernetes: collect -> solve -> actuate, holding wherever data or a stage fails.

Safety rules (as the control loop's):
- never zero on missing data: a server without load data (arrival rate and token counts) is not sized; it keeps
  its replicas, and the capacity units they take are reserved before the solve;
- a server the solver could not place (infeasible SLO, no perf data, capacity, invalid input) keeps its replicas;
- hold on failure: if collecting, reading the static data or solving fails, nothing is actuated;
- never above capacity: enforced again by the actuator against what the Deployments actually have.
One Deployment runs one accelerator, so the solve is single-assign (``heterogeneous`` off).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..api import solve
from ..control.protocols import (ActuationError, Actuator, CollectError, Collector, FleetObservation,
                                 ServerObservation, Target)
from ..errors import ScenarioError
from ..io import parse_system
from ..spec import System
from .actuator import replica_units

APPLIED_STATUSES = ("ok", "best-effort", "zero-load")


@dataclass(frozen=True)
class ServerResult:
    """What one cycle decided for one server, and what was done about it."""

    name: str
    status: str  # the solver's status, or "held"
    reason: str
    action: str = ""
    target: Target | None = None
    cost: float = 0.0


@dataclass(frozen=True)
class CycleResult:
    """A cycle's outcome; ``phase`` is "done" or the stage that failed (collect, data, solve, actuate)."""

    time: float
    phase: str
    message: str = ""
    servers: tuple[ServerResult, ...] = ()
    solver: str = ""
    solve_status: str = ""
    total_cost: float = 0.0
    timings: Mapping[str, float] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.phase == "done"

    def targets(self) -> dict[str, Target]:
        return {s.name: s.target for s in self.servers if s.target is not None}


def run_cycle(collector: Collector, actuator: Actuator, static: Mapping, *, solver: str | None = None,
              options: Mapping | None = None, source: str = "<static data>",
              clock: Callable[[], float] = time.perf_counter) -> CycleResult:
    """Collect, solve with `static` (inferno's SystemData sections without servers) and actuate."""
    timings: dict[str, float] = {}
    start = clock()
    try:
        fleet = collector.collect()
    except CollectError as exc:
        return CycleResult(time.time(), "collect", f"held: {exc}", timings={"collect": clock() - start})
    timings["collect"] = clock() - start
    try:
        system, held = build_system(static, fleet, source)
    except ScenarioError as exc:
        return CycleResult(fleet.time, "data", f"held: {exc}", timings=timings, problems=fleet.problems)
    problems = fleet.problems + tuple(str(i) for i in system.issues if not i.server)
    t = clock()
    try:
        solution = solve(system, solver=solver, **{**dict(options or {}), "heterogeneous": False})
    except Exception as exc:  # noqa: BLE001 - whatever breaks the solve, the fleet keeps its allocation
        return CycleResult(fleet.time, "solve", f"held: solve failed: {type(exc).__name__}: {exc}", timings=timings,
                           problems=problems)
    timings["solve"] = clock() - t
    results = {name: ServerResult(name, "held", reason) for name, reason in held.items()}
    for alloc in solution.allocations:
        obs = fleet.servers[alloc.name]
        if alloc.status in APPLIED_STATUSES:
            target = Target(alloc.accelerator or obs.accelerator, alloc.replicas, alloc.max_batch or obs.max_batch)
            results[alloc.name] = ServerResult(alloc.name, alloc.status, alloc.reason, target=target, cost=alloc.cost)
        else:
            results[alloc.name] = ServerResult(alloc.name, "held", f"{alloc.status}: {alloc.reason}")
    targets = {name: r.target for name, r in results.items() if r.target is not None}
    t = clock()
    phase, message = "done", ""
    try:
        actions = dict(actuator.actuate(targets))
    except ActuationError as exc:
        phase, message = "actuate", f"held: {exc}"
        actions = {name: "failed: not applied" for name in targets}
    timings["actuate"] = clock() - t
    timings["total"] = clock() - start
    servers = tuple(_with_action(results[name], actions.get(name, "held")) for name in sorted(results))
    return CycleResult(fleet.time, phase, message, servers, solution.solver, solution.status,
                       sum(s.cost for s in servers if s.target is not None), timings, problems)


def build_system(static: Mapping, fleet: FleetObservation, source: str) -> tuple[System, dict[str, str]]:
    """The System to solve (static data plus the servers with load data) and the held servers with reasons.

    The capacity taken by held servers is taken out of the capacity the solve may use.
    """
    servers, held, held_obs = [], {}, []
    for name in sorted(fleet.servers):
        obs = fleet.servers[name]
        missing = [label for label, value in (("arrival rate", obs.arrival_rate), ("input tokens", obs.in_tokens),
                                              ("output tokens", obs.out_tokens)) if value is None]
        if missing:
            held[name] = f"no load data ({', '.join(missing)} missing): keeps its replicas"
            held_obs.append(obs)
        else:
            servers.append(_server_data(obs))
    sections = {k: v for k, v in static.items() if k.lower() != "serverdata"}
    system = parse_system({"system": {**sections, "serverData": {"servers": servers}}}, source)
    if held_obs and not system.optimizer.unlimited:
        capacity = dict(system.capacity)
        for obs in held_obs:
            units = replica_units(system, obs.model, obs.accelerator)
            if units is not None:
                capacity[units[0]] = max(0, capacity.get(units[0], 0) - units[1] * _replicas(obs))
        system = system.replace(capacity=capacity)
    return system, held


def _replicas(obs: ServerObservation) -> int:
    return obs.replicas_ready + obs.replicas_starting


def _server_data(obs: ServerObservation) -> dict:
    """inferno's ServerSpec for an observed server (arrival rate in requests/minute, as in inferno's JSON)."""
    return {"name": obs.name, "class": obs.service_class, "model": obs.model,
            "currentAlloc": {"accelerator": obs.accelerator, "numReplicas": _replicas(obs), "maxBatch": obs.max_batch,
                             "load": {"arrivalRate": obs.arrival_rate * 60.0, "avgInTokens": obs.in_tokens,
                                      "avgOutTokens": obs.out_tokens}}}


def _with_action(result: ServerResult, action: str) -> ServerResult:
    return ServerResult(result.name, result.status, result.reason, action, result.target, result.cost)
