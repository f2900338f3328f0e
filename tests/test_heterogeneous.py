"""Multi-assign formulations: covering patterns, disaggregated covers and LP rounding keep the lexicographic optimum."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferno_mip import solve
from inferno_mip.models.allocation import SHARE_STEPS, MipOptions, build
from inferno_mip.models.patterns import COVER_RTOL, ENUMERATION_LIMIT, server_patterns
from inferno_mip.scenarios import generate
from inferno_mip.tables import Settings, build_table

from test_mip import unserved_by_priority

NEW = ("patterns", "covers", "lp-round")
BEFORE = "skip,abs-gap,dominance,aggregate,slack,weighted-counts,idle-partial,aggregate-stages"


def _brute_force_covers(rate, replicas, need, least):
    """Every minimal cover: n <= R, Σ rate n >= need (COVER_RTOL), Σ n >= least, no replica can go."""
    out = []
    for n in itertools.product(*[range(int(r) + 1) for r in replicas]):
        n = np.array(n)
        if not (rate @ n >= need * (1 - COVER_RTOL) and n.sum() >= least):
            continue
        if all(not (rate @ n - rate[c] >= need * (1 - COVER_RTOL) and n.sum() - 1 >= least)
               for c in np.flatnonzero(n)):
            out.append(n)
    return out


@st.composite
def servers(draw):
    k = draw(st.integers(1, 4))
    typ = np.array(draw(st.lists(st.integers(0, 2), min_size=k, max_size=k)))
    rate = np.array(draw(st.lists(st.floats(0.5, 4.0), min_size=k, max_size=k)))
    upr = np.array(draw(st.lists(st.integers(1, 4), min_size=k, max_size=k)), dtype=float)
    value = np.array(draw(st.lists(st.floats(1.0, 20.0), min_size=k, max_size=k)))
    need = draw(st.floats(0.0, 9.0))
    least = draw(st.integers(0, 2))
    replicas = np.maximum(np.ceil(need * (1 - COVER_RTOL) / rate), least).astype(np.int64)
    return rate, upr, typ, value, replicas, need, least


@settings(max_examples=60, deadline=None)
@given(servers())
def test_patterns_are_minimal_covers_dominating_every_minimal_cover(server):
    rate, upr, typ, value, replicas, need, least = server
    mix_limit = 2_000  # a type's mixes are compared pairwise: 2,000 take 16 MB, the 83,520 hypothesis found 26 GiB
    found = server_patterns(rate, upr, typ, value, replicas, need, least, limit=10**6, mix_limit=mix_limit)
    covers = _brute_force_covers(rate, replicas, need, least)
    if found is None:  # too many mixes of one type or minimal covers to look at: such a server keeps the compact form
        mixes = max(np.prod(replicas[typ == t] + 1.0) for t in np.unique(typ))
        assert mixes > mix_limit or len(covers) > ENUMERATION_LIMIT
        return

    def key(n):
        return np.array([(n * upr)[typ == t].sum() for t in range(3)]), float(value @ n)

    as_tuples = {tuple(c) for c in covers}
    assert all(tuple(p) in as_tuples for p in found)  # each pattern is a minimal cover
    for c in covers:  # and every minimal cover is dominated by one: no more cards of any type, no more value
        cards, worth = key(c)
        assert any((key(p)[0] <= cards + 1e-9).all() and key(p)[1] <= worth + 1e-9 for p in found), c
    for a, b in itertools.permutations(range(len(found)), 2):  # none dominates another
        (ca, va), (cb, vb) = key(found[a]), key(found[b])
        assert not ((ca <= cb).all() and va <= vb)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), data=st.data())
def test_cover_rows_keep_every_integer_plan(seed, data):
    """Disaggregated covers cut no integer point of the compact form: any replica counts within R_c, as a
    vector of the form without them, satisfy every row of the form with them (unlimited capacity)."""
    system = generate(servers=4, accelerators=12, classes=2, seed=seed, tightness=None)
    table = build_table(system, Settings())
    plain = build(table, MipOptions(heterogeneous=True))
    covered = build(table, MipOptions(heterogeneous=True, covers=True))
    counts = np.zeros(len(table), dtype=np.int64)
    counts[plain.candidates] = [data.draw(st.integers(0, int(r))) for r in table.replicas[plain.candidates]]
    v = plain.vector(counts, table)
    assert covered.A.shape[1] == plain.A.shape[1]
    ax = covered.A @ v
    assert np.all(ax >= covered.row_lb - 1e-6) and np.all(ax <= covered.row_ub + 1e-6)


def _staged(system, speedups, solver="highs"):
    return solve(system, solver=solver, heterogeneous=True, best_effort=True, speedups=speedups, mip_gap=1e-9,
                 time_limit=120)


def served_by_priority(solution) -> dict[int, float]:
    """Best-effort rate per priority as the MIP counts it: each server's served share in whole steps of
    1/SHARE_STEPS of its load. The replicas may serve up to one step more, which no stage sees, so two optimal
    plans can differ there."""
    out: dict[int, float] = {}
    for a in solution.allocations:
        share = math.floor(SHARE_STEPS * min(a.served_rate / a.total_rate, 1.0) + 1e-9) if a.total_rate > 0 else 0
        out[a.priority] = out.get(a.priority, 0.0) + a.total_rate * share / SHARE_STEPS
    return out


def assert_same_optimum(a, b):
    """Same statuses, unserved counts, best-effort rate per priority and value."""
    assert a.status == b.status == "optimal", (a.status, a.message, b.status, b.message)
    assert unserved_by_priority(a) == unserved_by_priority(b)
    assert served_by_priority(a) == pytest.approx(served_by_priority(b), rel=1e-5, abs=1e-3)
    assert a.objective == pytest.approx(b.objective, rel=1e-6, abs=1e-6)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), tightness=st.floats(0.4, 1.2))
def test_patterns_covers_and_rounding_keep_the_lexicographic_optimum(seed, tightness):
    """Against the compact form (the speed-ups before these), on fleets with two accelerators of some types."""
    system = generate(servers=5, accelerators=12, classes=2, seed=seed, tightness=tightness)
    assert_same_optimum(_staged(system, BEFORE), _staged(system, f"{BEFORE},{','.join(NEW)}"))


@pytest.mark.parametrize("seed", [0, 1])
def test_cpsat_on_patterns_agrees_with_highs_on_the_compact_form(seed):
    system = generate(servers=4, accelerators=12, classes=2, seed=seed, tightness=0.6)
    assert_same_optimum(_staged(system, "none"), _staged(system, "patterns,covers", solver="cpsat"))


def test_default_speedups_include_lp_rounding_and_the_cover_master_only():
    from inferno_mip.models.lexicographic import parse_speedups

    assert parse_speedups("default") == frozenset(BEFORE.split(",")) | {"lp-round", "cover-master", "master-levels",
                                                                      "stage-bound", "no-aggregator", "no-rens",
                                                                      "count-fix", "aggregate-partial", "cutoff"}


def test_each_new_speedup_is_switchable():
    system = generate(servers=4, accelerators=12, classes=2, seed=3, tightness=0.6)
    table = build_table(system, Settings())
    plain = build(table, MipOptions(heterogeneous=True))
    with_patterns = build(table, MipOptions(heterogeneous=True, patterns=True))
    assert "patterns" not in plain.info and "patterns" in with_patterns.info
    assert with_patterns.n_vars > plain.n_vars  # one binary per pattern
    reference = _staged(system, BEFORE)
    for name in NEW:
        assert_same_optimum(reference, _staged(system, f"{BEFORE},{name}"))


# aggregation of interchangeable multi-assign servers over their covering patterns (count stages)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), tightness=st.floats(0.4, 1.2))
def test_aggregated_patterns_keep_the_lexicographic_optimum(seed, tightness):
    """Against the default path, on fleets where some servers share a model, class and patterns."""
    system = generate(servers=12, accelerators=12, classes=2, seed=seed, tightness=tightness)
    assert_same_optimum(_staged(system, "default"), _staged(system, "default,aggregate-patterns"))


def _aggregation(seed, servers=12, tightness=0.6):
    from inferno_mip.models.multi_aggregate import aggregate_multi

    system = generate(servers=servers, accelerators=12, classes=2, seed=seed, tightness=tightness)
    table = build_table(system, Settings())
    form = build(table, MipOptions(heterogeneous=True))
    return table, form, aggregate_multi(table, form)


@pytest.mark.parametrize("seed", [1, 2])
def test_aggregated_count_optima_equal_the_full_count_optima(seed):
    """Each count stage solved on its own (the earlier ones held) on the full compact form and on the aggregation:
    same optimum per level, and the aggregated optimum disaggregates into a plan of the full form with the same
    counts."""
    from dataclasses import replace

    import scipy.sparse as sp

    from inferno_mip.models.lexicographic import MipProblem, SolveOptions
    from inferno_mip.solvers.highs import solve_stage

    table, form, agg = _aggregation(seed)
    assert agg is not None and sum(len(m) for m in agg.members) > len(agg.members)  # some group has 2 or more

    def optima(f):
        rows, values, x = [], [], None
        for stage in (s for s in f.stages if s.integral):
            A = sp.vstack([f.A] + [sp.csr_matrix(r[None, :]) for r in rows], format="csr")
            problem = MipProblem(A=A, row_lb=np.r_[f.row_lb, [-np.inf] * len(rows)], row_ub=np.r_[f.row_ub, values],
                                 lb=f.lb, ub=f.ub, integer=f.integer, c=stage.c, maximize=False)
            result = solve_stage(problem, SolveOptions(time_limit=60, mip_gap=0.0))
            assert result.status == "optimal"
            rows.append(stage.c)
            values.append(round(result.objective))
            x = result.x
        return values, x

    full_values, _ = optima(form)
    agg_values, v = optima(agg.form)
    assert agg_values == full_values
    x = agg.disaggregate(form, v)
    assert x is not None
    ax = form.A @ x
    assert np.all(ax >= form.row_lb - 1e-6) and np.all(ax <= form.row_ub + 1e-6)
    assert np.all(x >= form.lb - 1e-9) and np.all(x <= form.ub + 1e-9)
    assert [round(float(s.c @ x)) for s in form.stages if s.integral] == full_values


@pytest.mark.parametrize("seed", [0, 3])
def test_aggregated_start_keeps_counts_and_capacity(seed):
    """A full plan (the greedy's) maps to an aggregated point with no more left out per level and no more cards
    per type (the capacity rows hold)."""
    from inferno_mip.solvers import greedy

    table, form, agg = _aggregation(seed)
    start = form.vector(greedy.solve(table).counts, table)
    v = agg.start_vector(start, form)
    f = agg.form
    ax = f.A @ v
    assert np.all(ax >= f.row_lb - 1e-6) and np.all(ax <= f.row_ub + 1e-6)
    for full_stage, agg_stage in zip((s for s in form.stages if s.integral), f.stages):
        assert agg_stage.c @ v <= full_stage.c @ start + 1e-9


def test_count_patterns_without_search_are_single_replicas():
    """Servers whose every candidate covers with one replica: one pattern per type, its fewest cards, exactly the
    non-dominated minimal covers the search finds (value ignored)."""
    from inferno_mip.models.multi_aggregate import count_patterns

    table, form, _ = _aggregation(1, servers=20, tightness=None)
    kept = form.candidates
    srv = table.server[kept]
    checked = 0
    for i in np.unique(srv).tolist():
        a, b = np.searchsorted(srv, i), np.searchsorted(srv, i, side="right")
        row = table.rows[i]
        if not ((table.replicas[kept[a:b]] == 1).all() and row.total_rate > 0 and row.server.min_num_replicas <= 1):
            continue
        fast = count_patterns(table, kept, i, a, b, form.info["fewest"][i])
        slow = server_patterns(table.rate_star[kept[a:b]], table.unit_per_replica[kept[a:b]].astype(float),
                               table.type[kept[a:b]], np.zeros(b - a), table.replicas[kept[a:b]].astype(np.int64),
                               row.total_rate, int(row.server.min_num_replicas))

        def cards(p):
            return sorted(tuple(np.bincount(table.type[kept[a:b]], weights=q * table.unit_per_replica[kept[a:b]],
                                            minlength=len(table.types))) for q in p)

        assert cards(fast) == cards(slow)
        checked += 1
    assert checked > 0


def test_highs_started_from_a_worse_plan_finds_the_best_effort_optimum():
    """A multi-assign best-effort stage's costs are rates per served-share step (5e-5 to 1e-3 here). Started from a
    feasible plan, HiGHS 1.14 proved that plan optimal (3.2607 where 3.3283 is feasible) until the backend scaled
    the costs (models.lexicographic.objective_scale)."""
    from dataclasses import replace

    import scipy.sparse as sp

    from inferno_mip.models.lexicographic import (MipProblem, SolveOptions, _keep_optimal, objective_scale,
                                                  parse_speedups, solve_lexicographic)
    from inferno_mip.solvers import greedy, highs

    table = build_table(generate(servers=8, accelerators=12, classes=2, seed=2103, tightness=0.5625), Settings())
    form = build(table, MipOptions(heterogeneous=True))
    start = form.vector(greedy.solve(table).counts, table)
    plan = solve_lexicographic(form, highs.solve_stage, SolveOptions(60, 1e-9, speedups=parse_speedups("none")),
                               start).x
    held = [_keep_optimal(form.stages[k], float(form.stages[k].c @ plan)) for k in (0, 1)]
    A = sp.vstack([form.A, sp.csr_matrix(np.array([row for row, _, _ in held]))], format="csr")
    stage = form.stages[2]
    assert stage.name == "best-effort rate priority 1"
    problem = MipProblem(A=A, row_lb=np.r_[form.row_lb, [lo for _, lo, _ in held]],
                         row_ub=np.r_[form.row_ub, [hi for _, _, hi in held]], lb=form.lb, ub=form.ub,
                         integer=form.integer, c=stage.c, maximize=True)
    best = highs.solve_stage(problem, SolveOptions(60, 1e-9))  # no start
    worse = highs.solve_stage(replace(problem, maximize=False), SolveOptions(60, 1e-9)).x  # the least best effort
    from_start = highs.solve_stage(replace(problem, warm_start=worse), SolveOptions(60, 1e-9))
    assert best.status == from_start.status == "optimal"
    assert float(stage.c @ worse) < best.objective - 0.05  # the start is worse
    assert from_start.objective == pytest.approx(best.objective, rel=1e-9)
    assert objective_scale(stage.c) == 1024.0
