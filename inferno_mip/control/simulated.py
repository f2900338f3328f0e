"""The fleet simulator as a collector and an actuator, and the driver of a simulated run.

The collector reads the simulator's window since its last reading (what a Prometheus window would show); the
actuator calls ``Fleet.set_allocation``. ``run`` advances the simulated clock one period per cycle.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping

from ..sim import SimulationError
from ..spec import System
from .protocols import ActuationError, FleetObservation, ServerObservation, Target, slo_by_server

_REPLICA_FIELDS = {"offered_rate": "arrival_rate", "completed_rate": "throughput", "itl_mean": "itl",
                   "ttft_mean": "ttft", "in_tokens_mean": "in_tokens", "out_tokens_mean": "out_tokens",
                   "running_mean": "running", "waiting_mean": "waiting"}


def _value(v) -> float | None:
    if v is None:
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class SimCollector:
    """Reads ``fleet.window(since)`` into a FleetObservation. ``extra`` holds, per server, the simulator's own
    per-request SLO attainment and counts of the last window (for records, never for decisions)."""

    def __init__(self, fleet, system: System):
        self.fleet = fleet
        self.since = float(fleet.now)
        self.info = {s.name: (s.model, s.class_name) for s in system.servers}
        self.slo = slo_by_server(system)
        self.extra: dict[str, dict] = {}

    @property
    def now(self) -> float:
        return float(self.fleet.now)

    def collect(self) -> FleetObservation:
        now = float(self.fleet.now)
        windows = self.fleet.window(self.since)
        self.since = now
        servers, self.extra = {}, {}
        for name in sorted(windows):
            w = windows[name]
            model, cls = self.info.get(name, ("", ""))
            replicas = {r: {ours: _value(m.get(theirs)) for theirs, ours in _REPLICA_FIELDS.items()
                            if _value(m.get(theirs)) is not None}
                        for r, m in sorted((getattr(w, "per_replica", None) or {}).items())}
            servers[name] = ServerObservation(
                name=name, model=model, service_class=cls, accelerator=w.accelerator, max_batch=int(w.max_batch),
                replicas_ready=int(w.replicas_ready), replicas_starting=int(w.replicas_starting),
                arrival_rate=_value(w.offered_rate), throughput=_value(w.completed_rate),
                in_tokens=_value(w.in_tokens_mean), out_tokens=_value(w.out_tokens_mean),
                in_tokens_cv=_value(w.in_tokens_cv), out_tokens_cv=_value(w.out_tokens_cv),
                itl=_value(w.itl_mean), ttft=_value(w.ttft_mean), running=_value(w.running_mean),
                waiting=_value(w.waiting_mean), replicas={r: v for r, v in replicas.items() if v})
            itl, ttft = self.slo.get(name, (0.0, 0.0))
            self.extra[name] = {"withinSlo": _value(w.within_slo(itl or math.inf, ttft or math.inf)),
                                "completed": int(w.completed), "rejected": int(w.rejected),
                                "itlP95": _value(w.itl_p95), "ttftP95": _value(w.ttft_p95)}
        return FleetObservation(time=now, servers=servers)


class SimActuator:
    """Applies targets with ``fleet.set_allocation``; one server's failure does not stop the others."""

    def __init__(self, fleet):
        self.fleet = fleet

    def actuate(self, targets: Mapping[str, Target]) -> dict[str, str]:
        done = {}
        for name in sorted(targets):
            t = targets[name]
            try:
                done[name] = str(self.fleet.set_allocation(name, t.accelerator, int(t.replicas), int(t.max_batch)))
            except (SimulationError, KeyError, ValueError) as exc:
                done[name] = f"failed: {exc}"
        if done and all(v.startswith("failed") for v in done.values()):
            raise ActuationError("; ".join(f"{k}: {v}" for k, v in done.items()))
        return done


def run(loop, fleet, duration: float, period: float, on_cycle: Callable[[dict], None] | None = None
        ) -> Iterator[dict]:
    """Advance `fleet` one period at a time up to `duration` seconds and run one cycle after each step."""
    start = float(fleet.now)
    cycles = int(math.floor((duration + 1e-9) / period))
    for k in range(1, cycles + 1):
        fleet.advance(start + k * period)
        record = loop.cycle()
        if on_cycle is not None:
            on_cycle(record)
        yield record
