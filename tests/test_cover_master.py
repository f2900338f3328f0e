"""Multi-assign count stages: the restricted master over covers (models.cover_master), its exact pricing
(models.cover_pricing) and the bounds stages report."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from inferno_mip.models.allocation import MipOptions, build
from inferno_mip.models.cover_master import cover_master
from inferno_mip.models.cover_pricing import cheapest_cover
from inferno_mip.models.lexicographic import (MipProblem, MipResult, SolveOptions, _keep_optimal, _stage_bound,
                                              parse_speedups, solve_lexicographic)
from inferno_mip.models.relaxation import lp_optimum
from inferno_mip.scenarios import generate
from inferno_mip.solvers import greedy
from inferno_mip.solvers.highs import solve_stage
from inferno_mip.tables import Settings, build_table

from test_heterogeneous import _staged, assert_same_optimum


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), tightness=st.floats(0.4, 1.2))
def test_cover_master_keeps_the_lexicographic_optimum(seed, tightness):
    """Against the plain staged path (no speed-up), on fleets with two accelerators of some types."""
    system = generate(servers=8, accelerators=12, classes=2, seed=seed, tightness=tightness)
    assert_same_optimum(_staged(system, "none"), _staged(system, "default,cover-master"))


def _count_stage(seed: int, servers: int, level_index: int, held: dict[int, float], tightness: float = 0.6):
    """The count stage of the `level_index`-th priority of a generated multi-assign fleet, with the earlier levels
    held at `held` (stage index -> count), as solve_lexicographic builds it, and the greedy plan as its start."""
    system = generate(servers=servers, accelerators=12, classes=3, seed=seed, tightness=tightness)
    table = build_table(system, Settings())
    form = build(table, MipOptions(heterogeneous=True))
    rows, lo, hi = [], [], []
    for k, value in held.items():
        row, a, b = _keep_optimal(form.stages[k], value)
        rows.append(row)
        lo.append(a)
        hi.append(b)
    import scipy.sparse as sp

    A = sp.vstack([form.A, sp.csr_matrix(np.array(rows))], format="csr") if rows else form.A
    stage = form.stages[level_index]
    start = form.vector(greedy.solve(table).counts, table)
    problem = MipProblem(A=A, row_lb=np.r_[form.row_lb, lo], row_ub=np.r_[form.row_ub, hi], lb=form.lb,
                         ub=form.ub, integer=form.integer, c=stage.c, maximize=False, warm_start=start,
                         fixed_rows=len(rows))
    return table, form, stage, problem, start


def _keeps_every_row(problem: MipProblem, x: np.ndarray) -> bool:
    ax = problem.A @ x
    return bool(np.all(ax >= problem.row_lb - 1e-6) and np.all(ax <= problem.row_ub + 1e-6)
                and np.all(x >= problem.lb - 1e-9) and np.all(x <= problem.ub + 1e-9)
                and np.all(x[problem.integer] == np.rint(x[problem.integer])))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_master_plan_keeps_every_row_and_covers_each_server_it_serves(seed):
    table, form, stage, problem, start = _count_stage(seed, 40, 0, {})
    lp = lp_optimum(problem.A, problem.row_lb, problem.row_ub, problem.lb, problem.ub, stage.c, False)
    out = cover_master(form, problem, lp.x, start, time_limit=20.0)
    x = out.x
    assert x is not None and _keeps_every_row(problem, x)
    assert stage.c @ x >= np.ceil(lp.objective - 1e-6)  # no plan beats the LP bound
    assert stage.c @ x >= np.ceil(out.bound - 1e-6)  # nor the master's
    counts = form.counts(x)
    served = np.zeros(len(table.rows))
    np.add.at(served, table.server, table.rate_star * counts)
    for i, row in enumerate(table.rows):
        u = form.unserved_cols[i]
        if u >= 0 and x[u] < 0.5 and row.total_rate > 0:
            assert served[i] >= row.total_rate * (1 - 1e-9), i


def test_master_holds_earlier_levels_and_is_no_worse_than_a_feasible_start():
    """Second level held at its plain optimum: the master's plan keeps that row, and a start that keeps every row
    (the master's own plan of the first level) is never made worse."""
    _, form, first, problem, start = _count_stage(3, 40, 0, {})
    lp = lp_optimum(problem.A, problem.row_lb, problem.row_ub, problem.lb, problem.ub, first.c, False)
    plan = cover_master(form, problem, lp.x, start, time_limit=20.0).x
    assert plan is not None
    count = float(first.c @ plan)
    _, form, second, problem, _ = _count_stage(3, 40, 1, {0: count})
    lp = lp_optimum(problem.A, problem.row_lb, problem.row_ub, problem.lb, problem.ub, second.c, False)
    x = cover_master(form, problem, lp.x, plan, time_limit=20.0).x
    assert x is not None and _keeps_every_row(problem, x)
    assert first.c @ x <= count and second.c @ x <= second.c @ plan


def test_stage_bound_takes_the_better_of_the_backend_and_the_rounded_lp():
    from inferno_mip.models.allocation import Stage

    count = Stage("unserved priority 1", np.ones(2), integral=True)
    assert _stage_bound(count, None, 2.3) == 3.0
    assert _stage_bound(count, -np.inf, 2.0 + 1e-9) == 2.0
    assert _stage_bound(count, 4.0, 2.3) == 4.0
    rate = Stage("best-effort rate priority 1", np.ones(2), maximize=True)
    assert _stage_bound(rate, None, 7.5) == 7.5
    assert _stage_bound(rate, 7.0, 7.5) == 7.0


def _multi_assign_fleet(seed: int):
    """A 20-server multi-assign fleet with tight capacity: its compact form and the greedy plan as a start."""
    system = generate(servers=20, accelerators=12, classes=3, seed=seed, tightness=0.5)
    table = build_table(system, Settings())
    form = build(table, MipOptions(heterogeneous=True))
    return form, form.vector(greedy.solve(table).counts, table)


def _stops_at_its_start(problem: MipProblem, options: SolveOptions) -> MipResult:
    """A backend that never proves anything: every stage stops at its start, with no bound."""
    x = problem.warm_start
    return MipResult("time-limit", x, float(problem.c @ x), -np.inf)


def test_a_count_stage_stopped_without_a_backend_bound_reports_the_lp_bound():
    """A backend that stops every stage at its start with no bound: the answer names each count stage that
    stopped with the LP's bound and gap, and the stages never reached."""
    form, start = _multi_assign_fleet(3)

    options = SolveOptions(60.0, 1e-4, 1, 0, parse_speedups("default") - {"weighted-counts", "cover-master"})
    result = solve_lexicographic(form, _stops_at_its_start, options, start)
    assert result.status == "time-limit"
    stopped = [note for note in result.message.split("; ") if note.startswith("unserved")]
    assert "unserved priority 3 stopped at its time share at 2 with bound 1, gap 5.0e-01" in stopped
    assert all(re.fullmatch(r"unserved priority \d stopped at its time share at \d+ with bound \d+, gap \S+", note)
               for note in stopped), stopped


def test_the_cover_masters_bound_proves_count_stages_the_lp_bound_does_not():
    """The same backend that never proves anything, on a fleet where the compact LP's bound proves only the first
    count stage: with the cover master every count stage is proven by its bound over integer covers (and meets the
    plain path's counts, 1 / 0 / 1), without it the two lower ones stop with the LP's bound 0."""
    form, start = _multi_assign_fleet(5)
    speedups = parse_speedups("default") - {"weighted-counts"}

    def solved(speedups):
        return solve_lexicographic(form, _stops_at_its_start, SolveOptions(60.0, 1e-4, 1, 0, speedups), start)

    counts = [(name, status, objective) for name, status, objective, _ in solved(speedups).stages
              if name.startswith("unserved")]
    assert counts == [(f"unserved priority {p}", "skipped", n) for p, n in ((1, 1.0), (2, 0.0), (3, 1.0))]
    without = solved(speedups - {"cover-master"})
    assert "unserved priority 2 stopped at its time share at 1 with bound 0" in without.message


def test_cover_master_is_not_on_by_default_for_single_assign_forms():
    system = generate(servers=6, accelerators=12, classes=2, seed=0, tightness=0.6)
    table = build_table(system, Settings())
    single = build(table, MipOptions())
    problem = MipProblem(A=single.A, row_lb=single.row_lb, row_ub=single.row_ub, lb=single.lb, ub=single.ub,
                         integer=single.integer, c=single.stages[0].c, maximize=False)
    assert cover_master(single, problem, np.zeros(single.n_vars)) is None


def _cheapest_by_enumeration(price, rate, bound, need, least, group, cards, room) -> float:
    best = math.inf
    for n in itertools.product(*[range(int(u) + 1) for u in bound]):
        n = np.array(n, dtype=float)
        if n @ rate >= need and n.sum() >= least and np.all(np.bincount(group, n * cards, len(room)) <= room):
            best = min(best, float(price @ n))
    return best


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_cheapest_cover_matches_enumeration_on_tiny_servers(data):
    """Exact pricing against every replica vector, on servers of up to 4 candidates on 2 types with rooms; prices
    and rates drawn from small sets, so that equal and dominated candidates (merged or dropped before the search)
    and candidates without rate occur; a search cut short after one node still bounds the cheapest cover from
    below."""
    m = data.draw(st.integers(1, 4))
    draw = lambda values: np.array(data.draw(st.lists(values, min_size=m, max_size=m)), dtype=float)  # noqa: E731
    price = draw(st.sampled_from([0.0, 0.5, 1.0, 1.5, 3.0]))
    rate = draw(st.sampled_from([0.0, 0.25, 0.5, 0.7, 1.0, 1.3]))
    bound = draw(st.integers(0, 4))
    group = draw(st.integers(0, 1)).astype(np.int64)
    cards = draw(st.sampled_from([1.0, 2.0]))
    room = np.array(data.draw(st.lists(st.sampled_from([1.0, 3.0, 6.0, np.inf]), min_size=2, max_size=2)))
    need = data.draw(st.floats(0.0, 5.0))
    least = data.draw(st.integers(0, 3))
    best = _cheapest_by_enumeration(price, rate, bound, need, least, group, cards, room)

    def valid(n):
        return (n @ rate >= need and n.sum() >= least and np.all((0 <= n) & (n <= bound)) and np.all(n == np.rint(n))
                and np.all(np.bincount(group, n * cards, 2) <= room))

    rooms = {"group": group, "cards": cards, "room": room}
    lower, cost, n = cheapest_cover(price, rate, bound, need, least, **rooms)
    if math.isinf(best):
        assert n is None and math.isinf(lower)
    else:
        assert n is not None and valid(n)
        assert cost == pytest.approx(best, abs=1e-9) and lower == pytest.approx(best, abs=1e-9)
        assert float(price @ n) == pytest.approx(cost, abs=1e-12)
    lower, cost, n = cheapest_cover(price, rate, bound, need, least, node_limit=1, **rooms)
    assert lower <= best + 1e-9
    assert n is None or (valid(n) and cost >= best - 1e-9)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), tightness=st.floats(0.4, 1.0), level=st.integers(0, 1))
