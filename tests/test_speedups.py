"""The exact speed-ups change nothing but time: same statuses, unserved counts and value as the plain staged path."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferno_mip import solve
from inferno_mip.models.allocation import MipOptions, build, dominated
from inferno_mip.models.lexicographic import SPEEDUPS, parse_speedups
from inferno_mip.scenarios import generate
from inferno_mip.tables import Settings, build_table

from test_mip import unserved_by_priority


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), tightness=st.floats(0.3, 1.2), classes=st.integers(1, 3),
       best_effort=st.booleans(), speedups=st.sampled_from(["all", *SPEEDUPS]))
def test_fast_path_matches_plain_staged_path(seed, tightness, classes, best_effort, speedups):
    system = generate(servers=10, accelerators=6, classes=classes, seed=seed, tightness=tightness)
    plain = solve(system, solver="highs", best_effort=best_effort, speedups="none")
    fast = solve(system, solver="highs", best_effort=best_effort, speedups=speedups)
    greedy = solve(system, solver="greedy", saturation_policy="PriorityRoundRobin" if best_effort else "None")
    assert fast.status == plain.status == "optimal"
    assert unserved_by_priority(fast) == unserved_by_priority(plain)
    assert fast.objective == pytest.approx(plain.objective, rel=1e-9, abs=1e-9)
    if not unserved_by_priority(fast) and not unserved_by_priority(greedy):
        assert fast.objective <= greedy.objective + 1e-6  # the MIP never costs more than the greedy


def test_stage_skipping_skips_stages_it_can_prove():
    from inferno_mip.models.lexicographic import SolveOptions, solve_lexicographic
    from inferno_mip.solvers import greedy, highs

    table = build_table(generate(servers=30, accelerators=10, classes=3, seed=4, tightness=0.8), Settings())
    form = build(table, MipOptions())
    start = form.vector(greedy.solve(table, saturation_policy="PriorityRoundRobin").counts, table)
    plain = solve_lexicographic(form, highs.solve_stage, SolveOptions(60, speedups=frozenset()), start)
    fast = solve_lexicographic(form, highs.solve_stage, SolveOptions(60, speedups=frozenset({"skip"})), start)
    assert "skipped" in {status for _, status, _, _ in fast.stages}
    assert "skipped" not in {status for _, status, _, _ in plain.stages}
    for stage in form.stages:  # every stage's optimum is the same
        assert float(stage.c @ fast.x) == pytest.approx(float(stage.c @ plain.x), rel=1e-7, abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_dominated_candidates_have_a_dominator_of_the_same_type(seed):
    table = build_table(generate(servers=40, accelerators=12, classes=2, seed=seed, tightness=0.7), Settings())
    kept = build(table, MipOptions()).candidates
    dom = dominated(table, kept)
    assert (dom >= 0).any()
    for i in range(len(kept)):
        a = kept[i]
        # by definition: an earlier (value, units, position) of the same server and type with no more units
        expected = any(table.server[b] == table.server[a] and table.type[b] == table.type[a]
                       and table.units[b] <= table.units[a]
                       and (table.value[b], table.units[b], j) < (table.value[a], table.units[a], i)
                       for j, b in enumerate(kept) if j != i)
        assert expected == (dom[i] >= 0)
        if dom[i] >= 0:
            b = kept[dom[i]]
            assert dom[dom[i]] < 0 and table.units[b] <= table.units[a] and table.value[b] <= table.value[a]


def test_parse_speedups():
    assert parse_speedups("all") == frozenset(SPEEDUPS) and parse_speedups("none") == frozenset()
    assert parse_speedups("skip,abs-gap") == {"skip", "abs-gap"}
    with pytest.raises(ValueError, match="unknown speedup"):
        parse_speedups("skip,warp")


def test_metrics_on_demand_match_a_full_pass():
    table = build_table(generate(servers=20, accelerators=8, seed=2, tightness=0.8), Settings())
    other = build_table(generate(servers=20, accelerators=8, seed=2, tightness=0.8), Settings())
    some = np.arange(0, len(table), 3)
    np.testing.assert_allclose(table.load_metrics(some), other.load_metrics(np.arange(len(other)))[some],
                               rtol=1e-12)
    assert not np.isnan(table.itl).any()
