"""The staged solve keeps within the caller's time limit: a stage's LP test and its MIP share the stage's time."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import inferno_mip.models.lexicographic as lexicographic
from inferno_mip.models.aggregate import aggregate
from inferno_mip.models.allocation import MipOptions, build, keeps_rows
from inferno_mip.models.lexicographic import (COUNT_STAGE_SHARE, LP_TEST_SHARE, MipProblem, SolveOptions,
                                              solve_lexicographic)
from inferno_mip.models.relaxation import lp_optimum
from inferno_mip.scenarios import generate
from inferno_mip.solvers import greedy, highs
from inferno_mip.tables import Settings, build_table

TIME_LIMIT = 100.0  # seconds of the fake clock below


def _fleet(seed: int):
    """A 30-server fleet whose capacity binds, and its single-assign formulation."""
    table = build_table(generate(servers=30, accelerators=6, classes=3, seed=seed, tightness=0.9), Settings())
    return table, build(table, MipOptions(dominance=True))


class _Clock:
    """A clock that moves only when the fake LP and backend below say they took time."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def _solve(monkeypatch, lp_seconds: float, seed: int = 3, aggregated: bool = False):
    """The binding fleet's staged solve (default speed-ups) where every LP takes `lp_seconds` of the fake clock (and
    runs out of time, returning None, when its limit is shorter) and every MIP 1 s; returns the result, the LP calls
    of non-integral stages as (clock, limit) and the MIP calls as (clock, limit). With `aggregated` the count stages
    are solved on the aggregation of interchangeable servers first (models.aggregate), as solve() does."""
    table, form = _fleet(seed)
    aggregation = aggregate(table, form) if aggregated else None
    start = form.vector(greedy.solve(table, saturation_policy="PriorityExhaustive").counts, table)
    clock = _Clock()
    monkeypatch.setattr(lexicographic, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    integral = {stage.c.tobytes(): stage.integral for stage in form.stages}
    lp_calls, mip_calls = [], []

    def fake_lp(A, row_lb, row_ub, lb, ub, c, maximize, time_limit=None):
        if not integral.get(c.tobytes(), True):
            lp_calls.append((clock.now, time_limit))
        if time_limit is not None and time_limit < lp_seconds:
            clock.now += time_limit
            return None
        clock.now += lp_seconds
        return lp_optimum(A, row_lb, row_ub, lb, ub, c, maximize)

    def fake_backend(problem, options):
        mip_calls.append((clock.now, options.time_limit))
        result = highs.solve_stage(problem, SolveOptions(60.0, options.mip_gap, abs_gap=options.abs_gap))
        clock.now += 1.0
        return result

    monkeypatch.setattr(lexicographic, "lp_optimum", fake_lp)
    result = solve_lexicographic(form, fake_backend, SolveOptions(TIME_LIMIT), start, aggregation)
    return result, lp_calls, mip_calls


@pytest.mark.parametrize("lp_seconds", [7.0, 40.0])
def test_stage_lp_and_mip_stay_within_the_time_limit(monkeypatch, lp_seconds):
    """The LP that may prove a best-effort or value stage's start optimal gets at most its share of what is left,
    and HiGHS only what the stage has left after it, so no MIP may run past the caller's limit; an LP that runs out
    of its share costs that share, not the answer (the same optimum as with fast LPs)."""
    result, lp_calls, mip_calls = _solve(monkeypatch, lp_seconds)
    assert lp_calls and mip_calls
    assert any(limit < lp_seconds for _, limit in lp_calls) == (lp_seconds > 10)  # 40 s: a stage's LP runs out
    for now, limit in lp_calls:
        assert limit is not None and limit <= LP_TEST_SHARE * (TIME_LIMIT - now) + 1e-9
    for now, limit in mip_calls:
        assert now + limit <= TIME_LIMIT + 1e-9
    reference, _, _ = _solve(monkeypatch, 0.0)
    assert result.status == reference.status == "optimal"
    assert [s[:3] for s in result.stages if s[1] == "optimal"] == [s[:3] for s in reference.stages
                                                                    if s[1] == "optimal"]
    assert result.objective == pytest.approx(reference.objective, rel=1e-7)


def test_a_stage_lp_that_ran_out_is_not_solved_again(monkeypatch):
    """The skip test does not solve again, without a time limit, the LP that just ran out of its share."""
    table, form = _fleet(3)
    stage = next(s for s in form.stages if s.maximize)
    problem = MipProblem(A=form.A, row_lb=form.row_lb, row_ub=form.row_ub, lb=form.lb, ub=form.ub,
                         integer=form.integer, c=stage.c, maximize=True)
    start = form.vector(greedy.solve(table).counts, table)
    calls = []
    monkeypatch.setattr(lexicographic, "lp_optimum", lambda *args, **kwargs: calls.append(args) or None)
    assert not lexicographic._start_is_optimal(stage, problem, start, lp=None, lp_tried=True)
    assert not calls
    lexicographic._start_is_optimal(stage, problem, start, lp=None)
    assert len(calls) == 1


def test_the_count_stages_take_their_share_of_the_time(monkeypatch):
    """The count MIP (here the aggregated one, solved first) may run until COUNT_STAGE_SHARE of the caller's time
    is spent, whatever its LP took: the counts outrank every later stage."""
    result, _, mip_calls = _solve(monkeypatch, 7.0, seed=0, aggregated=True)
    assert any(name.startswith("aggregated") for name, *_ in result.stages)
    now, limit = mip_calls[0]
    assert now + limit == pytest.approx(COUNT_STAGE_SHARE * TIME_LIMIT)


def test_the_last_stage_may_use_all_the_time_left(monkeypatch):
    """The value stage, solved last, may run until the caller's limit, whatever the stages before it solved."""
    result, _, mip_calls = _solve(monkeypatch, 7.0)
    assert [name for name, status, *_ in result.stages][-1] == "value" and len(mip_calls) >= 2
    now, limit = mip_calls[-1]
    assert now + limit == pytest.approx(TIME_LIMIT)


def test_a_value_stage_stopped_without_a_bound_reports_none(monkeypatch):
    """HiGHS stopped before it has a bound reports an infinite one; with no LP bound either (its LP ran out of time,
    as at 10,000 servers) the answer says "no bound" (None), which JSON can carry, rather than an infinite gap."""
    import json

    from inferno_mip.models.lexicographic import MipResult

    table, form = _fleet(3)
    start = form.vector(greedy.solve(table, saturation_policy="PriorityExhaustive").counts, table)

    def backend(problem, options):
        result = highs.solve_stage(problem, options)
        if problem.c is form.stages[-1].c:
            return MipResult("time-limit", result.x, result.objective, -float("inf"))
        return result

    real_lp = lexicographic.lp_optimum
    monkeypatch.setattr(lexicographic, "lp_optimum", lambda A, row_lb, row_ub, lb, ub, c, maximize, time_limit=None:
                        None if c is form.stages[-1].c else real_lp(A, row_lb, row_ub, lb, ub, c, maximize))
    result = solve_lexicographic(form, backend, SolveOptions(60.0), start)
    assert result.status == "time-limit" and result.x is not None
    assert result.bound is None and result.gap is None
    json.dumps({"bound": result.bound, "gap": result.gap}, allow_nan=False)


def test_little_time_and_no_start_still_answers(monkeypatch):
    """With too little time for a MIP and no start to stand in for it, HiGHS still gets the stage's few
    milliseconds: the solve answers (a plan that keeps every row, or none), it does not fail."""
    table, form = _fleet(0)
    clock = _Clock()
    monkeypatch.setattr(lexicographic, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    result = solve_lexicographic(form, highs.solve_stage, SolveOptions(0.04), None)
    assert result.status in ("time-limit", "optimal", "failed")
    assert result.x is None or keeps_rows(form, result.x)


def test_an_aggregated_count_solve_stopped_early_is_not_repeated_on_the_full_form(monkeypatch):
    """When the aggregated count MIP stops at its time share, its plan stands for that stage: the full form (the
    same optimum, a weaker bound) is not searched again; the answer says the stage stopped, with the aggregated
    solve's gap, and the later stages still run."""
    from inferno_mip.models.lexicographic import MipResult

    table, form = _fleet(0)
    aggregation = aggregate(table, form)
    start = form.vector(greedy.solve(table, saturation_policy="PriorityExhaustive").counts, table)
    unserved = np.zeros(form.n_vars, dtype=bool)
    unserved[form.unserved_cols[form.unserved_cols >= 0]] = True
    full_count_mips = []

    def backend(problem, options):
        if len(problem.c) == aggregation.form.n_vars and problem.fixed_rows == 0 and problem.warm_start is not None:
            value = float(problem.c @ problem.warm_start)  # the aggregated count MIP stops at once, at its start
            return MipResult("time-limit", problem.warm_start, value, value - 1.0)
        if len(problem.c) == form.n_vars and not problem.c[~unserved].any():
            full_count_mips.append(problem)
        return highs.solve_stage(problem, options)

    result = solve_lexicographic(form, backend, SolveOptions(60.0), start, aggregation)
    assert result.status == "time-limit" and result.x is not None and keeps_rows(form, result.x)
    assert not full_count_mips
    assert any(status == "time-limit" and not name.startswith("aggregated") for name, status, *_ in result.stages)
    assert "aggregated: " in result.message and "with bound" in result.message
    assert [name for name, *_ in result.stages][-1] == "value"
