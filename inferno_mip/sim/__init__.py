"""Fleet simulator, request by request: the yardstick the perf models are judged by.

It never imports ``inferno_mip.queueing`` or ``inferno_mip.tables``.
"""

from .allocation import load_allocation, parse_allocation
from .errors import SimulationError
from .fleet import Fleet, ServerWindow
from .lengths import LengthDist
from .replica import Replica, ReplicaConfig, Request
from .single import ReplicaResult, simulate_replica
from .workload import ServerWorkload, Workload

__all__ = ["Fleet", "LengthDist", "Replica", "ReplicaConfig", "ReplicaResult", "Request", "ServerWindow",
           "ServerWorkload", "SimulationError", "Workload", "load_allocation", "parse_allocation", "simulate_replica"]
