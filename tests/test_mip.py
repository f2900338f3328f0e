"""Exact allocation: formulations in models/, HiGHS, CP-SAT and pyomo backends agree and beat the greedy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from inferno_mip import load_scenario, solve
from inferno_mip.models.allocation import MipOptions, build
from inferno_mip.models.lexicographic import MipProblem, SolveOptions
from inferno_mip.scenarios import generate
from inferno_mip.tables import Settings, build_table
from inferno_mip.solvers import cpsat, exact, pyomo_solver

from conftest import SCENARIOS

EXACT = ("highs", "cpsat", "pyomo")
RTOL = 1e-6


def test_highspy_and_ortools_share_a_process():
    import highspy
    from ortools.sat.python import cp_model

    h = highspy.Highs()
    assert h.getModelStatus() is not None and cp_model.CpModel() is not None


def unserved_by_priority(solution) -> dict[int, int]:
    out: dict[int, int] = {}
    for a in solution.allocations:
        if a.status not in ("ok", "zero-load", "invalid-input"):
            out[a.priority] = out.get(a.priority, 0) + 1
    return out


def assert_agree(solutions):
    first = solutions[0]
    for other in solutions[1:]:
        assert unserved_by_priority(other) == unserved_by_priority(first), other.solver
        assert other.objective == pytest.approx(first.objective, rel=RTOL, abs=1e-9), other.solver
        assert other.status == "optimal", (other.solver, other.status, other.message)


@pytest.fixture(scope="module")
def tight_fleets():
    return [generate(servers=10, accelerators=6, classes=3, seed=seed, tightness=0.5) for seed in range(3)]


@pytest.mark.parametrize("heterogeneous", [False, True])
@pytest.mark.parametrize("unlimited", [False, True])
@pytest.mark.parametrize("best_effort", [False, True])
def test_backends_agree_on_random_fleets(tight_fleets, heterogeneous, unlimited, best_effort):
    for system in tight_fleets:
        solutions = [solve(system, solver=name, heterogeneous=heterogeneous, unlimited=unlimited,
                           best_effort=best_effort, time_limit=60) for name in EXACT]
        assert_agree(solutions)


@pytest.mark.parametrize("name", ["inferno-small", "inferno-large", "inferno-legacy-large"])
def test_backends_agree_on_sample_sets(name):
    solutions = [solve(SCENARIOS / name, solver=s, time_limit=60) for s in EXACT]
    assert_agree(solutions)


def test_backends_agree_multi_assign_small():
    assert_agree([solve(SCENARIOS / "inferno-small", solver=s, heterogeneous=True, time_limit=60) for s in EXACT])


def test_pyomo_with_other_installed_solvers():
    others = [name for name in pyomo_solver.available_solvers() if name not in ("appsi_highs", "highs")]
    if not others:
        pytest.skip("no pyomo solver besides HiGHS is installed")
    reference = solve(SCENARIOS / "inferno-small", solver="highs")
    for name in others:
        assert_agree([reference, solve(SCENARIOS / "inferno-small", solver="pyomo", pyomo_solver=name)])


@pytest.mark.parametrize("row_lb, row_ub, status", [(-np.inf, 3.0, "optimal"), (1.0, np.inf, "infeasible")])
def test_pyomo_takes_a_row_without_entries(row_lb, row_ub, status):
    """A row with no entries (a stage's capacity row that no column uses) holds or fails on 0 alone: pyomo itself
    rejects such a constraint."""
    import scipy.sparse as sp

    from inferno_mip.models.lexicographic import MipProblem, SolveOptions

    problem = MipProblem(A=sp.csr_matrix(np.array([[1.0, 1.0], [0.0, 0.0]])), row_lb=np.array([-np.inf, row_lb]),
                         row_ub=np.array([1.0, row_ub]), lb=np.zeros(2), ub=np.ones(2),
                         integer=np.array([True, True]), c=np.array([1.0, 2.0]), maximize=True)
    result = pyomo_solver.stage_solver()(problem, SolveOptions(time_limit=30))
    assert result.status == status
    if status == "optimal":
        assert result.objective == pytest.approx(2.0)


def test_exact_satisfies_legacy_large():
    """inferno's greedy leaves Free-mixtral_8_7b short of capacity; the exact solver serves every server."""
    greedy = solve(SCENARIOS / "inferno-legacy-large", solver="greedy")
    assert greedy.counts().get("best-effort") == 1
    exact_solution = solve(SCENARIOS / "inferno-legacy-large", solver="highs")
    assert exact_solution.counts() == {"ok": 27}
    for t, used in exact_solution.units_used.items():
        assert used <= exact_solution.capacity[t]
    assert all(a.meets_slo for a in exact_solution.allocations)


@pytest.mark.parametrize("name", ["inferno-small", "inferno-large"])
def test_exact_no_dearer_than_greedy(name):
    greedy = solve(SCENARIOS / name, solver="greedy")
    best = solve(SCENARIOS / name, solver="highs")
    assert greedy.counts() == best.counts() == {"ok": len(best.allocations)}
    assert best.objective <= greedy.objective + 1e-9
    assert best.gap is not None and best.gap <= 1e-6 and best.bound <= best.objective + 1e-6


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), tightness=st.floats(0.3, 1.5), classes=st.integers(1, 4),
       heterogeneous=st.booleans())
