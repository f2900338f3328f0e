"""The benchmark harness: reproducible sweeps, failures recorded without losing other results."""

from __future__ import annotations

import math

import pytest

from inferno_mip import bench
from inferno_mip.cli import main


@pytest.fixture(scope="module")
def sweep():
    tasks = bench.tasks("small-pool", [6, 12], ["greedy", "highs", "nope"], repeat=1, seed=3, time_limit=10)
    return tasks, bench.run_local(tasks, jobs=2)


def test_sweep_records_every_run(sweep):
    tasks, records = sweep
    assert len(records) == len(tasks) == 6
    for task, record in zip(tasks, records):
        assert (record.solver, record.servers, record.seed) == (task.solver, task.servers, task.seed)
        if task.solver == "nope":
            assert record.outcome == "error" and "unknown solver" in record.error
        else:
            assert record.outcome == "solved" and record.ok + record.best_effort + record.unserved == task.servers
            assert record.total_s > 0 and record.peak_mb > 0 and record.cards_used <= record.capacity
    exact = [r for r in records if r.solver == "highs"]
    assert all(r.status == "optimal" and r.gap <= 1e-6 for r in exact)


def test_same_seed_same_scenarios_and_costs(sweep):
    tasks, records = sweep
    again = bench.run_local([t for t in tasks if t.solver != "nope" and t.servers == 12], jobs=2)
    first = [(r.solver, r.servers, r.seed, r.total_cost, r.objective) for r in records
             if r.solver != "nope" and r.servers == 12]
    assert [(r.solver, r.servers, r.seed, r.total_cost, r.objective) for r in again] == first


def test_timeout_is_recorded_and_sweep_goes_on(monkeypatch):
    tasks = bench.tasks("small-pool", [6], ["greedy"], repeat=1, seed=0, time_limit=5)
    monkeypatch.setattr(bench, "hard_timeout", lambda task: 0.0 if task.solver == "highs" else 600)
    tasks = [bench.Task("small-pool", 6, 0, 0, "highs", 5)] + tasks
    records = bench.run_local(tasks, jobs=1)
    assert records[0].outcome == "timeout" and "killed" in records[0].error
    assert records[1].outcome == "solved"


def test_csv_summary_and_plots(sweep, tmp_path):
    _, records = sweep
    bench.write_csv(records, tmp_path / "r.csv")
    back = bench.read_csv(tmp_path / "r.csv")
    assert len(back) == len(records)
    for a, b in zip(records, back):
        for x, y in zip(a.__dict__.values(), b.__dict__.values()):
            assert x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
    table = bench.summary(records)
    assert table.count("\n") == 1 + 2 * 3  # header, rule, sizes × solvers
    assert "| small-pool | 12 | highs |" in table
    paths = bench.plot(records, tmp_path / "plots")
    assert all(p.stat().st_size > 1000 for p in paths)


def test_bench_cli(tmp_path, capsys):
    code = main(["bench", "--family", "small-pool", "--sizes", "5", "--solvers", "greedy", "--repeat", "1",
                 "--output", str(tmp_path)])
    assert code == 0
    assert (tmp_path / "results.csv").exists() and "Machine:" in (tmp_path / "summary.md").read_text()
    assert main(["bench", "--family", "nonesuch", "--output", str(tmp_path)]) == 2
    assert "unknown family" in capsys.readouterr().err


@pytest.mark.slow  # starts a Ray cluster
def test_ray_executor_runs_the_same_sweep(sweep):
    pytest.importorskip("ray")
    tasks, records = sweep
    some = [t for t in tasks if t.servers == 6]
    on_ray = bench.run_ray(some)
    local = {(r.solver, r.seed): (r.outcome, r.total_cost) for r in records if r.servers == 6}
    for r in on_ray:
        outcome, cost = local[(r.solver, r.seed)]
        assert r.outcome == outcome
        assert r.total_cost == cost or (math.isnan(r.total_cost) and math.isnan(cost))
