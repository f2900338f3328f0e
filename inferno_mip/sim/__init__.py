"""Fleet simulator, request by request: the yardstick the perf models are judged by.

It never imports ``inferno_mip.queueing`` or ``inferno_mip.tables``.
"""

from .errors import SimulationError
from .lengths import LengthDist
from .replica import Replica, ReplicaConfig, Request
from .single import ReplicaResult, simulate_replica

__all__ = ["LengthDist", "Replica", "ReplicaConfig", "ReplicaResult", "Request", "SimulationError",
           "simulate_replica"]