def test_exact_invariants(seed, tightness, classes, heterogeneous):
    system = generate(servers=12, accelerators=6, classes=classes, seed=seed, tightness=tightness)
    greedy = solve(system, solver="greedy", saturation_policy="None")
    best = solve(system, solver="highs", heterogeneous=heterogeneous, saturation_policy="None")
    assert best.status == "optimal"
    for t, used in best.units_used.items():
        assert used <= best.capacity[t]  # capacity never exceeded
    for a in best.allocations:
        if a.status == "ok":
            assert a.meets_slo and sum(p.replicas * p.max_rate_per_replica for p in a.placements) >= a.total_rate * (
                1 - 1e-9)
    # Priorities: lexicographically no more unserved servers than the greedy, level by level.
    levels = sorted({a.priority for a in best.allocations})
    mine, theirs = unserved_by_priority(best), unserved_by_priority(greedy)
    assert [mine.get(p, 0) for p in levels] <= [theirs.get(p, 0) for p in levels]
    if not mine and not theirs and not heterogeneous:
        assert best.objective <= greedy.objective + 1e-6


def test_priority_before_total_count():
    """Three Gold servers left out rather than one Premium: the total count is not an objective."""
    system = generate(servers=12, accelerators=6, classes=2, seed=8385, tightness=0.875)
    best = solve(system, solver="highs", saturation_policy="None")
    greedy = solve(system, solver="greedy", saturation_policy="None")
    assert unserved_by_priority(greedy) == {2: 3}
    assert unserved_by_priority(best).get(1, 0) == 0


def brute_force(table, kept):
    """Lexicographic optimum of single-assign without best effort by enumeration: (unserved per level, value)."""
    rows = range(len(table.rows))
    options = [[-1] + [c for c in kept if table.server[c] == i] for i in rows]
    levels = sorted({r.priority for r in table.rows})
    best = None
    for choice in itertools.product(*options):
        used = np.zeros(len(table.types))
        for c in choice:
            if c >= 0:
                used[table.type[c]] += table.units[c]
        if np.any(used > table.capacity):
            continue
        key = tuple(sum(1 for i, c in zip(rows, choice) if c < 0 and table.rows[i].priority == p and
                        len(options[i]) > 1) for p in levels)
        value = sum(table.value[c] for c in choice if c >= 0)
        if best is None or (key, value) < best:
            best = (key, value)
    return best


@pytest.mark.parametrize("seed", range(4))
def test_lexicographic_optimum_matches_brute_force(seed):
    system = generate(servers=5, accelerators=4, classes=3, seed=seed, tightness=0.4)
    table = build_table(system, Settings())
    kept = build(table, MipOptions(best_effort=False)).candidates
    key, value = brute_force(table, kept)
    solution = solve(system, solver="highs", best_effort=False)
    levels = sorted({r.priority for r in table.rows})
    unserved = unserved_by_priority(solution)
    assert tuple(unserved.get(p, 0) for p in levels) == key
    assert solution.objective == pytest.approx(value, rel=1e-9, abs=1e-9)


def test_backend_crash_falls_back_to_greedy():
    table = build_table(load_scenario(SCENARIOS / "inferno-small"), Settings())

    def broken(problem, options):
        raise RuntimeError("solver exploded")

    answer = exact.solve_exact(table, broken, saturation_policy="RoundRobin")
    assert answer.status == "fallback-greedy" and "solver exploded" in answer.message
    assert answer.counts.sum() > 0


def test_tiny_time_limit_still_answers():
    system = generate(servers=80, accelerators=20, classes=3, seed=5, tightness=0.7)
    solution = solve(system, solver="highs", heterogeneous=True, time_limit=0.05)
    assert len(solution.allocations) == 80
    assert solution.status in ("optimal", "time-limit", "feasible", "fallback-greedy")
    for t, used in solution.units_used.items():
        assert used <= solution.capacity[t]


