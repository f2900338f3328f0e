"""Candidate tables: default perf model per data generation, the batch rule, vectorised sizing speed."""

from __future__ import annotations


import numpy as np
import pytest

from inferno_mip import load_scenario, solve
from inferno_mip.tables import Settings, _perf_model, batch_size, build_table

from conftest import SCENARIOS


@pytest.fixture(scope="module")
def large():
    return load_scenario(SCENARIOS / "inferno-large")


def test_default_perf_model_by_generation(large):
    g3 = next(iter(large.perf_by_key.values()))
    assert g3.generation == "G3"
    assert Settings().perf_model_for(g3) == "iteration"  # continuous batching at iteration level for perfParms
    assert Settings(compat=True).perf_model_for(g3) == "old3"  # what inferno's sample solutions used
    assert Settings(perf_model="old").perf_model_for(g3) == "old"


def test_batch_rule_validation():
    with pytest.raises(ValueError, match="batch rule"):
        Settings(batch_rule="largest")


@pytest.mark.parametrize("compat", [False, True])
def test_table_matches_per_model_sizing(large, compat):
    """The vectorised table pass gives the same rate per replica as PerfModel.size() one by one."""
    settings = Settings(compat=compat)
    table = build_table(large, settings)
    for c in range(0, len(table), 37):
        row = table.rows[table.server[c]]
        pm = _perf_model(settings, table.perf[c], row.server, int(table.batch[c]), int(table.queue[c]))
        pm._size_cache.clear()
        s = pm.size(ttft=row.ttft_target, itl=row.itl_target, tps=row.tps_target)
        assert table.rate_star[c] == pytest.approx(s.throughput, rel=1e-12)


def test_optimal_batch_rule(large):
    small = large.replace(servers=large.servers[::9])  # 3 servers x 21 accelerators keeps the test fast
    base = build_table(small, Settings())
    opt = build_table(small, Settings(batch_rule="optimal"))
    key = {(int(base.server[c]), int(base.acc[c])): c for c in range(len(base))}
    changed = 0
    for c in range(len(opt)):
        row = opt.rows[opt.server[c]]
        cap = batch_size(row.server, opt.perf[c], opt.settings)
        assert 1 <= opt.batch[c] <= cap  # never above the memory-derived batch
        b = key.get((int(opt.server[c]), int(opt.acc[c])))
        if b is not None:
            # near-peak: at least (1 - eps/2) of the throughput at inferno's batch (f(N) <= peak)
            assert opt.rate_star[c] >= 0.99 * base.rate_star[b] * (1 - 1e-9)
            changed += opt.batch[c] < base.batch[b]
        assert opt.ttft[c] <= row.ttft_target * (1 + 1e-9) and opt.itl[c] <= row.itl_target * (1 + 1e-9)
    assert changed > len(opt) // 4  # most candidates need far less than the memory limit
    sol = solve(small, batch_rule="optimal")
    assert sol.counts() == {"ok": len(small.servers)}
    assert all(a.max_batch <= 256 for a in sol.allocations)
