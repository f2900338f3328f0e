"""Lexicographic optimisation of a formulation's stages with any MIP backend.

Each stage is optimised with the earlier stages' optima kept as constraints, so a higher priority is never traded
for a lower one, and no weights that could drown the cost in floating-point noise are needed.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import scipy.sparse as sp

from .allocation import Formulation, Stage, keeps_rows
from .count_rounding import round_counts
from .patterns import round_and_repair
from .relaxation import LpSolution, kept_row_bounds, lp_optimum, reduced_cost_fixing
from .stage_aggregate import aggregate_stage

_LOG = logging.getLogger(__name__)  # stage progress for `solve --verbose`
FIX_RTOL = 1e-9
# Speed-ups of the staged solve, each exact (same statuses, unserved counts and value) and switchable:
#   skip       a stage whose start is provably optimal is not solved: a count of 0, a best-effort level whose
#              every server is served (``Stage.zero_with``: no LP needed), or a start that meets the stage's LP
#              bound (rounded up for the integral count stages; a best-effort level that the LP proves to be 0
#              is the common case)
#   abs-gap    integral count stages stop at an absolute gap below 1 (the next better count is an integer)
#   dominance  full service by a candidate with no fewer units and no less value than another of the same
#              server and accelerator type is dropped (models.allocation.dominated)
#   aggregate  count stages solved on interchangeable servers aggregated (models.aggregate), then mapped back (a
#              stage that solve stops at its time share keeps its plan: the full form would only search it again)
#   rc-fix     best-effort and value stages: integer columns whose LP reduced cost exceeds the gap between the
#              start and the LP bound are fixed before the MIP (no solution as good as the start moves them)
#   slack      no MIP at all when every server's least-value full service fits the capacity together
#              (``separable_optimum``; checked by the exact driver before it even computes a warm start)
#   weighted-counts  the count stages as one MIP with mixed-radix weights when they fit (``weighted_counts``)
#   idle-partial     partial service of a best-effort level proven to be 0 is held at 0 later (``idle_columns``)
#   patterns   multi-assign full service as one binary per non-dominated minimal covering pattern of a server
#              (models.patterns): the LP covers no server with fractions of replicas
#   covers     multi-assign servers in the compact form get disaggregated cover rows (models.allocation._cover_cuts)
#   lp-round   count stages start from their LP optimum rounded and repaired (multi-assign:
#              models.patterns.round_and_repair; single-assign, full or aggregated: models.count_rounding) when that
#              is better than the start (and skip their MIP when it meets the LP bound)
#   aggregate-patterns  multi-assign count stages solved on interchangeable servers aggregated over their
#                     covering patterns (models.multi_aggregate), then mapped back
#   aggregate-stages  best-effort and value MIPs with the servers whose partial service is held at 0 aggregated
#                     into groups of interchangeable ones (models.stage_aggregate), then disaggregated
#   cover-master  with lp-round, multi-assign count stages (compact form) start from a restricted master over
#                 integer covers priced exactly from its LP (models.cover_master) instead of the LP rounded server
#                 by server, within the stage's time share, and take its Lagrangian bound where stronger than the
#                 LP's (the skip test and a stopped stage's bound); HiGHS gets what is left of that share
#   master-levels  with cover-master, multi-assign count stages stay one per level where weighted-counts would
#                  merge them: the master's bound over covers is a bound per level (a weighted stage's LP trades a
#                  fraction of a higher-level server against the weight's worth of lower ones), so per level it
#                  proves the higher levels and finds fewer unserved (RESULTS.md, "Heterogeneous, fifth round")
#   stage-bound  with cover-master, a multi-assign best-effort or value stage that HiGHS stops short of a proof (or
#                does not start) takes the Lagrangian bound over integer covers (models.stage_bound) where stronger
#                than HiGHS's, and the plan of that bound's master where better; it is proven when its plan meets
#                the bound within the gap (RESULTS.md, "sixth round")
#   no-aggregator  the HiGHS backend presolves without its aggregator rule (columns substituted out of equality
#                  rows; solvers.highs): the stages prove faster without it, and at 10,000 servers it ran 25 s
#                  past a stage's time limit (RESULTS.md, "Eighth round"); other backends ignore it
#   no-rens  the HiGHS backend solves the value stage without its RENS heuristic (a sub-MIP around the root LP, run
#            again after every root restart): that stage starts from the best-effort stage's plan, and its slow
#            proofs took up to twice as long with RENS; the count and best-effort stages keep it, as it shortens
#            theirs (RESULTS.md, "Ninth round"); other backends ignore it
#   count-fix  with skip, a single-assign best-effort stage whose start serves no one partially takes, as its LP test,
#              the LP over bounds that the row keeping its level's count tightens (relaxation.kept_row_bounds: that
#              count's LP leaves little room below the proven count, and each integer column moves only as far off
#              its LP bound as its reduced cost fits in that room), on the stage's MIP as aggregate-stages builds it
#              for HiGHS: a bound at most the plain LP's, which proves such levels 0 where the plain LP does not
#   aggregate-partial  with aggregate-stages, servers whose partial service is open join groups too (per partial
#                      option of a group, its replicas and members: models.stage_aggregate), and each server's
#                      partial options that agree in every coefficient become one: the best-effort stage of the
#                      level with unserved servers and the value stage after it are the ones this shrinks
#   cutoff  a single-assign count stage of one level whose start is above its rounded-up LP bound carries that bound
#           (``MipProblem.lower_bound``), and the HiGHS backend searches a large one (solvers.highs) first with every
#           plan above the bound cut off: a plan found there is optimal, and without one the plain MIP runs. Under the
#           cutoff HiGHS finds such a plan far sooner (10,000 x 20's priority-3 count stage: 4 s against 15-20 s).
#           The weighted count stage's LP trades levels, so its bound is rarely met; multi-assign count stages take
#           their starts and bounds from the cover master; other backends ignore the bound
SPEEDUPS = ("skip", "abs-gap", "dominance", "aggregate", "rc-fix", "slack", "weighted-counts", "idle-partial",
            "aggregate-stages", "patterns", "lp-round", "covers", "aggregate-patterns", "cover-master",
            "master-levels", "stage-bound", "no-aggregator", "no-rens", "count-fix", "aggregate-partial", "cutoff")
# On by default ("default"): all but rc-fix, patterns, covers and aggregate-patterns. With rc-fix, HiGHS 1.14 was
# seen to stop a value stage at "optimal" 25,520 on a 50-server cycle whose optimum (25,245) satisfied every bound it
# had fixed (reproduced in tests/test_speedups.py); the same MIP without the fixed bounds, or without its start, gives
# 25,245.
# patterns and covers are exact but not faster on the multi-assign fleets measured (benchmarks/RESULTS.md,
# "Heterogeneous"): the pattern form's count stages prove more slowly at 1,000 servers and building it costs
# 3.6 s there; they stay available by name. aggregate-patterns is exact and proves the count stages faster on
# most 50-server runs (median 1.8x), but not on all (0.6x once), and at 1,000 servers in 10 s it trades the lower
# level for the first (benchmarks/RESULTS.md, "Heterogeneous, second round"): available by name. cover-master is on
# by default: it changes only the multi-assign count stages' starts and time split (RESULTS.md, "Heterogeneous, third
# round"); so is master-levels, which changes only how a multi-assign fleet's count stages are split, and so is
# stage-bound, which acts only where HiGHS stops a multi-assign best-effort or value stage short of a proof.
# count-fix is on by default too: where it proves nothing it costs about as much as the plain LP test it replaces,
# and where it proves a level 0 it saves most of that stage (RESULTS.md, "Tenth round").
# aggregate-partial is on by default: it is exact and its MIPs are smaller (1,000 x 20 seed 2's priority-3 best
# effort 3x), faster at 200 servers and above, and no slower at 50 (RESULTS.md, "Eleventh round").
# cutoff is on by default: it acts only on the large count MIPs (solvers.highs.CUTOFF_MIN_COLUMNS), where it saved
# 15 s of the count stages at 10,000 x 20, and changes nothing below (RESULTS.md, "Twelfth round").
DEFAULT_SPEEDUPS = tuple(s for s in SPEEDUPS if s not in ("rc-fix", "patterns", "covers", "aggregate-patterns"))
WEIGHTED_COUNTS_LIMIT = 10**6  # largest weighted count objective: integral and far from float rounding
INTEGRAL_ABS_GAP = 0.99
LP_TOL = 1e-6  # an LP optimum this close to the start's objective proves it (relative, at least absolute)
COUNT_STAGE_SHARE = 0.7  # of the remaining time, at most, for a count stage (and for the aggregated count stages):
                         # the count of a level outranks everything after it
MIN_MIP_TIME = 0.05  # seconds below which a stage's MIP is not started (its start stands, with its LP bound)
PRESOLVE_PER_NONZERO = 4e-5  # s: HiGHS's presolve of a multi-assign stage at 1,000 x 20 (61,000 nonzeros) took about
                             # 2.5 s CPU whatever its time limit; with less time than that left, the MIP is not started
STAGE_BOUND_SHARE = 0.25  # of a multi-assign best-effort or value stage's MIP time, at most, kept for its bound over
                          # covers and its master's plan (models.stage_bound), used only when HiGHS stops short of a
                          # proof
STAGE_PLAN_SHARE = 0.4  # of that reserve, at least, for its master's plan after HiGHS (at 200 x 20 the bound alone
                        # took the whole reserve; the plan then needs 0.3-0.6 s); none where HiGHS is not started
STAGE_BOUND_STARVED_SHARE = 0.5  # of such a stage's time, at most, for that bound where HiGHS is not started (the
                                 # rest goes to the later stages)
STAGE_BOUND_PER_SERVER = 1e-2  # s: about what that bound and its master's plan took per server (50 and 200 x 20:
                               # 3-9 ms)
LP_TEST_SHARE = 0.25  # of a single-assign best-effort or value stage's time, at most, for the LP that may prove its
                     # start optimal (at 10,000 x 20 that LP took 14-50 s, longer than the stage's share)
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
    # A minimised stage whose objective is integral on integer points, with this proven lower bound (its LP bound
    # rounded up): a plan at it is optimal, and a backend may look for one first (``cutoff``)
    lower_bound: float | None = None


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


def objective_scale(c: np.ndarray) -> float:
    """The power of two (exact in floating point) that brings the largest cost up to [1, 2) when it is below 1.

    HiGHS 1.14 treats tiny costs with absolute tolerances: on a multi-assign best-effort stage (costs 5e-5 to 1e-3,
    a rate per served-share step) started from a feasible plan, its presolve proved that plan optimal where a
    better one exists (tests/test_heterogeneous.py); with the costs scaled it finds the better one. Backends hand
    their solver the costs times this and divide its bound by it.
    """
    top = float(np.max(np.abs(c), initial=0.0))
    return 1.0 if top == 0.0 or top >= 1.0 else 2.0 ** -math.floor(math.log2(top))


def parse_speedups(value) -> frozenset:
    """'default' (DEFAULT_SPEEDUPS), 'all', 'none', or a comma-separated list (or iterable) of names from SPEEDUPS
    in which 'default' and 'all' stand for their sets (e.g. 'default,patterns')."""
    if value is None:
        return frozenset(DEFAULT_SPEEDUPS)
    if value == "none" or value == "":
        return frozenset()
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    sets = {"default": DEFAULT_SPEEDUPS, "all": SPEEDUPS}
    unknown = sorted(set(names) - set(SPEEDUPS) - set(sets))
    if unknown:
        raise ValueError(f"unknown speedup(s) {', '.join(unknown)}; known: {', '.join(SPEEDUPS)}, default, all, "
                         "none")
    return frozenset(n for name in names for n in sets.get(name, (name,)))


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
                        warm_start: np.ndarray | None = None, aggregation=None) -> LexResult:
    """Optimise the stages in order within ``options.time_limit``; returns the last stage's solution.

    With an `aggregation` (models.aggregate) the count stages are solved on it first; its solution, mapped back,
    is optimal for them and starts the rest.
    """
    deadline = time.perf_counter() + options.time_limit
    extra_rows: list[np.ndarray] = []
    extra_lb: list[float] = []
    extra_ub: list[float] = []
    count_rows: dict[str, int] = {}  # row of A that keeps each solved count stage at its optimum
    lb, ub = form.lb, form.ub
    x = warm_start if warm_start is not None and keeps_rows(form, warm_start) else None
    status, log, last, notes = "optimal", [], None, []
    solved_counts: set[str] = set()
    stopped_counts: set[str] = set()  # count stages the aggregated solve stopped: its plan stands for them
    fixed_at: dict[str, float] = {}  # objective each solved stage is held at
    if aggregation is not None:
        x, solved_counts, stopped_counts, agg_log, agg_message = _aggregated_counts(form, aggregation, backend,
                                                                                    options, x, deadline)
        log.extend(agg_log)
        if agg_message:
            notes.append(f"aggregated: {agg_message}")
    per_level = ({"master-levels", "cover-master", "lp-round"} <= options.speedups and master_applies(form))
    plan = (weighted_counts(form.stages, form.ub) if "weighted-counts" in options.speedups and not per_level
            else [(s, (s,)) for s in form.stages])
    final = max((i for i, (stage, _) in enumerate(plan) if stage.c.any()), default=-1)  # the last stage to solve
    for index, (stage, parts) in enumerate(plan):
        if not stage.c.any():
            continue
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            status = "time-limit"
            left = [s.name for s, _ in plan[index:] if s.c.any()]
            notes.append(f"not reached: {', '.join(left)}")
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
        lp, lp_tried = None, False
        master_bound = -np.inf  # a count stage's bound from the cover master (integer covers), when stronger
        forced_zero = ("skip" in options.speedups and start is not None and stage.zero_with
                       and fixed_at.get(stage.zero_with) == 0.0 and float(stage.c @ start) == 0.0)
        improved = None
        if "skip" in options.speedups and start is not None and stage.maximize and not forced_zero:
            improved = partial_fill(form, problem, start)  # a better start: no LP can prove this one optimal
            if improved is not None:
                start = improved
                problem = replace(problem, warm_start=start)
        rounding = form.info.get("rounding", round_and_repair if form.heterogeneous else round_counts)
        master = "cover-master" in options.speedups and master_applies(form)
        # this stage's time: the last one takes what is left, a count stage more than the others
        budget = remaining * (1.0 if index == final else COUNT_STAGE_SHARE if stage.integral else EARLY_STAGE_SHARE)
        aggregated = all(part.name in solved_counts for part in parts)
        # the aggregated solve stopped at this stage's time share: the full form would repeat its search with a
        # weaker bound in less time, so its plan stands (the stage keeps that plan's value, as a timed-out one does)
        kept = stage.name in stopped_counts and start is not None
        # a count of 0 needs no better start (it is skipped below), nor one the aggregated stages solved
        if ("lp-round" in options.speedups and stage.integral and start is not None and not aggregated
                and not kept and float(stage.c @ start) > 0):
            lp, lp_tried = lp_optimum(A, problem.row_lb, problem.row_ub, lb, stage_ub, stage.c, stage.maximize,
                                      time_limit=budget), True
            if lp is not None and master:
                from .cover_master import cover_master

                # the master's share of the stage (it stops early once its plan meets its bound); HiGHS the rest
                outcome = None if _start_is_optimal(stage, problem, start, lp) else cover_master(
                    form, problem, lp.x, start, time_limit=budget - (time.perf_counter() - began),
                    target=_stage_bound(stage, None, lp.objective))
                rounded = None if outcome is None else outcome.x
                master_bound = -np.inf if outcome is None else outcome.bound
                how = "cover master"
            else:
                rounded = None if lp is None else rounding(form, problem, lp.x, start)
                how = "rounded LP"
            _LOG.info("stage %s: LP bound %s, start %s, %s %s (bound %s)", stage.name, _show(None if lp is None else
                      lp.objective), _show(float(stage.c @ start)), how, _show(None if rounded is None else
                                                                              float(stage.c @ rounded)),
                      _show(master_bound))
            if rounded is not None and float(stage.c @ rounded) < float(stage.c @ start):
                start = rounded
                problem = replace(problem, warm_start=start)
        # the MIP with interchangeable servers aggregated: HiGHS solves it, and count-fix tests it (its smaller LPs
        # proved stages the full form's did not, at 10,000 servers)
        aggregating = "aggregate-stages" in options.speedups and not stage.integral and "rc-fix" not in options.speedups
        partial_groups = "aggregate-partial" in options.speedups
        aggregated_stage = None
        skippable = (not (kept or aggregated or forced_zero) and "skip" in options.speedups and start is not None
                     and improved is None)
        # a single-assign best-effort stage starting at 0 (zero_with names its level's count): its LP test over the
        # bounds its level's count row tightens (at most the plain LP's bound, and at 10,000 servers cheaper on the
        # aggregated MIP than the plain LP on the full one)
        count_fixing = (skippable and "count-fix" in options.speedups and "rc-fix" not in options.speedups
                        and stage.zero_with in count_rows and float(stage.c @ start) == 0.0)
        if count_fixing:
            if aggregating:
                aggregated_stage, aggregating = aggregate_stage(form, problem, partial=partial_groups), False
            tested = problem if aggregated_stage is None else aggregated_stage.problem
            # the kept rows come last in both forms, in the same order
            row = tested.A.shape[0] - (A.shape[0] - count_rows[stage.zero_with])
            lp, lp_tried = _count_fixed_lp(tested, row, LP_TEST_SHARE * budget), True
        elif start is not None and not stage.integral and not forced_zero and (
                "rc-fix" in options.speedups or ("skip" in options.speedups and improved is None)):
            # multi-assign: within the stage's time (its bound over covers starts from the LP's duals); single-assign:
            # a share of it, as the test can only prove the start optimal and HiGHS solves that LP again
            limit = budget if master else LP_TEST_SHARE * budget
            lp, lp_tried = lp_optimum(A, problem.row_lb, problem.row_ub, lb, stage_ub, stage.c, stage.maximize,
                                      limit), True
        optimal_start = skippable and _start_is_optimal(stage, problem, start, lp, options.mip_gap, master_bound,
                                                        lp_tried)
        if kept:
            x, proven, status = start, None, "time-limit"
            log.append((stage.name, "time-limit", float(stage.c @ x), time.perf_counter() - began))
            _LOG.info("stage %s: the aggregated solve's plan stands (objective %s)", stage.name, _show(log[-1][2]))
        elif aggregated or forced_zero or optimal_start:
            x = start
            proven = 0.0 if forced_zero else lp.objective if lp is not None else None
            how = "aggregated" if aggregated else "skipped"
            log.append((stage.name, how, float(stage.c @ x), time.perf_counter() - began))
            _LOG.info("stage %s: %s, its start is optimal (objective %s)", stage.name, how, _show(log[-1][2]))
            if stage.name == "value":
                last = MipResult("optimal", x, float(stage.c @ x), float(stage.c @ x) if lp is None else lp.objective)
                break
        else:
            if lp is not None and "rc-fix" in options.speedups:
                fixed_lb, fixed_ub = reduced_cost_fixing(lp, stage.c, start, lb, stage_ub, form.integer,
                                                         LP_TOL * max(1.0, abs(lp.objective)))
                problem = replace(problem, lb=fixed_lb, ub=fixed_ub)
            # Count stages are integral and solved exactly; the others to the caller's gap. An earlier stage may
            # use part of the time only, so that the cost is always optimised too.
            gap = 0.0 if stage.integral else options.mip_gap
            abs_gap = INTEGRAL_ABS_GAP if stage.integral and "abs-gap" in options.speedups else 0.0
            if aggregating:
                aggregated_stage = aggregate_stage(form, problem, partial=partial_groups)
            # HiGHS gets what the LP, the starts and the aggregation left of the stage's time
            mip_time = budget - (time.perf_counter() - began)
            # a multi-assign best-effort or value stage keeps a share of its time for the bound over covers, used
            # if HiGHS stops short of a proof (or is not started)
            bounding = ("stage-bound" in options.speedups and master and not stage.integral and lp is not None
                        and lp.row_dual is not None)
            if bounding:
                reserve = min(STAGE_BOUND_SHARE * mip_time, STAGE_BOUND_PER_SERVER * len(form.unserved_cols))
                mip_time -= reserve
            # no-rens acts on the value stage only: the count and best-effort stages start from poorer plans, and
            # RENS's plans shorten their search
            speedups = options.speedups if stage.name == "value" else options.speedups - {"no-rens"}
            stage_options = SolveOptions(mip_time, gap, options.threads, options.seed, speedups, abs_gap)
            if ("cutoff" in options.speedups and stage.integral and not stage.maximize and len(parts) == 1
                    and lp is not None and not form.heterogeneous):
                problem = replace(problem, lower_bound=integral_bound(lp.objective))
            starved = start is not None and mip_time < MIN_MIP_TIME + (PRESOLVE_PER_NONZERO * problem.A.nnz
                                                                       if master else 0.0)
            if starved:
                # no time left for HiGHS (whose presolve does not stop at its time limit): the start stands
                result = MipResult("time-limit", start, float(stage.c @ start), None)
            elif aggregated_stage is None:
                result = backend(problem, stage_options)
            else:
                result = backend(aggregated_stage.problem, stage_options)
                if result.x is not None:
                    result = replace(result, x=aggregated_stage.disaggregate(result.x))
            if lp is not None and result.x is not None and result.status != "optimal":
                # a stage stopped early reports the LP's bound (a count stage: or the cover master's, when
                # stronger) where HiGHS's is weaker or missing
                result = replace(result, bound=_stage_bound(stage, result.bound, max(lp.objective, master_bound)))
            if bounding and result.x is not None and result.status != "optimal":
                left = budget - (time.perf_counter() - began)  # without HiGHS, the stage's time up to a share
                result = _bound_over_covers(form, problem, stage, result, lp, gap,
                                            min(left, STAGE_BOUND_STARVED_SHARE * budget) if starved else left,
                                            0.0 if starved else STAGE_PLAN_SHARE)
            log.append((stage.name, result.status, result.objective, time.perf_counter() - began))
            _LOG.info("stage %s: %s, objective %s, bound %s, gap %s, %.2f s", stage.name, result.status,
                      _show(result.objective), _show(result.bound), _show(_gap(result.objective, result.bound),
                                                                           ".1e"), log[-1][3])
            if result.x is None:
                # Keep the previous stage's solution: it satisfies every constraint, just not this stage's optimum.
                status = "time-limit" if result.status == "time-limit" else "feasible"
                message = f"stage {stage.name!r}: {result.message or result.status}"
                if x is None:
                    return LexResult(None, "failed", None, None, None, tuple(log), message)
                return _result(form, x, status, None, tuple(log), message)
            x = result.x
            last = result
            proven = result.bound if result.status == "optimal" else None
            if result.status != "optimal":
                status = "time-limit"
                if stage.name != "value":
                    notes.append(f"{stage.name} stopped at its time share{_gap_note(result)}")
            if stage.name == "value":
                break
        if "idle-partial" in options.speedups and stage.maximize and proven is not None:
            idle = idle_columns(stage, x, proven, form.integer)
            if len(idle):
                ub = ub.copy()
                ub[idle] = 0.0
        for part in parts:
            fixed_at[part.name] = float(part.c @ x)
            row, row_lb, row_ub = _keep_optimal(part, fixed_at[part.name])
            if part.integral and not part.maximize:
                count_rows[part.name] = form.A.shape[0] + len(extra_rows)
            extra_rows.append(row)
            extra_lb.append(row_lb)
            extra_ub.append(row_ub)
    if x is None:
        return LexResult(None, "failed", None, None, None, tuple(log))
    bound = last.bound if last is not None and log and log[-1][0] == "value" else None
    return _result(form, x, status, bound, tuple(log), "; ".join(notes))


def partial_fill(form: Formulation, problem: MipProblem, start: np.ndarray) -> np.ndarray | None:
    """The start with partial service of the servers it leaves unserved added greedily, one replica at a time,
    wherever every row still holds (best rate first); None when not one replica fits (single-assign only).

    A start that one more replica improves is not optimal, so its LP test would fail: callers skip that test.
    """
    z_cols = form.info.get("z_cols")
    if z_cols is None or form.heterogeneous:
        return None
    has = (form.partial_cols >= 0) & (problem.c[np.maximum(form.partial_cols, 0)] > 0)
    y_cols, z_of = form.partial_cols[has], z_cols[has]
    open_ = problem.ub[y_cols] > problem.lb[y_cols]
    y_cols, z_of = y_cols[open_], z_of[open_]
    if not len(y_cols):
        return None
    A = problem.A.tocsc()
    x = start.copy()
    ax = np.asarray(problem.A @ x, dtype=np.float64)
    tol = 1e-9
    # Only columns whose first replica fits now can take one later: adding partial service only fills rows
    # (capacity, Σ z <= u) or loosens rows already met (best-effort levels held at their optimum).
    fits = _first_replica_fits(A, ax, problem, x, y_cols, z_of, tol)
    y_cols, z_of = y_cols[fits], z_of[fits]
    improved = False
    for k in np.argsort(-problem.c[y_cols], kind="stable"):
        y, z = int(y_cols[k]), int(z_of[k])
        while x[y] + 1 <= problem.ub[y] + tol:
            trial = {y: 1.0} if x[z] >= 1 else {y: 1.0, z: 1.0}
            if any(x[j] + d > problem.ub[j] + tol for j, d in trial.items()):
                break
            rows = np.concatenate([A.indices[A.indptr[j]:A.indptr[j + 1]] for j in trial])
            change = np.concatenate([d * A.data[A.indptr[j]:A.indptr[j + 1]] for j, d in trial.items()])
            touched, where = np.unique(rows, return_inverse=True)  # only the rows these columns touch
            new = ax[touched] + np.bincount(where, weights=change, minlength=len(touched))
            if np.any(new > problem.row_ub[touched] + tol) or np.any(new < problem.row_lb[touched] - tol):
                break
            for j, d in trial.items():
                x[j] += d
            ax[touched], improved = new, True
    return x if improved else None


def _first_replica_fits(A: sp.csc_matrix, ax: np.ndarray, problem: MipProblem, x: np.ndarray, y_cols: np.ndarray,
                        z_of: np.ndarray, tol: float) -> np.ndarray:
    """Per partial-service column, whether one more replica (and its z, if 0) keeps every row it touches."""
    n = len(y_cols)
    with_z = x[z_of] < 1
    within = (x[y_cols] + 1 <= problem.ub[y_cols] + tol) & (~with_z | (x[z_of] + 1 <= problem.ub[z_of] + tol))
    cols = np.r_[y_cols, z_of[with_z]]
    owner = np.r_[np.arange(n), np.flatnonzero(with_z)]
    sub = A[:, cols].tocoo()
    entry_owner = owner[sub.col]
    # row totals after the trial, per (owner, row): sum the entries of y and z that share a row
    key = entry_owner * A.shape[0] + sub.row
    keys, where = np.unique(key, return_inverse=True)
    change = np.bincount(where, weights=sub.data, minlength=len(keys))
    rows = keys % A.shape[0]
    new = ax[rows] + change
    bad = (new > problem.row_ub[rows] + tol) | (new < problem.row_lb[rows] - tol)
    ok = within.copy()
    ok[np.unique(keys[bad] // A.shape[0])] = False
    return ok


def idle_columns(stage: Stage, x: np.ndarray, bound: float, integer: np.ndarray) -> np.ndarray:
    """Columns no later stage can raise: the integer columns of a maximised stage (c >= 0) whose optimum is 0
    (e.g. a best-effort level where no count-optimal plan serves anyone partially) with a coefficient above the
    stage's proven upper bound. A later stage only adds rows, so a plan with such a column at 1 or more would be
    feasible here and score above the bound: every later plan has it at 0, and holding it there changes no
    optimum."""
    if float(stage.c @ x) != 0.0 or not np.isfinite(bound) or (stage.c < 0).any():
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(integer & (stage.c > max(bound, 0.0) + LP_TOL * max(1.0, abs(bound))))


def separable_optimum(form: Formulation) -> np.ndarray | None:
    """The lexicographic optimum without a MIP when capacity does not bind, else None (single-assign only).

    Give every server with candidates the full service of least value (ties: fewest units) among those the
    formulation offers. If these fit the capacity together, the plan is optimal for every stage: no server is left
    unserved (each count is 0, its lower bound); partial service needs an unserved server (Σ z ≤ u), so every
    best-effort level is 0 in every plan with these counts; and no plan serving every server has less value than
    the sum of each server's least value.
    """
    if form.heterogeneous or "server" not in form.info:
        return None
    value = form.stages[-1].c[form.full_cols]
    offered = form.ub[form.full_cols] > 0
    pos = np.flatnonzero(offered)
    units = np.abs(form.A[:, form.full_cols[pos]]).sum(axis=0).A1  # capacity coefficients (and the 1 of the row)
    server = form.info["server"][pos]
    order = np.lexsort((units, value[pos], server))
    first = order[np.r_[True, server[order][1:] != server[order][:-1]]] if len(order) else order
    x = np.zeros(form.n_vars)
    x[form.full_cols[pos[first]]] = 1.0
    served = np.zeros(len(form.unserved_cols), dtype=bool)
    served[server[first]] = True
    left_out = form.unserved_cols[(form.unserved_cols >= 0) & ~served]
    if len(left_out):
        return None  # a server whose every full service was dropped: not separable
    return x if keeps_rows(form, x) else None


def weighted_counts(stages: tuple[Stage, ...], ub: np.ndarray) -> list[tuple[Stage, tuple[Stage, ...]]]:
    """The stages to optimise, each with the stages whose optima it fixes: the leading count stages merged into
    one when their mixed-radix weighted sum stays within WEIGHTED_COUNTS_LIMIT.

    With counts 0..n_p at level p (n_p = Σ c ub: servers, or group sizes when aggregated), weights
    W_p = Π_{q after p} (n_q + 1) make Σ W_p count_p a mixed-radix number: two count vectors that first differ at
    level p, by at least 1, differ in it by at least W_p - Σ_{q after p} W_q n_q = 1, so its minimum is the
    lexicographic minimum, and an integral objective solved to an absolute gap below 1 is solved exactly.
    """
    counts = []
    for stage in stages:
        if not (stage.integral and not stage.maximize and np.isin(stage.c, (0.0, 1.0)).all()
                and np.isfinite(ub[stage.c > 0]).all()):
            break
        counts.append(stage)
    rest = [(s, (s,)) for s in stages[len(counts):]]
    if len(counts) < 2:
        return [(s, (s,)) for s in counts] + rest
    sizes = [int(round(float(s.c @ ub))) for s in counts]
    weights = [1] * len(counts)
    for k in range(len(counts) - 2, -1, -1):
        weights[k] = weights[k + 1] * (sizes[k + 1] + 1)
    if weights[0] * (sizes[0] + 1) > WEIGHTED_COUNTS_LIMIT:
        return [(s, (s,)) for s in counts] + rest
    c = sum(float(w) * s.c for w, s in zip(weights, counts))
    zero = counts[0].zero_cols if all(np.array_equal(s.zero_cols, counts[0].zero_cols) for s in counts) else \
        np.zeros(0, dtype=np.int64)
    merged = Stage("unserved, all priorities (weighted)", c, integral=True, zero_cols=zero)
    return [(merged, tuple(counts))] + rest


def _aggregated_counts(form: Formulation, aggregation, backend: Backend, options: SolveOptions,
                       x: np.ndarray | None, deadline: float):
    """Solve the count stages on the aggregation; (start for the rest, count stages solved, count stages stopped at
    their time share, log, the aggregated solve's notes). An aggregated solve stopped early gives the full count
    stages its plan as a start unless the old start is better; then its plan stands for the stages it stopped at,
    and the stages it solved after those are solved (the full form holds the same counts before them)."""
    from .aggregate import start_vector

    began = time.perf_counter()
    sub_options = replace(options, time_limit=(deadline - began) * COUNT_STAGE_SHARE,
                          speedups=options.speedups - {"aggregate", "aggregate-patterns"})
    sub_start = (aggregation.start_vector(x, form) if hasattr(aggregation, "start_vector")
                 else start_vector(aggregation, x, form))
    sub = solve_lexicographic(aggregation.form, backend, sub_options, sub_start)
    log = [(f"aggregated {name}", st, obj, sec) for name, st, obj, sec in sub.stages]
    if sub.x is None:
        return x, set(), set(), log, sub.message  # the full count stages start from scratch
    mapped = aggregation.disaggregate(form, sub.x)
    if mapped is None or not keeps_rows(form, mapped):  # pragma: no cover - a mapped plan keeps every row
        return x, set(), set(), log, sub.message
    counts = [s for s in form.stages if s.integral]
    if sub.status == "optimal":
        return mapped, {s.name for s in counts}, set(), log, sub.message
    key_x = None if x is None else [float(s.c @ x) for s in counts]
    key_mapped = [float(s.c @ mapped) for s in counts]
    if (key_x is None or key_mapped <= key_x) and all(status in ("optimal", "skipped", "time-limit")
                                                       for _, status, _, _ in sub.stages):
        names = {s.name for s in counts}
        solved = {name for name, status, _, _ in sub.stages if status in ("optimal", "skipped")} & names
        stopped = {name for name, status, _, _ in sub.stages if status == "time-limit"}
        return mapped, solved, stopped, log, sub.message
    # the levels solved before the aggregated solve stopped are optimal in both plans (a plan lexicographically at
    # least as good as the mapped one has their optimal counts too)
    better = key_x is None or key_mapped < key_x
    return (mapped if better else x), _solved_prefix(sub.stages, counts), set(), log, sub.message


def _solved_prefix(stages, counts) -> set[str]:
    """The count stages an aggregated solve proved before its first stage that it did not (``LexResult.stages``)."""
    names = {s.name for s in counts}
    solved: set[str] = set()
    for name, status, _, _ in stages:
        if status not in ("optimal", "skipped") or name not in names:
            break
        solved.add(name)
    return solved


def _bound_over_covers(form: Formulation, problem: MipProblem, stage: Stage, result: MipResult, lp, gap: float,
                       time_limit: float, plan_share: float = 0.0) -> MipResult:
    """A stopped multi-assign best-effort or value stage with the Lagrangian bound over integer covers
    (models.stage_bound) where it is stronger, computed within `time_limit` seconds from the compact LP's duals and
    the stage's plan, and the plan of the bound's master where better (at least `plan_share` of the time for it);
    optimal when the plan meets the bound within `gap`."""
    from .stage_bound import stage_bound

    if time_limit <= 0:
        return result
    objective = float(stage.c @ result.x)
    slack = gap * max(abs(objective), 1e-9)
    found = stage_bound(form, problem, result.x, lp.row_dual, time_limit,
                        target=objective + slack if stage.maximize else objective - slack, plans=True,
                        plan_share=plan_share)
    _LOG.info("stage %s: bound over covers %s (%d rounds), master's plan %s", stage.name, _show(found.bound),
              found.rounds, _show(None if found.x is None else float(stage.c @ found.x)))
    if found.x is not None:  # better than the stage's plan, and it keeps every row
        objective = float(stage.c @ found.x)
        result = replace(result, x=found.x, objective=objective)
    if not np.isfinite(found.bound):
        return result
    bound = found.bound if result.bound is None or not np.isfinite(result.bound) else (
        min(result.bound, found.bound) if stage.maximize else max(result.bound, found.bound))
    proven = _gap(objective, bound) is not None and _gap(objective, bound) <= gap
    return replace(result, status="optimal" if proven else result.status, bound=bound)


def master_applies(form: Formulation) -> bool:
    """Whether models.cover_master can build count-stage starts for `form`: the compact multi-assign form (no
    pattern servers, no aggregation with its own rounding) with its capacity rows."""
    return (form.heterogeneous and not {"patterns", "pattern_cols", "rounding"} & set(form.info)
            and "capacity_rows" in form.info)


def _stage_bound(stage: Stage, bound: float | None, lp_bound: float) -> float:
    """The better of a backend's bound (None or infinite when it has none) and the LP's; an integral stage's LP
    bound rounded to the next integer."""
    if stage.integral:
        lp_bound = integral_bound(lp_bound, stage.maximize)
    if bound is None or not np.isfinite(bound):
        return lp_bound
    return min(bound, lp_bound) if stage.maximize else max(bound, lp_bound)


def _gap_note(result: MipResult) -> str:
    if result.bound is None or result.objective is None or not np.isfinite(result.bound):
        return ""
    return (f" at {result.objective:.6g} with bound {result.bound:.6g}, gap "
            f"{abs(result.bound - result.objective) / max(abs(result.objective), abs(result.bound), 1e-9):.1e}")


def _keep_optimal(stage: Stage, value: float) -> tuple[np.ndarray, float, float]:
    """The row that keeps a solved stage at its optimum in the later stages."""
    if stage.integral:
        bound = float(np.round(value))
        return stage.c, (bound if stage.maximize else -np.inf), (np.inf if stage.maximize else bound)
    tol = FIX_RTOL * max(1.0, abs(value))
    return stage.c, (value - tol if stage.maximize else -np.inf), (np.inf if stage.maximize else value + tol)


def _start_is_optimal(stage: Stage, problem: MipProblem, start: np.ndarray, lp=None, gap: float = 0.0,
                      lower: float = -np.inf, lp_tried: bool = False) -> bool:
    """Whether the stage's start is optimal without a MIP solve: nothing to gain, or it meets the LP bound (or
    `lower`, a stronger lower bound of a minimised integral stage, such as the cover master's). Without `lp` the LP
    is solved here, unless `lp_tried` (it failed or ran out of its time)."""
    at_start = float(stage.c @ start)
    if not stage.maximize and at_start <= 0 and np.all(stage.c >= 0):
        return True  # a count of 0 cannot be improved
    if stage.name == "value" and lp is None:
        return False  # its LP bound is rarely tight; the MIP's root solves that LP anyway
    if lp is None and not lp_tried:
        lp = lp_optimum(problem.A, problem.row_lb, problem.row_ub, problem.lb, problem.ub, stage.c, stage.maximize)
    if lp is None:
        return False
    if stage.integral:
        bound, tol = integral_bound(lp.objective if stage.maximize else max(lp.objective, lower), stage.maximize), 1e-9
    else:
        bound = lp.objective
        # the value stage, the last, within the caller's gap, as a backend would prove it; earlier stages within
        # LP_TOL at most, as the later ones hold their optima
        tol = max((gap if stage.name == "value" else min(LP_TOL, gap)) * max(1.0, abs(bound)), 1e-9)
    return at_start >= bound - tol if stage.maximize else at_start <= bound + tol


def _count_fixed_lp(problem: MipProblem, count_row: int, time_limit: float) -> LpSolution | None:
    """The LP of a best-effort stage's MIP over the bounds that `count_row`, the row keeping its level's count,
    tightens (``kept_row_bounds``; that row alone proved as much as every count row on the 1,000-server fleets
    measured, at half the LPs): a bound on the stage at most its plain LP's. Each LP starts from scratch: from the
    count LP's basis the stage's LP took 37 s at 10,000 servers against 2 s."""
    began = time.perf_counter()
    bounds = kept_row_bounds(problem.A, problem.row_lb, problem.row_ub, problem.lb, problem.ub, problem.integer,
                             [count_row], time_limit)
    left = time_limit - (time.perf_counter() - began)
    if bounds is None or left <= 0:
        return None
    return lp_optimum(problem.A, problem.row_lb, problem.row_ub, *bounds, problem.c, problem.maximize, left)


def integral_bound(bound: float, maximize: bool = False) -> float:
    """An integral stage's bound (LP or other relaxation) rounded to the integer it proves (within LP_TOL of an
    integer: that one); an infinite bound stays."""
    tol = LP_TOL * max(1.0, abs(bound))
    return float(np.floor(bound + tol) if maximize else np.ceil(bound - tol)) + 0.0  # no -0


def _result(form: Formulation, x: np.ndarray, status: str, bound: float | None, log, message: str = "") -> LexResult:
    objective = float(form.stages[-1].c @ x)
    if status == "optimal" and (bound is None or not np.isfinite(bound)):
        bound = objective
    if bound is not None and not np.isfinite(bound):  # a stage stopped before any bound: none is known
        bound = None
    return LexResult(x, status, objective, bound, _gap(objective, bound), log, message)


def _show(value: float | None, spec: str = ".6g") -> str:
    return "-" if value is None else format(value, spec)


def _gap(objective: float | None, bound: float | None) -> float | None:
    """Relative optimality gap |objective - bound| / |objective|; None without both."""
    if objective is None or bound is None:
        return None
    return abs(objective - bound) / max(abs(objective), 1e-9)
