"""Fleet simulator, request by request: the yardstick the perf models are judged by.

It never imports ``inferno_mip.queueing`` or ``inferno_mip.tables``.
"""

from ..lazy import lazy_exports

_EXPORTS = {
    "Fleet": ".fleet",
    "LengthDist": ".lengths",
    "Replica": ".replica",
    "ReplicaConfig": ".replica",
    "ReplicaResult": ".single",
    "Request": ".replica",
    "ServerWindow": ".fleet",
    "ServerWorkload": ".workload",
    "SimulationError": ".errors",
    "Workload": ".workload",
    "simulate_replica": ".single",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["Fleet", "LengthDist", "Replica", "ReplicaConfig", "ReplicaResult", "Request", "ServerWindow",
           "ServerWorkload", "SimulationError", "Workload", "simulate_replica"]
