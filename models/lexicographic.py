"""Lexicographic optimisation of a formulation's stages with any MIP backend.

Each stage is optimised with the earlier stages' optima kept as constraints, so a higher priority is never traded
for a lower one, and no weights that could drown the cost in floating-point noise are needed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp

from .allocation import Formulation, Stage
from .relaxation import lp_optimum

FIX_RTOL = 1e-9
# Speed-ups of the staged solve, each exact (same statuses, unserved counts and value) and switchable:
#   skip       a stage whose start is provably optimal is not solved: a count of 0, or a start that meets the
#              stage's LP bound (rounded up for the integral count stages; a best-effort level that the LP
#              proves to be 0 is the common case)
#   abs-gap    integral count stages stop at an absolute gap below 1 (the next better count is an integer)
#   dominance  full service by a candidate with no fewer units and no less value than another of the same
#              server and accelerator type is dropped (models.allocation.dominated)
SPEEDUPS = ("skip", "abs-gap", "dominance")
INTEGRAL_ABS_GAP = 0.99
LP_TOL = 1e-6  # an LP optimum this close to the start's objective proves it (relative, at least absolute)
EARLY_STAGE_SHARE = 0.5  # of the remaining time, at most, for a stage before the last (a timed-out stage keeps
                         # its incumbent's value, which is feasible, and the next stages go on)


@dataclass(frozen=True)
class MipProblem:
    """One stage: optimise ``c · v`` subject to the formulation's rows plus the fixed stage rows."""

    A: sp.csr_matrix
    row_lb: np.ndarray
    row_ub: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    integer: np.ndarray
    c: np.ndarray
    maximize: bool
    warm_start: np.ndarray | None = None
    fixed_rows: int = 0  # the last rows of A keep earlier stages' objectives (optimality cuts, not physics)


@dataclass(frozen=True)
class MipResult:
    status: str  # optimal, time-limit (with or without a solution), infeasible, error
    x: np.ndarray | None
    objective: float | None = None
    bound: float | None = None
    message: str = ""


@dataclass(frozen=True)
class SolveOptions:
    time_limit: float = 60.0  # seconds for all stages together
    mip_gap: float = 1e-7  # relative gap of the final (value) stage; earlier stages are solved exactly
    threads: int = 1
    seed: int = 0
    speedups: frozenset = frozenset(SPEEDUPS)
    abs_gap: float = 0.0  # absolute gap at which a backend may stop (0: only the relative one)


def parse_speedups(value) -> frozenset:
    """'all', 'none', a comma-separated list or an iterable of names from SPEEDUPS."""
    if value is None or value == "all":
        return frozenset(SPEEDUPS)
    if value == "none" or value == "":
        return frozenset()
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    unknown = sorted(set(names) - set(SPEEDUPS))
    if unknown:
        raise ValueError(f"unknown speedup(s) {', '.join(unknown)}; known: {', '.join(SPEEDUPS)}, all, none")
    return frozenset(names)


Backend = Callable[[MipProblem, SolveOptions], MipResult]


@dataclass(frozen=True)
class LexResult:
    x: np.ndarray | None
    status: str  # optimal, time-limit, failed
    objective: float | None
    bound: float | None
    gap: float | None
    stages: tuple[tuple[str, str, float | None, float], ...]  # (stage, status, objective, seconds)
    message: str = ""


