"""inferno-mip: accelerator allocation for LLM inference servers by queueing models and mathematical programming.

The public names are imported on first use, so ``import inferno_mip`` and ``inferno-mip --help`` stay cheap.
"""

from __future__ import annotations

from .lazy import lazy_exports

_EXPORTS = {
    "solve": ".api",
    "Solver": ".api",
    "load_scenario": ".io",
    "parse_system": ".io",
    "System": ".spec",
    "Solution": ".solution",
    "ServerAllocation": ".solution",
    "ScenarioError": ".errors",
}
__all__ = sorted(_EXPORTS)
_exported, __dir__ = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str):
    if name == "__version__":  # read from the package metadata only when asked: importlib.metadata is slow to load
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("inferno-mip")
        except PackageNotFoundError:  # a source tree that is not installed
            return "0+unknown"
    return _exported(name)
