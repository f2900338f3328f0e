"""Solver backends behind one registry: each maps a candidate table to an Assignment."""

from __future__ import annotations

from typing import Callable

from inferno_mip.solution import Assignment
from inferno_mip.tables import CandidateTable

from . import cpsat, greedy, highs, pyomo_solver, unlimited

Solver = Callable[..., Assignment]

SOLVERS: dict[str, Solver] = {
    "greedy": greedy.solve,
    "highs": highs.solve,
    "cpsat": cpsat.solve,
    "pyomo": pyomo_solver.solve,
    "unlimited": unlimited.solve,
}


def get_solver(name: str) -> Solver:
    """The solver registered as `name`; a clear error listing the known ones otherwise."""
    try:
        return SOLVERS[name]
    except KeyError:
        raise ValueError(f"unknown solver {name!r}; known: {', '.join(sorted(SOLVERS))}") from None


__all__ = ["SOLVERS", "Solver", "get_solver", "CandidateTable", "Assignment"]
