"""OR-Tools CP-SAT backend.

CP-SAT needs integer coefficients. Rows with fractional coefficients are scaled by ``ROW_SCALE`` and rounded
conservatively (every variable is >= 0): for ``a·v <= ub`` coefficients round up and the bound down, for
``a·v >= lb`` coefficients round down and the bound up. So any integer point CP-SAT accepts satisfies the
original row: an infeasible plan never looks feasible. Objectives are scaled by ``OBJECTIVE_SCALE`` and rounded;
the reported objective is recomputed from the solution in float64.
"""

from __future__ import annotations

import math

import numpy as np
from ortools.sat.python import cp_model

from inferno_mip.models.lexicographic import MipProblem, MipResult, SolveOptions
from inferno_mip.solution import Assignment
from inferno_mip.tables import CandidateTable

from .exact import solve_exact

ROW_SCALE = 10**6
OBJECTIVE_SCALE = 10**6
INT_TOL = 1e-9
BIG = 2**62


def solve_stage(problem: MipProblem, options: SolveOptions) -> MipResult:
    """One MIP with CP-SAT (all variables must be integer)."""
    if not problem.integer.all():
        return MipResult("error", None, message="CP-SAT needs every variable integer")
    model = cp_model.CpModel()
    v = [model.NewIntVar(int(math.ceil(lo - INT_TOL)), int(math.floor(hi + INT_TOL)) if np.isfinite(hi) else BIG,
                         f"v{j}") for j, (lo, hi) in enumerate(zip(problem.lb, problem.ub))]
    A = problem.A.tocsr()
    first_fixed = A.shape[0] - problem.fixed_rows
    for r in range(A.shape[0]):
        cols = A.indices[A.indptr[r]:A.indptr[r + 1]]
        coef = A.data[A.indptr[r]:A.indptr[r + 1]]
        lo, hi = problem.row_lb[r], problem.row_ub[r]
        if r >= first_fixed and not _integral(coef):
            _add_fixed_objective(model, v, cols, coef, lo, hi, problem.warm_start)
            continue
        if _integral(coef) and _integral_bound(lo) and _integral_bound(hi):
            terms = [int(round(a)) * v[j] for a, j in zip(coef, cols)]
            if np.isfinite(lo) and np.isfinite(hi) and lo == hi:
                model.Add(sum(terms) == int(round(lo)))
                continue
            if np.isfinite(lo):
                model.Add(sum(terms) >= int(round(lo)))
            if np.isfinite(hi):
                model.Add(sum(terms) <= int(round(hi)))
            continue
        if np.isfinite(hi):  # round the left side up, the bound down
            model.Add(sum(int(math.ceil(a * ROW_SCALE - INT_TOL)) * v[j] for a, j in zip(coef, cols))
                      <= int(math.floor(hi * ROW_SCALE + INT_TOL)))
        if np.isfinite(lo):  # round the left side down, the bound up
            model.Add(sum(int(math.floor(a * ROW_SCALE + INT_TOL)) * v[j] for a, j in zip(coef, cols))
                      >= int(math.ceil(lo * ROW_SCALE - INT_TOL)))
    scale = 1 if _integral(problem.c) else OBJECTIVE_SCALE
    objective = sum(int(round(c * scale)) * v[j] for j, c in enumerate(problem.c) if c != 0)
    (model.Maximize if problem.maximize else model.Minimize)(objective)
    if problem.warm_start is not None:
        for j, value in enumerate(problem.warm_start):
            model.AddHint(v[j], int(round(value)))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(float(options.time_limit), 1e-3)
    solver.parameters.relative_gap_limit = float(options.mip_gap)
    if options.abs_gap > 0:
        solver.parameters.absolute_gap_limit = float(options.abs_gap) * scale
    solver.parameters.num_workers = max(int(options.threads), 1)
    solver.parameters.random_seed = int(options.seed)
    code = solver.Solve(model)
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        status = "infeasible" if code == cp_model.INFEASIBLE else "time-limit" if code == cp_model.UNKNOWN else "error"
        return MipResult(status, None, message=f"CP-SAT: {solver.StatusName(code)}")
    x = np.array([solver.Value(var) for var in v], dtype=np.float64)
    return MipResult("optimal" if code == cp_model.OPTIMAL else "time-limit", x, float(problem.c @ x),
                     solver.BestObjectiveBound() / scale)


def _add_fixed_objective(model, v, cols, coef, lo, hi, warm) -> None:
    """An earlier stage's objective kept near its optimum, rounded as that objective was.

    These rows are optimality cuts, not physical constraints: their bound is relaxed just enough to admit the
    previous stage's solution (the warm start) under the rounding, so rounding can never make a stage infeasible.
    """
    scaled = [int(round(a * OBJECTIVE_SCALE)) for a in coef]
    at_warm = sum(a * int(round(warm[j])) for a, j in zip(scaled, cols)) if warm is not None else None
    expr = sum(a * v[j] for a, j in zip(scaled, cols))
    if np.isfinite(lo):
        bound = int(math.ceil(lo * OBJECTIVE_SCALE - 0.5 * len(cols)))
        model.Add(expr >= (bound if at_warm is None else min(bound, at_warm)))
    if np.isfinite(hi):
        bound = int(math.floor(hi * OBJECTIVE_SCALE + 0.5 * len(cols)))
        model.Add(expr <= (bound if at_warm is None else max(bound, at_warm)))


def _integral(values: np.ndarray) -> bool:
    values = np.asarray(values, dtype=np.float64)
    return bool(np.all(np.abs(values - np.rint(values)) <= INT_TOL))


def _integral_bound(value: float) -> bool:
    return not np.isfinite(value) or abs(value - round(value)) <= INT_TOL


def solve(table: CandidateTable, **options) -> Assignment:
    """Exact allocation with CP-SAT (lexicographic priorities, best effort, transition value)."""
    return solve_exact(table, solve_stage, **options)
