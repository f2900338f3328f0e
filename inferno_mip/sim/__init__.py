"""Fleet simulator, request by request: the yardstick the perf models are judged by.

It never imports ``inferno_mip.queueing`` or ``inferno_mip.tables``. Public names are imported on first use.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "Fleet": ".fleet",
    "ServerWindow": ".fleet",
    "LengthDist": ".lengths",
    "Replica": ".replica",
    "ReplicaConfig": ".replica",
    "Request": ".replica",
    "ReplicaResult": ".single",
    "simulate_replica": ".single",
    "ServerWorkload": ".workload",
    "Workload": ".workload",
    "SimulationError": ".errors",
    "load_allocation": ".allocation",
    "parse_allocation": ".allocation",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
