"""Single-assign count stages started from the LP optimum rounded and repaired (models.count_rounding)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferno_mip.models.aggregate import aggregate
from inferno_mip.models.allocation import MipOptions, build, keeps_rows
from inferno_mip.models.count_rounding import round_counts
from inferno_mip.models.lexicographic import MipProblem, SolveOptions, _keep_optimal, solve_lexicographic
from inferno_mip.models.relaxation import lp_optimum
from inferno_mip.scenarios import generate
from inferno_mip.solvers import greedy, highs
from inferno_mip.tables import Settings, build_table


def _count_stages(form, optimum):
    """Each count stage's MipProblem as the staged solve builds it: the earlier count stages held at `optimum`'s
    counts, partial service held at 0."""
    rows, lo, hi = [], [], []
    for stage in [s for s in form.stages if s.integral]:
        A = form.A if not rows else _stack(form.A, rows)
        ub = form.ub.copy()
        ub[stage.zero_cols] = 0.0
        yield stage, MipProblem(A=A, row_lb=np.r_[form.row_lb, lo], row_ub=np.r_[form.row_ub, hi], lb=form.lb, ub=ub,
                                integer=form.integer, c=stage.c, maximize=False, fixed_rows=len(rows))
        row, row_lb, row_ub = _keep_optimal(stage, float(stage.c @ optimum))
        rows.append(row), lo.append(row_lb), hi.append(row_ub)


def _stack(A, rows):
    import scipy.sparse as sp

    return sp.vstack([A, sp.csr_matrix(np.array(rows))], format="csr")


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), tightness=st.floats(0.4, 1.0), aggregated=st.booleans())
def test_rounded_plans_keep_every_row_and_stay_near_the_lp_bound(seed, tightness, aggregated):
    """On the full and the aggregated count stages of random fleets: the rounded plan keeps every row of the stage
    (earlier levels held at their optimum), is no better than the proven optimum, and leaves at most as many
    servers out beyond the LP bound as the stage has rows coupling servers (capacity and held rows: only that many
    can be split in an LP vertex, twice over at most as a split server has two fractional columns; with the held
    levels kept as the start has them, only the stage's LP floors that still fit)."""
    table = build_table(generate(servers=40, accelerators=6, classes=3, seed=seed, tightness=tightness), Settings())
    form = build(table, MipOptions())
    if aggregated:
        form = aggregate(table, form).form
    optimum = solve_lexicographic(form, highs.solve_stage, SolveOptions(60, speedups=frozenset())).x
    for stage, problem in _count_stages(form, optimum):
        lp = lp_optimum(problem.A, problem.row_lb, problem.row_ub, problem.lb, problem.ub, stage.c, False)
        x = round_counts(form, problem, lp.x, optimum)  # the start keeps the held rows, as a stage's start does
        assert x is not None, stage.name
        assert keeps_rows(problem, x, bound_tol=1e-9), stage.name
        coupling = len(form.info["capacity_rows"]) + problem.fixed_rows
        assert float(stage.c @ optimum) - 1e-9 <= float(stage.c @ x) <= math.ceil(lp.objective - 1e-6) + 2 * coupling


def test_a_rounded_start_proves_a_count_stage_the_greedy_start_does_not():
    """100 servers, capacity at 70 % of demand: the greedy leaves 2 servers of priority 2 out, the LP bound is 0.46;
    the rounded LP's plan leaves 1 out, meets the bound rounded up, and the stage needs no MIP; the staged solve ends
    at the plain path's optimum in every stage."""
    table = build_table(generate(servers=100, accelerators=10, classes=3, seed=5, tightness=0.7), Settings())
    form = build(table, MipOptions(best_effort=False))
    start = form.vector(greedy.solve(table, saturation_policy="None").counts, table)
    plain = solve_lexicographic(form, highs.solve_stage, SolveOptions(120, speedups=frozenset()), start)
    stage, problem = list(_count_stages(form, plain.x))[1]
    lp = lp_optimum(problem.A, problem.row_lb, problem.row_ub, problem.lb, problem.ub, stage.c, False)
    x = round_counts(form, problem, lp.x, start)
    assert float(stage.c @ x) == math.ceil(lp.objective) < float(stage.c @ start)
    statuses = {}
    for speedups in ({"skip", "abs-gap"}, {"skip", "abs-gap", "lp-round"}):
        fast = solve_lexicographic(form, highs.solve_stage, SolveOptions(120, speedups=frozenset(speedups)), start)
        assert fast.status == plain.status == "optimal"
        for s in form.stages:
            assert float(s.c @ fast.x) == pytest.approx(float(s.c @ plain.x), rel=1e-7, abs=1e-6)
        statuses["lp-round" in speedups] = dict((n, st) for n, st, _, _ in fast.stages)[stage.name]
    assert statuses == {False: "optimal", True: "skipped"}


def test_an_aggregated_solve_stopped_early_keeps_the_levels_it_proved():
    from inferno_mip.models.lexicographic import _solved_prefix
    from inferno_mip.models.allocation import Stage

    counts = [Stage(f"unserved priority {p}", np.zeros(1), integral=True) for p in (1, 2, 3)]
    log = [("unserved priority 1", "skipped", 0.0, 0.0), ("unserved priority 2", "optimal", 4.0, 0.1),
           ("unserved priority 3", "time-limit", 61.0, 2.0)]
    assert _solved_prefix(log, counts) == {"unserved priority 1", "unserved priority 2"}
    assert _solved_prefix(log[1:], counts) == {"unserved priority 2"}
    assert _solved_prefix([("unserved, all priorities (weighted)", "time-limit", 9.0, 1.0)], counts) == set()
    assert _solved_prefix([log[2], log[0]], counts) == set()  # only a prefix counts


def test_a_mover_with_nowhere_to_go_is_tried_again_after_a_move():
    """The repair's memo of movers that have nowhere to go holds only until a move frees room. Groups A, D and E
    (one member each) are left out; B sits on type 0 and C on type 1, which is full. A needs type 0: B could make
    room but type 1 has none for it, so A stays out and B is stuck. D moves C to type 2 and takes half a card on
    type 1, which leaves 2.5 cards there: now B fits on type 1, and E, which needs type 0 as A did, gets in."""
    from inferno_mip.models.count_rounding import CountGroups, _Placement

    #                   o0  o1  o2  o3  o4  o5   o6
    group = np.array([0, 1, 1, 2, 2, 3, 4])  # A B B C C D E
    row = np.array([0, 0, 1, 1, 2, 1, 0])
    cards = np.array([4.0, 2.0, 2.0, 3.0, 3.0, 0.5, 4.0])
    groups = CountGroups(option_col=np.arange(7), option_group=group, size=np.ones(5),
                         unserved_col=np.arange(7, 12), priority=np.zeros(5, dtype=np.int64))
    placement = _Placement(groups, 12, row, cards, open_=np.ones(7), capacity=np.array([4.0, 3.0, 3.0]),
                           preference=[np.flatnonzero(group == g) for g in range(5)],
                           by_row=[np.flatnonzero(row == r) for r in range(3)])
    base = np.array([0.0, 1, 0, 1, 0, 0, 0])  # B on type 0, C on type 1
    counts = placement.fill(np.zeros(0, dtype=np.int64), np.zeros(7), False, np.array([0, 3, 4]), base=base)
    assert counts.tolist() == [0, 0, 1, 0, 1, 1, 1]  # A out; B on type 1, C on type 2; D and E in
    used = np.bincount(row, weights=counts * cards, minlength=3)
    assert np.all(used <= placement.capacity + 1e-9)
