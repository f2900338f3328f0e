"""inferno-mip: accelerator allocation for LLM inference servers by queueing models and mathematical programming.

The public names are imported on first use, so ``import inferno_mip`` and ``inferno-mip --help`` stay cheap.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .lazy import lazy_exports

_EXPORTS = {
    "solve": ".api",
    "load_scenario": ".io",
    "parse_system": ".io",
    "System": ".spec",
    "Solution": ".solution",
    "ServerAllocation": ".solution",
    "ScenarioError": ".errors",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

try:
    __version__ = version("inferno-mip")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"
