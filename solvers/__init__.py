"""Solver backends behind one registry: each maps a candidate table to an Assignment.

Backends are imported on first use, so that naming or listing them costs nothing and a solve with the greedy
never loads HiGHS, OR-Tools or pyomo.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import import_module
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from inferno_mip.solution import Assignment

Solver = Callable[..., "Assignment"]

BACKEND_MODULES = {  # registered name -> module of this package defining `solve`
    "greedy": "greedy",
    "highs": "highs",
    "cpsat": "cpsat",
    "pyomo": "pyomo_solver",
    "unlimited": "unlimited",
}


class _LazySolvers(Mapping):
    """Read-only name -> solve function map that imports a backend's module when it is first looked up."""

    def __getitem__(self, name: str) -> Solver:
        return _backend_module(name).solve

    def __iter__(self) -> Iterator[str]:
        return iter(BACKEND_MODULES)

    def __len__(self) -> int:
        return len(BACKEND_MODULES)

    def __contains__(self, name: object) -> bool:
        return name in BACKEND_MODULES


SOLVERS: Mapping[str, Solver] = _LazySolvers()


def _backend_module(name: str):
    """The module of registered backend `name`, imported now if it was not yet (KeyError if unknown)."""
    return import_module(f"{__name__}.{BACKEND_MODULES[name]}")


def get_solver(name: str) -> Solver:
    """The solver registered as `name`; a clear error listing the known ones otherwise."""
    return SOLVERS[check_solver_name(name)]


def check_backend(name: str, options: dict) -> None:
    """Raise ValueError if backend `name` cannot run with `options` here (e.g. a pyomo solver not installed).

    A backend module may define ``check_options(**options)``; it is called before any sizing starts.
    """
    check = getattr(_backend_module(check_solver_name(name)), "check_options", None)
    if check is not None:
        check(**options)


def check_solver_name(name: str) -> str:
    """`name` if it is a registered solver, else the ValueError of :func:`get_solver` (nothing imported)."""
    if name not in BACKEND_MODULES:
        raise ValueError(f"unknown solver {name!r}; known: {', '.join(sorted(BACKEND_MODULES))}")
    return name


__all__ = ["SOLVERS", "BACKEND_MODULES", "Solver", "check_backend", "check_solver_name", "get_solver"]
