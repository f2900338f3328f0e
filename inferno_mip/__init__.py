"""inferno-mip: accelerator allocation for LLM inference servers by queueing models and mathematical programming."""

from .api import solve
from .errors import ScenarioError
from .io import load_scenario, parse_system
from .solution import Solution, ServerAllocation
from .spec import System

__all__ = ["solve", "load_scenario", "parse_system", "System", "Solution", "ServerAllocation", "ScenarioError"]
__version__ = "0.1.0"
