"""pyomo backend: the same formulation as a pyomo model, solved by any installed pyomo solver.

HiGHS through appsi is the default; CBC, GLPK, SCIP, Gurobi or CPLEX are used where installed
(``pyomo_solver="cbc"`` etc.). Their option names for time limit, gap, threads and seed differ; ``OPTION_NAMES``
maps ours onto theirs.
"""

from __future__ import annotations

import math

import numpy as np
import pyomo.environ as pyo
from pyomo.opt import SolverStatus, TerminationCondition

from inferno_mip.models.lexicographic import MipProblem, MipResult, SolveOptions, objective_scale
from inferno_mip.solution import Assignment
from inferno_mip.tables import CandidateTable

from .exact import solve_exact

DEFAULT_SOLVER = "appsi_highs"
OPTION_NAMES = {  # ours -> the solver's: time limit (s), relative gap, threads, seed
    "appsi_highs": ("time_limit", "mip_rel_gap", "threads", "random_seed"),
    "highs": ("time_limit", "mip_rel_gap", "threads", "random_seed"),
    "cbc": ("sec", "ratio", "threads", "randomSeed"),
    "glpk": ("tmlim", "mipgap", None, None),
    "scip": ("limits/time", "limits/gap", None, "randomization/randomseedshift"),
    "gurobi": ("TimeLimit", "MIPGap", "Threads", "Seed"),
    "cplex": ("timelimit", "mip_tolerances_mipgap", "threads", "randomseed"),
}
INTEGER_SECONDS = {"sec", "tmlim"}  # CBC and GLPK take whole seconds
WARM_STARTABLE = {"appsi_highs", "cbc", "gurobi", "cplex"}
_OK = {TerminationCondition.optimal, TerminationCondition.locallyOptimal, TerminationCondition.globallyOptimal}
_LIMIT = {TerminationCondition.maxTimeLimit, TerminationCondition.maxIterations,
          TerminationCondition.maxEvaluations, TerminationCondition.userInterrupt}


def available_solvers() -> list[str]:
    """pyomo solvers of OPTION_NAMES that are installed here."""
    found = []
    for name in OPTION_NAMES:
        try:
            if pyo.SolverFactory(name).available(exception_flag=False):
                found.append(name)
        except Exception:  # a solver plugin that cannot even be probed is simply not available
            continue
    return found


def to_pyomo(problem: MipProblem) -> pyo.ConcreteModel:
    """The stage as a pyomo model: one variable per column, one constraint per row of the sparse matrix."""
    m = pyo.ConcreteModel()
    n = len(problem.lb)
    m.v = pyo.Var(range(n))
    for j in range(n):
        var = m.v[j]
        var.domain = pyo.Integers if problem.integer[j] else pyo.Reals
        var.setlb(float(problem.lb[j]) if np.isfinite(problem.lb[j]) else None)
        var.setub(float(problem.ub[j]) if np.isfinite(problem.ub[j]) else None)
        if problem.warm_start is not None:
            var.value = float(problem.warm_start[j])
    A = problem.A.tocsr()
    m.rows = pyo.ConstraintList()
    for r in range(A.shape[0]):
        span = slice(A.indptr[r], A.indptr[r + 1])
        if span.start == span.stop:  # a row without entries (e.g. a type no column of the stage uses): pyomo
            continue                 # rejects it as a constant; solve_stage has checked that 0 keeps it
        body = pyo.quicksum(float(a) * m.v[int(j)] for a, j in zip(A.data[span], A.indices[span]))
        lo = float(problem.row_lb[r]) if np.isfinite(problem.row_lb[r]) else None
        hi = float(problem.row_ub[r]) if np.isfinite(problem.row_ub[r]) else None
        m.rows.add(pyo.inequality(lo, body, hi) if lo is not None and hi is not None and lo != hi
                   else (body == lo) if lo is not None and lo == hi else (body >= lo) if lo is not None
                   else (body <= hi))
    nonzero = np.flatnonzero(problem.c)
    scale = objective_scale(problem.c)
    m.obj = pyo.Objective(expr=pyo.quicksum(float(problem.c[j] * scale) * m.v[int(j)] for j in nonzero),
                          sense=pyo.maximize if problem.maximize else pyo.minimize)
    return m


