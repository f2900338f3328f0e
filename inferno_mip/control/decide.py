"""Solve stage: this cycle's System from the observation and the forecast, solved in-process or remotely.

Servers whose data cannot be trusted are left out of the solve and their current cards are taken off the
capacity, so that what the solver hands out plus what the held servers keep always fits. Each server's answer
becomes a :class:`Target` or a reason to hold (infeasible, no perf data, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..spec import CurrentAllocation, Load, System
from .protocols import ServerObservation, Target

USABLE = ("ok", "best-effort", "zero-load")


@dataclass(frozen=True)
class SolveOutcome:
    targets: dict[str, Target]  # per solved server with a usable answer
    faults: dict[str, str]  # per solved server without one: why
    status: str  # the solver's status ("error: ..." when the call failed)
    solution: object | None = None  # the Solution, for the record


def current_target(obs: ServerObservation) -> Target:
    """What the server runs or is starting: ready plus starting replicas."""
    return Target(obs.accelerator, obs.replicas_ready + obs.replicas_starting, obs.max_batch)


def cycle_system(system: System, observed: Mapping[str, ServerObservation], demand: Mapping[str, float],
                 solve_names: set[str], units: Callable[[str, str], tuple[str, int]]) -> System:
    """`system` with fresh loads for the servers in `solve_names`, their current allocations, and capacity
    reduced by what the other (held) servers keep."""
    held_cards: dict[str, float] = {}
    servers = []
    for server in system.servers:
        obs = observed.get(server.name)
        if server.name not in solve_names:
            if obs is not None and obs.accelerator:
                kind, size = units(server.name, obs.accelerator)
                held_cards[kind] = held_cards.get(kind, 0.0) + size * (obs.replicas_ready + obs.replicas_starting)
            continue
        load = Load(arrival_rate=max(float(demand[server.name]), 0.0),
                    avg_in_tokens=_or(obs.in_tokens, server.load.avg_in_tokens),
                    avg_out_tokens=_or(obs.out_tokens, server.load.avg_out_tokens))
        acc = system.accelerator_by_name.get(obs.accelerator)
        cur = current_target(obs)
        current = CurrentAllocation(accelerator=obs.accelerator, num_replicas=cur.replicas, max_batch=cur.max_batch,
                                    cost=acc.cost * cur.replicas * _acc_count(system, server.model, obs.accelerator)
                                    if acc else 0.0)
        servers.append(server.model_copy(update={"load": load, "current": current}))
    capacity = {k: max(int(math.floor(v - held_cards.get(k, 0.0) + 1e-9)), 0) for k, v in system.capacity.items()}
    return system.replace(servers=tuple(servers), capacity=capacity)


def _or(value: float | None, default: float) -> float:
    return float(value) if value is not None and math.isfinite(value) and value > 0 else default


def _acc_count(system: System, model: str, acc: str) -> int:
    perf = system.perf_by_key.get((model, acc))
    return perf.acc_count if perf else 1


def unit_lookup(system: System) -> Callable[[str, str], tuple[str, int]]:
    """(server, accelerator) -> (capacity type, cards per replica)."""
    model = {s.name: s.model for s in system.servers}

    def units(server: str, accelerator: str) -> tuple[str, int]:
        acc = system.accelerator_by_name.get(accelerator)
        if acc is None:
            return accelerator, 1
        return acc.type, acc.multiplicity * _acc_count(system, model.get(server, ""), accelerator)

    return units


def run_solve(system: System, solve: Callable[..., object], params: Mapping, options: Mapping) -> SolveOutcome:
    """Solve `system` (already reduced to the servers to decide); never raises."""
    if not system.servers:
        return SolveOutcome({}, {}, "nothing to solve")
    try:
        solution = solve(system, params=dict(params), **dict(options))
    except Exception as exc:  # a solver or service failure holds the fleet; it must not stop the loop
        return SolveOutcome({}, {s.name: f"solver error: {exc}" for s in system.servers},
                            f"error: {type(exc).__name__}: {exc}")
    targets, faults = {}, {}
    for a in solution.allocations:
        if a.status in USABLE and (a.replicas > 0 or a.status == "zero-load"):
            acc = a.accelerator or next((s.current.accelerator for s in system.servers if s.name == a.name), "")
            targets[a.name] = Target(acc, int(a.replicas), int(a.max_batch))
        else:
            faults[a.name] = f"solver: {a.status}: {a.reason}"
    return SolveOutcome(targets, faults, str(getattr(solution, "status", "")), solution)


def optimizer_solve(url: str) -> Callable[..., object]:
    """``solve(system, **options)`` through the optimizer service at `url` (imported only when used); churn
    costs and the step limit travel with the other options."""
    from ..client import OptimizerClient  # the service client; lives with the service

    client = OptimizerClient(url)

    def solve(system: System, params: Mapping | None = None, solver: str | None = None, **options):
        return client.solve(system, solver, params=params or None, **options)

    return solve
