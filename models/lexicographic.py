"""Lexicographic optimisation of a formulation's stages with any MIP backend.

Each stage is optimised with the earlier stages' optima kept as constraints, so a higher priority is never traded
for a lower one, and no weights that could drown the cost in floating-point noise are needed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp

from .allocation import Formulation

_LOG = logging.getLogger(__name__)  # stage progress for `solve --verbose`
FIX_RTOL = 1e-9
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
        # Count stages are integral and solved exactly; the others to the caller's gap. An earlier stage may use
        # part of the time only, so that the cost is always optimised too.
        gap = 0.0 if stage.integral else options.mip_gap
        share = 1.0 if stage.name == "value" else EARLY_STAGE_SHARE
        stage_options = SolveOptions(remaining * share, gap, options.threads, options.seed)
        began = time.perf_counter()
        result = backend(problem, stage_options)
        log.append((stage.name, result.status, result.objective, time.perf_counter() - began))
        _LOG.info("stage %s: %s, objective %s, bound %s, gap %s, %.2f s", stage.name, result.status,
                  result.objective, result.bound, _gap(result.objective, result.bound), log[-1][3])
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
        value = float(stage.c @ x)
        if stage.name == "value":
            break
        extra_rows.append(stage.c)
        if stage.integral:
            bound = float(np.round(value))
            extra_lb.append(bound if stage.maximize else -np.inf)
            extra_ub.append(np.inf if stage.maximize else bound)
        else:
            tol = FIX_RTOL * max(1.0, abs(value))
            extra_lb.append(value - tol if stage.maximize else -np.inf)
            extra_ub.append(np.inf if stage.maximize else value + tol)
        if len(stage.freeze_cols):
            lb = lb.copy() if lb is form.lb else lb
            lb[stage.freeze_cols] = np.round(x[stage.freeze_cols])
            ub[stage.freeze_cols] = np.round(x[stage.freeze_cols])
    if x is None:
        return LexResult(None, "failed", None, None, None, tuple(log))
    bound = last.bound if last is not None and log and log[-1][0] == "value" else None
    return _result(form, x, status, bound, tuple(log))


def _result(form: Formulation, x: np.ndarray, status: str, bound: float | None, log, message: str = "") -> LexResult:
    objective = float(form.stages[-1].c @ x)
    if status == "optimal" and (bound is None or not np.isfinite(bound)):
        bound = objective
    return LexResult(x, status, objective, bound, _gap(objective, bound), log, message)


def _gap(objective: float | None, bound: float | None) -> float | None:
    """Relative optimality gap |objective - bound| / |objective|; None without both."""
    if objective is None or bound is None:
        return None
    return abs(objective - bound) / max(abs(objective), 1e-9)


def _feasible(form: Formulation, x: np.ndarray, tol: float = 1e-6) -> bool:
    ax = form.A @ x
    return bool(np.all(x >= form.lb - tol) and np.all(x <= form.ub + tol) and np.all(ax >= form.row_lb - tol)
                and np.all(ax <= form.row_ub + tol))
