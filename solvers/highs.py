"""HiGHS backend: the formulation's sparse matrix handed to highspy directly."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace

import highspy
import numpy as np

from inferno_mip.models.lexicographic import MipProblem, MipResult, SolveOptions, objective_scale
from inferno_mip.solution import Assignment
from inferno_mip.tables import CandidateTable

from .exact import solve_exact

_STATUS = {
    highspy.HighsModelStatus.kOptimal: "optimal",
    highspy.HighsModelStatus.kTimeLimit: "time-limit",
    highspy.HighsModelStatus.kInfeasible: "infeasible",
    highspy.HighsModelStatus.kSolutionLimit: "time-limit",
    highspy.HighsModelStatus.kIterationLimit: "time-limit",
    highspy.HighsModelStatus.kInterrupt: "time-limit",
}
PRESOLVE_AGGREGATOR = 1 << 12  # the aggregator's bit in presolve_rule_off (HiGHS 1.14 logs it as "Rule 12")
CUTOFF_MIN_COLUMNS = 10_000  # fewest columns of a count stage's MIP searched under its cutoff first ("cutoff"): at
                             # 1,000 x 20 (about 5,000) HiGHS proves those stages in 1-2 s anyway, and the plans
                             # found under the cutoff started the best-effort stage worse (RESULTS.md, "Twelfth round")
CUTOFF_SHARE = 0.5  # of a stage's time, at most, for the search under its cutoff
MIN_RUN_TIME = 1e-3  # s: HiGHS is not started with less
# HiGHS's root heuristics all off: from a known optimum, what is left of a run is the proof (benchmarks/fast.py floor)
ROOT_HEURISTICS_OFF = {"mip_heuristic_effort": 0.0, "mip_heuristic_run_rins": False, "mip_heuristic_run_rens": False,
                       "mip_heuristic_run_root_reduced_cost": False, "mip_heuristic_run_feasibility_jump": False}


def solve_stage(problem: MipProblem, options: SolveOptions, settings: Mapping[str, object] | None = None) -> MipResult:
    """One MIP with HiGHS; the warm start, if feasible, is its first incumbent. `settings`: further HiGHS options by
    name, set last (``benchmarks/fast.py floor`` turns the root heuristics off with them).

    With ``cutoff``, a ``lower_bound`` that the start does not meet and at least CUTOFF_MIN_COLUMNS columns, HiGHS
    first searches with every plan above the bound cut off (its ``objective_bound``, the bound + 0.5 as the
    objective is integral), within a share of the time: a plan found there is optimal. Otherwise the plain MIP
    runs with the time left. Plans are checked against the cutoff here, as HiGHS 1.14 reports "optimal" with a plan
    above it (the start, or one its heuristics found)."""
    bound, start = problem.lower_bound, problem.warm_start
    if ("cutoff" not in options.speedups or bound is None or problem.maximize or len(problem.lb) < CUTOFF_MIN_COLUMNS
            or (start is not None and float(problem.c @ start) <= bound + 0.5)):
        return _run(problem, options, settings=settings)
    began = time.perf_counter()
    cutoff = bound + 0.5
    searched = _run(problem, replace(options, time_limit=CUTOFF_SHARE * options.time_limit), cutoff, settings)
    value = None if searched.x is None else float(problem.c @ searched.x)
    if value is not None and value <= cutoff:
        return MipResult("optimal", searched.x, value, bound)
    left = options.time_limit - (time.perf_counter() - began)
    if left >= MIN_RUN_TIME:
        return _run(problem, replace(options, time_limit=left), settings=settings)
    return searched if value is None else MipResult("time-limit", searched.x, value, None)


def _run(problem: MipProblem, options: SolveOptions, cutoff: float | None = None,
         settings: Mapping[str, object] | None = None) -> MipResult:
    """One HiGHS run of the MIP; with a `cutoff`, every plan above it is pruned."""
    h = highspy.Highs()
    scale = objective_scale(problem.c)
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", max(float(options.time_limit), 1e-3))
    h.setOptionValue("mip_rel_gap", float(options.mip_gap))
    h.setOptionValue("mip_abs_gap", max(float(options.abs_gap) * scale, 1e-9))
    h.setOptionValue("threads", int(options.threads))
    h.setOptionValue("random_seed", int(options.seed))
    if "no-aggregator" in options.speedups:
        h.setOptionValue("presolve_rule_off", PRESOLVE_AGGREGATOR)
    if "no-rens" in options.speedups:
        h.setOptionValue("mip_heuristic_run_rens", False)
    if cutoff is not None:
        h.setOptionValue("objective_bound", float(cutoff) * scale)
    for name, value in (settings or {}).items():
        h.setOptionValue(name, value)
    lp = highspy.HighsLp()
    n, m = len(problem.lb), problem.A.shape[0]
    lp.num_col_, lp.num_row_ = n, m
    lp.col_cost_ = np.asarray(problem.c, dtype=np.float64) * scale
    lp.col_lower_ = _inf(problem.lb)
    lp.col_upper_ = _inf(problem.ub)
    lp.row_lower_ = _inf(problem.row_lb)
    lp.row_upper_ = _inf(problem.row_ub)
    csc = problem.A.tocsc()
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = csc.indptr.astype(np.int32)
    lp.a_matrix_.index_ = csc.indices.astype(np.int32)
    lp.a_matrix_.value_ = csc.data.astype(np.float64)
    lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
                       for i in problem.integer]
    lp.sense_ = highspy.ObjSense.kMaximize if problem.maximize else highspy.ObjSense.kMinimize
    h.passModel(lp)
    if problem.warm_start is not None:
        start = highspy.HighsSolution()
        start.col_value = np.asarray(problem.warm_start, dtype=np.float64).tolist()
        h.setSolution(start)
    h.run()
    model_status = h.getModelStatus()
    info = h.getInfo()
    status = _STATUS.get(model_status, "error")
    if info.primal_solution_status != 2:  # no feasible solution
        return MipResult(status if status != "optimal" else "error", None,
                         message=f"HiGHS: {h.modelStatusToString(model_status)}")
    x = np.array(h.getSolution().col_value, dtype=np.float64)
    x[problem.integer] = np.rint(x[problem.integer])
    return MipResult(status, x, float(problem.c @ x), float(info.mip_dual_bound) / scale)


def _inf(values: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(values, dtype=np.float64), -highspy.kHighsInf, highspy.kHighsInf)


def solve(table: CandidateTable, **options) -> Assignment:
    """Exact allocation with HiGHS (lexicographic priorities, best effort, transition value)."""
    return solve_exact(table, solve_stage, **options)