def solve_lexicographic(form: Formulation, backend: Backend, options: SolveOptions,
                        warm_start: np.ndarray | None = None) -> LexResult:
    """Optimise the stages in order within ``options.time_limit``; returns the last stage's solution."""
    deadline = time.perf_counter() + options.time_limit
    extra_rows: list[np.ndarray] = []
    extra_lb: list[float] = []
    extra_ub: list[float] = []
    lb, ub = form.lb, form.ub.copy()
    x = warm_start if warm_start is not None and _feasible(form, warm_start) else None
    status, log, last = "optimal", [], None
    for stage in form.stages:
        if not stage.c.any():
            continue
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            status = "time-limit"
            break
        A = form.A if not extra_rows else sp.vstack([form.A, sp.csr_matrix(np.array(extra_rows))], format="csr")
        stage_ub, start = ub, x
        if len(stage.zero_cols):
            stage_ub = ub.copy()
            stage_ub[stage.zero_cols] = 0.0
            if x is not None:  # zeroing unrewarded partial service keeps every constraint satisfied
                start = x.copy()
                start[stage.zero_cols] = 0.0
        problem = MipProblem(A=A, row_lb=np.r_[form.row_lb, extra_lb], row_ub=np.r_[form.row_ub, extra_ub],
                             lb=lb, ub=stage_ub, integer=form.integer, c=stage.c, maximize=stage.maximize,
                             warm_start=start, fixed_rows=len(extra_rows))
        began = time.perf_counter()
        if "skip" in options.speedups and start is not None and _start_is_optimal(stage, problem, start):
            x = start
            log.append((stage.name, "skipped", float(stage.c @ x), time.perf_counter() - began))
            if stage.name == "value":
                last = MipResult("optimal", x, float(stage.c @ x), float(stage.c @ x))
                break
        else:
            # Count stages are integral and solved exactly; the others to the caller's gap. An earlier stage may
            # use part of the time only, so that the cost is always optimised too.
            gap = 0.0 if stage.integral else options.mip_gap
            share = 1.0 if stage.name == "value" else EARLY_STAGE_SHARE
            abs_gap = INTEGRAL_ABS_GAP if stage.integral and "abs-gap" in options.speedups else 0.0
            stage_options = SolveOptions(remaining * share, gap, options.threads, options.seed, options.speedups,
                                         abs_gap)
            result = backend(problem, stage_options)
            log.append((stage.name, result.status, result.objective, time.perf_counter() - began))
            if result.x is None:
                # Keep the previous stage's solution: it satisfies every constraint, just not this stage's optimum.
                status = "time-limit" if result.status == "time-limit" else "feasible"
                message = f"stage {stage.name!r}: {result.message or result.status}"
                if x is None:
                    return LexResult(None, "failed", None, None, None, tuple(log), message)
                return _result(form, x, status, None, tuple(log), message)
            x = result.x
            last = result
            if result.status != "optimal":
                status = "time-limit"
            if stage.name == "value":
                break
        row, row_lb, row_ub = _keep_optimal(stage, float(stage.c @ x))
        extra_rows.append(row)
        extra_lb.append(row_lb)
        extra_ub.append(row_ub)
        if len(stage.freeze_cols):
            lb = lb.copy() if lb is form.lb else lb
            lb[stage.freeze_cols] = np.round(x[stage.freeze_cols])
            ub[stage.freeze_cols] = np.round(x[stage.freeze_cols])
    if x is None:
        return LexResult(None, "failed", None, None, None, tuple(log))
    bound = last.bound if last is not None and log and log[-1][0] == "value" else None
    return _result(form, x, status, bound, tuple(log))


def _keep_optimal(stage: Stage, value: float) -> tuple[np.ndarray, float, float]:
    """The row that keeps a solved stage at its optimum in the later stages."""
    if stage.integral:
        bound = float(np.round(value))
        return stage.c, (bound if stage.maximize else -np.inf), (np.inf if stage.maximize else bound)
    tol = FIX_RTOL * max(1.0, abs(value))
    return stage.c, (value - tol if stage.maximize else -np.inf), (np.inf if stage.maximize else value + tol)


def _start_is_optimal(stage: Stage, problem: MipProblem, start: np.ndarray) -> bool:
    """Whether the stage's start is optimal without a MIP solve: nothing to gain, or it meets the LP bound."""
    at_start = float(stage.c @ start)
    if not stage.maximize and at_start <= 0 and np.all(stage.c >= 0):
        return True  # a count of 0 cannot be improved
    if stage.name == "value":
        return False  # its LP bound is rarely tight; the MIP's root solves that LP anyway
    bound = lp_optimum(problem.A, problem.row_lb, problem.row_ub, problem.lb, problem.ub, stage.c, stage.maximize)
    if bound is None:
        return False
    tol = LP_TOL * max(1.0, abs(bound))
    if stage.integral:
        bound = np.floor(bound + tol) if stage.maximize else np.ceil(bound - tol)
        tol = 1e-9
    return at_start >= bound - tol if stage.maximize else at_start <= bound + tol


def _result(form: Formulation, x: np.ndarray, status: str, bound: float | None, log, message: str = "") -> LexResult:
    objective = float(form.stages[-1].c @ x)
    if status == "optimal" and (bound is None or not np.isfinite(bound)):
        bound = objective
    gap = None if bound is None else abs(objective - bound) / max(abs(objective), 1e-9)
    return LexResult(x, status, objective, bound, gap, log, message)


def _feasible(form: Formulation, x: np.ndarray, tol: float = 1e-6) -> bool:
    ax = form.A @ x
    return bool(np.all(x >= form.lb - tol) and np.all(x <= form.ub + tol) and np.all(ax >= form.row_lb - tol)
                and np.all(ax <= form.row_ub + tol))