@example(seed=2421, tightness=0.9493218423488304, level=0)  # a master with no cover at all
def test_master_bound_lies_between_the_lp_bound_and_the_stage_optimum(seed, tightness, level):
    """On small fleets, with the earlier level held at its optimum and its plan as the start: the master's bound,
    rounded up, is at least the compact LP's and at most the stage's optimum proven by HiGHS on the compact form
    (the plain path)."""
    held, previous = {}, None
    for k in range(level + 1):
        table, form, stage, problem, start = _count_stage(seed, 8, k, held, tightness)
        start = start if previous is None else previous  # as in the staged solve: the earlier stage's plan
        exact = solve_stage(problem, SolveOptions(60.0, 0.0))
        assert exact.status == "optimal"
        held[k], previous = exact.objective, exact.x
    if not stage.integral or stage.maximize or stage.c @ start == 0:
        return  # one level only (the stage rates best effort), or nothing to price: the master does not run
    lp = lp_optimum(problem.A, problem.row_lb, problem.row_ub, problem.lb, problem.ub, stage.c, False)
    out = cover_master(form, problem, lp.x, start, time_limit=30.0)
    assert out is not None and np.isfinite(out.bound)
    assert out.bound <= exact.objective + 1e-6
    assert math.ceil(out.bound - 1e-6) >= math.ceil(lp.objective - 1e-6)
    if out.x is not None:
        assert _keeps_every_row(problem, out.x) and stage.c @ out.x >= exact.objective - 1e-9


def test_multi_assign_count_stages_stay_per_level_with_the_cover_master():
    """By default (master-levels) the count stages of a multi-assign fleet are one per level, each proven by the
    master's bound with the backend that never proves anything (as above); without master-levels they are one
    weighted stage."""
    system = generate(servers=20, accelerators=12, classes=3, seed=5, tightness=0.5)
    table = build_table(system, Settings())
    form = build(table, MipOptions(heterogeneous=True))
    start = form.vector(greedy.solve(table).counts, table)

    def stops(problem: MipProblem, options: SolveOptions) -> MipResult:
        x = problem.warm_start
        return MipResult("time-limit", x, float(problem.c @ x), -np.inf)

    def counts(speedups):
        return [(name, status, objective) for name, status, objective, _ in
                solve_lexicographic(form, stops, SolveOptions(60.0, 1e-4, 1, 0, speedups), start).stages
                if name.startswith("unserved")]

    assert counts(parse_speedups("default")) == [(f"unserved priority {p}", "skipped", n)
                                                 for p, n in ((1, 1.0), (2, 0.0), (3, 1.0))]
    merged = counts(parse_speedups("default") - {"master-levels"})
    assert [name for name, _, _ in merged] == ["unserved, all priorities (weighted)"]