def stage_solver(name: str = DEFAULT_SOLVER):
    """A backend function for the lexicographic driver that solves each stage with pyomo solver `name`."""
    if name not in OPTION_NAMES:
        raise ValueError(f"unknown pyomo solver {name!r}; known: {', '.join(OPTION_NAMES)}")

    def solve_stage(problem: MipProblem, options: SolveOptions) -> MipResult:
        empty = np.flatnonzero(np.diff(problem.A.tocsr().indptr) == 0)
        broken = empty[(problem.row_lb[empty] > 0) | (problem.row_ub[empty] < 0)]
        if len(broken):
            return MipResult("infeasible", None, message=f"pyomo/{name}: row {int(broken[0])} has no entries and "
                                                         "excludes 0")
        model = to_pyomo(problem)
        opt = pyo.SolverFactory(name)
        if not opt.available(exception_flag=False):
            return MipResult("error", None, message=f"pyomo solver {name!r} is not installed")
        for key, value in zip(OPTION_NAMES[name], (max(options.time_limit, 1e-3), options.mip_gap,
                                                   options.threads, options.seed)):
            if key is not None:
                opt.options[key] = max(1, math.ceil(value)) if key in INTEGER_SECONDS else value
        kwargs = {"warmstart": True} if problem.warm_start is not None and name in WARM_STARTABLE else {}
        results = opt.solve(model, load_solutions=False, **kwargs)
        condition = results.solver.termination_condition
        if condition == TerminationCondition.infeasible:
            return MipResult("infeasible", None, message=f"pyomo/{name}: infeasible")
        try:
            model.solutions.load_from(results)
            x = np.array([pyo.value(model.v[j], exception=False) or 0.0 for j in range(len(problem.lb))])
        except Exception as exc:  # no solution in the results (e.g. time limit before the first incumbent)
            return MipResult("time-limit" if condition in _LIMIT else "error", None, message=f"pyomo/{name}: {exc}")
        x[problem.integer] = np.rint(x[problem.integer])
        status = "optimal" if condition in _OK and results.solver.status == SolverStatus.ok else (
            "time-limit" if condition in _LIMIT else "error")
        bound = _bound(results, problem.maximize)  # of the scaled objective (to_pyomo)
        return MipResult(status, x, float(problem.c @ x),
                         None if bound is None else bound / objective_scale(problem.c))

    return solve_stage


def _bound(results, maximize: bool) -> float | None:
    try:
        value = results.problem.upper_bound if maximize else results.problem.lower_bound
        return float(value) if value is not None and np.isfinite(float(value)) else None
    except (TypeError, ValueError, AttributeError):
        return None


def check_options(pyomo_solver: str = DEFAULT_SOLVER, **_options) -> None:
    """ValueError unless `pyomo_solver` is known and installed here (checked before sizing)."""
    if pyomo_solver not in OPTION_NAMES:
        raise ValueError(f"unknown pyomo solver {pyomo_solver!r}; known: {', '.join(OPTION_NAMES)}")
    try:
        usable = pyo.SolverFactory(pyomo_solver).available(exception_flag=False)
    except Exception:  # a plugin that cannot even be probed cannot run either
        usable = False
    if not usable:
        found = available_solvers()
        raise ValueError(f"pyomo solver {pyomo_solver!r} is not installed here; available: "
                         f"{', '.join(found) if found else 'none'}")


def solve(table: CandidateTable, *, pyomo_solver: str = DEFAULT_SOLVER, **options) -> Assignment:
    """Exact allocation through pyomo with `pyomo_solver` (default HiGHS via appsi)."""
    return solve_exact(table, stage_solver(pyomo_solver), **options)
