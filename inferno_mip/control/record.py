"""One JSON record per cycle: inferno's CycleRecord (ts, cycle, servers, internals, capacity, totalCost, timing,
with its field names, so runs load in inferno's dashboard) plus what this loop adds per server (forecast,
recommendation, decision, the stability rules that changed it and why) and per cycle (hold reason, tuner notes,
solver status, more phase timings)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime, timezone

from ..spec import System


def _num(v) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else float(v)


def _rpm(v) -> float | None:
    v = _num(v)
    return None if v is None else 60.0 * v


def cycle_record(*, cycle, system: System, observation, hold_all, params, tune_notes, demand, forecasts, outcome,
                 inputs, decisions, actions, actuation_error, timing, units, config, extra,
                 last_targets=None) -> dict:
    """The record of one cycle (see the module docstring); JSON-ready, no NaN."""
    servers = []
    allocated: dict[str, int] = {}
    total_cost = 0.0
    by_name = {s.name: s for s in system.servers}
    for name in sorted(inputs):
        s, inp, d = observation.servers[name], inputs[name], decisions.get(name)
        spec = by_name.get(name)
        target = system.target(spec) if spec else None
        final = d.target if d is not None and d.target is not None else (last_targets or {}).get(name, inp.current)
        cost = 0.0
        if final is not None and final.replicas > 0:
            kind, size = units(name, final.accelerator)
            allocated[kind] = allocated.get(kind, 0) + size * final.replicas
            acc = system.accelerator_by_name.get(final.accelerator)
            cost = (acc.cost if acc else 0.0) * size / max(acc.multiplicity if acc else 1, 1) * final.replicas
        total_cost += cost
        rec = inp.recommended
        alloc = _solver_alloc(outcome, name)
        server = {
            "name": name, "class": s.service_class, "model": s.model,
            "rpm": _rpm(s.arrival_rate), "throughput": _rpm(s.throughput),
            "avgInTok": None if _num(s.in_tokens) is None else int(round(s.in_tokens)),
            "avgOutTok": None if _num(s.out_tokens) is None else int(round(s.out_tokens)),
            "itl": _num(s.itl), "ttft": _num(s.ttft),
            "sloItl": target.itl if target else None, "sloTtft": target.ttft if target else None,
            "accelerator": final.accelerator if final else "", "replicas": final.replicas if final else 0,
            "maxBatch": final.max_batch if final else 0, "cost": cost,
            # additions
            "engineTtft": _num(s.engine_ttft), "replicasReady": s.replicas_ready,
            "replicasStarting": s.replicas_starting,
            "forecastRpm": _rpm(demand.get(name)), **forecasts.get(name, {}),
            "recommended": None if rec is None else {"accelerator": rec.accelerator, "replicas": rec.replicas,
                                                     "maxBatch": rec.max_batch},
            "solverStatus": alloc.status if alloc else None,
            "predictedItl": _num(alloc.itl) if alloc else None, "predictedTtft": _num(alloc.ttft) if alloc else None,
            "action": actions.get(name, "unchanged"),
            "fault": inp.fault, "rules": list(d.rules) if d else [], "reason": d.reason if d else "",
            **{k: _num(v) if isinstance(v, float) else v for k, v in dict(extra.get(name, {})).items()},
        }
        servers.append(server)
    solution = getattr(outcome, "solution", None)
    time = observation.time if observation is not None else None
    return {
        "ts": _timestamp(time), "cycle": cycle, "servers": servers,
        "internals": [{"model": m, "acc": a, **{k: float(v) for k, v in p.items()}} for (m, a), p in params.items()],
        "capacity": [{"type": k, "allocated": allocated.get(k, 0), "available": int(v)}
                     for k, v in sorted(system.capacity.items())],
        "totalCost": total_cost, "timing": {k: timing.get(k, 0.0) for k in (
            "collectMs", "tuneMs", "forecastMs", "optimizeMs", "stabiliseMs", "actuateMs", "totalMs")},
        # additions
        "time": time, "config": config.name, "held": hold_all,
        "tuner": list(tune_notes), "solver": {"status": outcome.status if outcome else None,
                                               "name": getattr(solution, "solver", None)},
        "problems": list(observation.problems) if observation is not None else [],
        "actuation": actuation_error,
    }


def _solver_alloc(outcome, name):
    solution = getattr(outcome, "solution", None)
    if solution is None:
        return None
    try:
        return solution[name]
    except KeyError:
        return None


def _timestamp(seconds: float | None) -> str | None:
    """RFC 3339 from the collector's clock (epoch seconds for live sources, simulated seconds otherwise)."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(float(seconds), tz=timezone.utc).isoformat().replace("+00:00", "Z")


def write_record(record: Mapping, stream) -> None:
    """One JSON line."""
    stream.write(json.dumps(record, sort_keys=False, allow_nan=False) + "\n")
    stream.flush()
