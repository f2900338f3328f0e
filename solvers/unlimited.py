"""Unlimited capacity: the separable optimum, each server on its lowest-value candidate."""

from __future__ import annotations

import numpy as np

from inferno_mip.solution import Assignment, objective_value
from inferno_mip.tables import CandidateTable


def solve(table: CandidateTable, **_options) -> Assignment:
    """Each server takes its first candidate (lowest value; ties by cost, units, accelerator name)."""
    # Candidates are grouped by server and sorted best first, so the first index of each server is its optimum.
    _, first = np.unique(table.server, return_index=True)
    counts = np.zeros(len(table), dtype=np.int64)
    counts[first] = table.replicas[first]
    objective = objective_value(table, counts)
    return Assignment(counts=counts, status="optimal", objective=objective, bound=objective, gap=0.0)