def test_max_replica_change_and_current_allocation():
    system = load_scenario(SCENARIOS / "inferno-small")
    first = solve(system, solver="highs")
    # Make the first solution current, then quadruple every load: replicas may grow by at most 2.
    servers = []
    for s in system.servers:
        a = first[s.name]
        current = s.current.model_copy(update={"accelerator": a.accelerator, "num_replicas": a.replicas,
                                               "max_batch": a.max_batch, "cost": a.cost})
        load = s.load.model_copy(update={"arrival_rate": s.load.arrival_rate * 4})
        servers.append(s.model_copy(update={"current": current, "load": load}))
    grown = system.replace(servers=tuple(servers))
    limited = solve(grown, solver="highs", max_replica_change=2, best_effort=True)
    for s in grown.servers:
        a = limited[s.name]
        assert abs(a.replicas - s.current.num_replicas) <= 2 or a.replicas == 0
    free = solve(grown, solver="highs")
    assert free.counts().get("ok", 0) >= limited.counts().get("ok", 0)


def test_cpsat_rounding_never_accepts_an_infeasible_plan():
    """Rows with fractional coefficients: every CP-SAT answer satisfies the float rows."""
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = 4
        A = sp.csr_matrix(rng.uniform(0.05, 1.0, size=(2, n)).round(7))
        problem = MipProblem(A=A, row_lb=np.array([rng.uniform(1, 3), -np.inf]),
                             row_ub=np.array([np.inf, rng.uniform(3, 6)]), lb=np.zeros(n), ub=np.full(n, 20.0),
                             integer=np.ones(n, dtype=bool), c=rng.uniform(1, 5, size=n).round(3), maximize=False)
        result = cpsat.solve_stage(problem, SolveOptions(time_limit=5))
        if result.x is None:
            continue
        ax = A @ result.x
        assert np.all(ax >= problem.row_lb - 1e-12) and np.all(ax <= problem.row_ub + 1e-12)


def test_solution_reports_solver_statistics():
    solution = solve(SCENARIOS / "inferno-large", solver="highs")
    d = solution.to_dict()
    for key in ("objective", "bound", "gap", "status", "timings", "totalCost"):
        assert d[key] is not None
    assert {"sizing", "solve", "total"} <= set(d["timings"])
    assert all(s["reason"] for s in d["servers"])


def test_batch_sizes_as_candidates_presolved_to_one_per_accelerator():
    system = load_scenario(SCENARIOS / "inferno-small")
    name = "Premium-llama_13b"
    current = next(s for s in system.servers if s.name == name).current.model_copy(
        update={"accelerator": "G2", "num_replicas": 3, "max_batch": 7, "cost": 69.0})
    system = system.replace(servers=tuple(s.model_copy(update={"current": current}) if s.name == name else s
                                          for s in system.servers))
    table = build_table(system, Settings(batch_rule="all"))
    i = next(k for k, r in enumerate(table.rows) if r.server.name == name)
    batches = {(table.accelerators[table.acc[c]].name, int(table.batch[c])) for c in table.of_server(i)}
    assert ("G2", 7) in batches and len(batches) > len({a for a, _ in batches})
    kept = build(table, MipOptions()).candidates
    pairs = [(int(table.server[c]), int(table.acc[c])) for c in kept]
    assert len(pairs) == len(set(pairs))  # one batch size per (server, accelerator) survives
    for c in kept:  # and it is one with the fewest replicas there
        same = [k for k in range(len(table)) if table.server[k] == table.server[c] and table.acc[k] == table.acc[c]]
        assert table.replicas[c] == min(table.replicas[k] for k in same)
    objectives = {rule: solve(system, solver="highs", batch_rule=rule).objective for rule in ("inferno", "optimal",
                                                                                              "all")}
    assert objectives["all"] <= min(objectives["inferno"], objectives["optimal"]) + 1e-9


def test_timed_out_exact_solver_never_answers_worse_than_greedy():
    """A backend stopped early with a poor incumbent (here: nobody served) loses to its greedy warm start."""
    table = build_table(load_scenario(SCENARIOS / "inferno-small"), Settings())
    form = build(table, MipOptions())

    def poor(problem, options):
        x = np.zeros(len(problem.lb))
        x[form.unserved_cols[form.unserved_cols >= 0]] = 1
        from inferno_mip.models.lexicographic import MipResult
        return MipResult("time-limit", x, float(problem.c @ x), None)

    answer = exact.solve_exact(table, poor, saturation_policy="RoundRobin")
    greedy_counts = exact.greedy.solve(table, saturation_policy="RoundRobin").counts
    assert answer.status == "time-limit" and "greedy" in answer.message
    assert np.array_equal(answer.counts, greedy_counts)
