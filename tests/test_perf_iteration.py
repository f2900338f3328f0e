"""The "iteration" perf model against the one-replica simulator (the yardstick), and its own invariants.

Tolerances: the simulator's estimates at these run lengths carry a few percent of noise at moderate load; the
model is held to 10 % on TTFT, 5 % on ITL and 3 % on throughput there (the benchmark's grid reaches 90 % load).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferno_mip.queueing import make_perf_model
from inferno_mip.queueing.iteration import (decode_cost_variance, length_moments, occupancy_spread_factor,
                                            queue_factor, request_work, work_moments, work_timing)
from inferno_mip.sim import LengthDist, ReplicaConfig, simulate_replica

BASE = dict(alpha=8.0, beta=0.033, gamma=0.000333)  # queue-analysis "baseline"
NO_BUDGET = 1e12  # the simulator runs without a per-iteration token budget


def _pair(n, m, batch, geometric, params=BASE, queue=128):
    cv = math.sqrt(1.0 - 1.0 / m) if geometric else 0.0
    pm = make_perf_model("iteration", params, in_tokens=n, out_tokens=m, max_batch=batch, max_queue=queue,
                         max_num_tokens=NO_BUDGET, out_tokens_cv=cv)
    cfg = ReplicaConfig(max_batch=batch, max_queue=queue, **params)
    out = LengthDist.geometric(m) if geometric else LengthDist.fixed(m)
    return pm, cfg, out


def _simulate(cfg, rate, n, out, completions, seed=3):
    warmup = 0.2 * completions / rate
    return simulate_replica(cfg, rate, LengthDist.fixed(n), out, duration=warmup + completions / rate,
                            warmup=warmup, seed=seed)


@pytest.mark.parametrize("geometric", [False, True])
def test_capacity_is_the_simulated_full_batch_throughput(geometric):
    pm, cfg, out = _pair(128, 256, 16, geometric)
    res = _simulate(cfg, 2.0 * pm.max_rate, 128, out, 6000)
    assert res.running_mean == pytest.approx(16, rel=1e-3)  # always a full batch
    assert res.throughput == pytest.approx(pm.max_rate, rel=0.03)


@pytest.mark.parametrize("geometric, load", [(False, 0.3), (False, 0.6), (True, 0.3), (True, 0.6)])
def test_matches_the_simulator_at_moderate_load(geometric, load):
    pm, cfg, out = _pair(128, 256, 32, geometric)
    rate = load * pm.max_rate
    res = _simulate(cfg, rate, 128, out, 5000)
    m = pm.analyze(rate)
    assert m.ttft == pytest.approx(res.ttft_mean, rel=0.10)
    assert m.itl == pytest.approx(res.itl_mean, rel=0.05)
    assert m.throughput == pytest.approx(res.throughput, rel=0.03)
    assert m.num_in_service == pytest.approx(res.running_mean, rel=0.05)


HEAVY = dict(alpha=16.32, beta=0.421, gamma=0.0132)  # llama_70b on H100: context reads dominate an iteration


@pytest.mark.parametrize("params, n, m, batch, geometric, load, completions, seeds, tol", [
    # queue-dominated, equal lengths: the M/D/c-like half of the chain's delay (simulator s.e. ~4 %)
    (BASE, 256, 256, 8, False, 0.8, 10000, 6, 0.15),
    # queue-dominated, geometric lengths: the work share's variability (s.e. ~6 %)
    (BASE, 256, 256, 8, True, 0.7, 10000, 6, 0.20),
    # no queue, context reads dominate, geometric lengths: boundary wait and prefill of a length-biased batch
    (HEAVY, 128, 256, 32, True, 0.5, 4000, 4, 0.10),
])
def test_ttft_against_the_simulator_mean_over_seeds(params, n, m, batch, geometric, load, completions, seeds, tol):
    """Grid-like points of benchmarks/perf_model.py, small enough for the default suite. The tolerance is the
    issue's 10 % plus about two standard errors of the simulator's mean over the seeds (its TTFT at 70-80 %
    load varies by +-15 % between seeds of 10,000 completions)."""
    pm, cfg, out = _pair(n, m, batch, geometric, params)
    rate = load * pm.max_rate
    sims = [_simulate(cfg, rate, n, out, completions, seed=10 + i).ttft_mean for i in range(seeds)]
    assert pm.analyze(rate).ttft == pytest.approx(float(np.mean(sims)), rel=tol)


def test_geometric_lengths_cost_capacity_that_the_mean_hides():
    equal, _, _ = _pair(256, 1024, 32, False)
    spread, _, _ = _pair(256, 1024, 32, True)
    new = make_perf_model("new", BASE, in_tokens=256, out_tokens=1024, max_batch=32, max_queue=128)
    assert spread.max_rate < 0.85 * equal.max_rate  # E[m^2] = 2 m^2: much more context read per request
    assert equal.max_rate == pytest.approx(new.max_rate, rel=0.01)  # equal lengths: the v0.7 work, one fewer step


@settings(max_examples=40, deadline=None)
@given(st.floats(1, 4096), st.floats(0, 3), st.floats(0, 2), st.floats(1e-3, 0.1), st.floats(0, 2e-3),
       st.integers(1, 4))
def test_work_moments_are_consistent(m, out_cv, in_cv, beta, gamma, c):
    n = 512.0
    ew, ew2, ewi, ei, ei2 = work_moments(beta, gamma, n, m, float(c), in_cv, out_cv)
    w_p, w_tot, _ = request_work(beta, gamma, n, m, float(c), in_cv, out_cv)
    assert ew == pytest.approx(w_tot, rel=1e-9)
    assert ei == pytest.approx(c + m - 1.0, rel=1e-12)
    assert ew2 >= ew * ew * (1 - 1e-9) and ei2 >= ei * ei * (1 - 1e-9)  # variances >= 0
    if out_cv == 0 and in_cv == 0:
        assert ew2 == pytest.approx(ew * ew, rel=1e-9) and ei2 == pytest.approx(ei * ei, rel=1e-9)
        # equal lengths near saturation: half the M/M/c delay (M/D/c)
        p = SimpleNamespace(alpha=8.0, ew=ew, ew2=ew2, ewi=ewi, ei=ei, ei2=ei2, scv_i=0.0, max_batch=64)
        full = SimpleNamespace(p_block=np.array([0.7]), lam=np.array([1.0 / (ew + 8.0 / 32 * ei)]))
        factor = queue_factor(p, 32, full)  # at the full batch's capacity
        assert float(factor[0]) == pytest.approx(0.5)


@settings(max_examples=40, deadline=None)
@given(st.floats(2, 2048), st.floats(0, 2), st.floats(1e-3, 0.1), st.floats(0, 2e-3), st.sampled_from([1, 8, 64]),
       st.floats(0.05, 1.2))
def test_queue_factor_fast_paths_equal_the_general_form(m, out_cv, beta, gamma, batch, load):
    pm = make_perf_model("iteration", dict(alpha=8.0, beta=beta, gamma=gamma), in_tokens=300, out_tokens=m,
                         max_batch=batch, max_queue=10, out_tokens_cv=out_cv)
    svc = pm.service
    stats = pm.chain.solve(np.array([load * pm.max_rate / 1000.0]))
    general = SimpleNamespace(**{k: getattr(svc, k) for k in ("alpha", "ew", "ew2", "ewi", "ei", "ei2", "scv_i")},
                              max_batch=-1)  # not this batch: the per-row form, no shortcut
    fast, slow = queue_factor(svc, batch, stats), queue_factor(general, batch, stats)
    np.testing.assert_allclose(fast, slow, rtol=1e-12)
    # between M/D/c (1/2) and Allen-Cunneen at the larger c_s^2, never above M/M/c for c_s^2 < 1
    assert np.all((fast >= 0.5 - 1e-12) & (fast <= max(1.0, 0.5 * (1.0 + max(svc.scv_s, svc.scv_i))) + 1e-12))


def test_length_moments_match_a_sampled_gamma():
    rng = np.random.default_rng(0)
    mean, cv = 300.0, 0.8
    x = rng.gamma(1.0 / cv**2, mean * cv**2, 400_000)
    for j, value in enumerate(length_moments(mean, cv)):
        assert value == pytest.approx(np.mean(x**j), rel=0.03)


def test_decode_cost_variance_over_all_decode_iterations():
    gamma, n = 2e-4, 400.0
    # equal lengths: the age j is uniform on 1..d, Var = (d^2 - 1)/12
    assert decode_cost_variance(gamma, n, 101.0) == pytest.approx(gamma**2 * (100**2 - 1) / 12.0, rel=1e-12)
    assert decode_cost_variance(gamma, n, 1.0) == 0.0  # no decode iteration
    # gamma-distributed lengths (independent prompt lengths): every decode iteration of every request, sampled
    rng = np.random.default_rng(1)
    m, cv, in_cv = 200.0, 0.9, 0.5
    d = np.maximum(np.rint(rng.gamma(1.0 / cv**2, m * cv**2, 20_000)) - 1.0, 0.0).astype(np.int64)
    prompts = rng.gamma(1.0 / in_cv**2, n * in_cv**2, d.size)
    ages = np.arange(d.sum()) - np.repeat(np.cumsum(d) - d, d) + 1.0
    cost = gamma * (np.repeat(prompts, d) + ages)
    assert decode_cost_variance(gamma, n, m, in_cv, cv) == pytest.approx(np.var(cost), rel=0.05)


def _cost_profile(beta, gamma, n, m, c):
    """A request's work per iteration of its residence (ages 0..c+m-2): c prefill chunks, then decode token j at
    age c - 1 + j reading n + j context tokens (request_work's accounting)."""
    w_p = request_work(beta, gamma, n, m, float(c))[0]
    return np.r_[np.full(c, w_p / c), beta + gamma * (n + np.arange(1.0, m))]


@settings(max_examples=60, deadline=None)
@given(st.floats(0, 0.1, allow_subnormal=False), st.floats(0, 2e-3, allow_subnormal=False), st.floats(0, 4096),
       st.integers(1, 600), st.integers(1, 4))
def test_work_timing_is_the_work_weighted_age(beta, gamma, n, m, c):
    cost = _cost_profile(beta, gamma, n, m, c)
    if cost.sum() <= 0.0:
        return
    w_p, w_tot, _ = request_work(beta, gamma, n, float(m), float(c))
    age = np.arange(cost.size) + 0.5  # mid-iteration
    want = 2.0 * (1.0 - float(cost @ age) / cost.sum() / cost.size)
    # rel 1e-7: both sides cancel to 2 (1 - x), x near 1/2, from sums of up to 600 terms
    assert work_timing(beta, gamma, n, float(m), float(c), w_p, w_tot) == pytest.approx(want, rel=1e-7, abs=1e-12)


def test_work_timing_limits():
    assert work_timing(0.03, 0.0, 1.0, 400.0, 1.0, 0.03, 0.03 * 400) == pytest.approx(1.0)  # the same work each iteration
    w_p, w_tot, _ = request_work(0.03, 0.0, 1e9, 100.0, 1.0)
    assert work_timing(0.03, 0.0, 1e9, 100.0, 1.0, w_p, w_tot) == pytest.approx(2.0 - 1.0 / 100, rel=1e-6)  # prefill only
    w_p, w_tot, _ = request_work(0.0, 1e-3, 0.0, 1000.0, 1.0)
    assert work_timing(0.0, 1e-3, 0.0, 1000.0, 1.0, w_p, w_tot) == pytest.approx(2.0 / 3.0, abs=2e-3)  # context reads


@pytest.mark.parametrize("params, n, nu", [(dict(beta=0.0, gamma=1e-3), 0.0, 0.75),  # context reads: late work
                                           (dict(beta=0.03, gamma=1e-5), 400.0, 0.6)])  # long prompt: early work
def test_fixed_residence_occupancy_variance(params, n, nu):
    """occupancy_spread_factor's premise: with a residence of exactly I iterations and arrivals per iteration
    Poisson(lambda (alpha + the residents' work at their ages)), the number in service has variance/mean
    1/((1 - nu)(1 - (theta - 1) nu)), not the chain's 1/(1 - nu). Simulated: 400 independent runs of 1,500
    iterations (residence 30), the occupancy pooled from iteration 600 on (about 1.5 % s.e.)."""
    m = 30
    cost = _cost_profile(params["beta"], params["gamma"], n, m, 1)
    w_p, w_tot, _ = request_work(params["beta"], params["gamma"], n, float(m), 1.0)
    theta = work_timing(params["beta"], params["gamma"], n, float(m), 1.0, w_p, w_tot)
    kernel = (nu * cost / cost.sum())[::-1]  # arrivals per iteration caused by a resident, oldest age first
    rng = np.random.default_rng(5)
    arrivals = np.zeros((400, 1500))
    for t in range(m, arrivals.shape[1]):
        arrivals[:, t] = rng.poisson(1.0 + arrivals[:, t - m:t] @ kernel)
    count = np.cumsum(arrivals, axis=1)
    count = (count[:, m:] - count[:, :-m])[:, 600:]  # arrivals in the last m iterations
    want = 1.0 / ((1.0 - nu) * (1.0 - (theta - 1.0) * nu))
    assert abs(theta - 1.0) > 0.15 and abs(want * (1.0 - nu) - 1.0) > 0.12  # far enough from the chain's
    assert count.var() / count.mean() == pytest.approx(want, rel=0.06)


def test_occupancy_spread_factor_by_work_timing_and_cv():
    stats = SimpleNamespace(p_block=np.array([1e-3, 0.05, 0.5, 1.0]), lam=np.full(4, 2e-3))
    for beta, gamma, n, m, cv, sign in [(0.033, 3.33e-4, 256, 1024, 0.0, -1), (0.0418, 5.8e-5, 1000, 500, 0.0, 1),
                                        (0.033, 3.33e-4, 256, 1024, 1.0, 0), (0.033, 3.33e-4, 256, 1024, 1.5, 0)]:
        pm = make_perf_model("iteration", dict(alpha=8.0, beta=beta, gamma=gamma), in_tokens=n, out_tokens=m,
                             max_batch=32, max_queue=64, out_tokens_cv=cv)
        f = occupancy_spread_factor(pm.service, stats)
        assert f[-1] == pytest.approx(1.0)  # a batch always full: nothing to correct
        if sign == 0:
            assert np.all(f == 1.0) and not pm.service.spread_on  # memoryless (or wider) residence: the chain's
        else:  # late work (context reads) spreads the occupancy less than the chain's, early work (prefill) more
            assert np.all(np.sign(f[:-1] - 1.0) == sign) and np.all(np.diff(np.log(f)) * sign < 0)


def test_lost_arrivals_do_not_count_in_ttft():
    # Q = 0: arrivals to a full batch are lost; TTFT averages over the admitted ones and stays finite
    pm = make_perf_model("iteration", BASE, in_tokens=256, out_tokens=256, max_batch=4, max_queue=0)
    lo, hi = pm.analyze(0.5 * pm.max_rate), pm.analyze(3.0 * pm.max_rate)
    assert hi.blocking > 0.3 and hi.wait_time < 100 and hi.ttft >= lo.ttft


@pytest.mark.slow
@pytest.mark.parametrize("params, n, m", [(BASE, 256, 1024), (dict(alpha=4.0, beta=0.017, gamma=0.000167), 64, 128),
                                          (dict(alpha=10.645, beta=0.04176, gamma=5.8e-5), 1000, 500)])
def test_grid_against_the_simulator(params, n, m):
    """M in {8, 32, 128}, equal and geometric lengths, loads 20-70 %: ITL and throughput within 5 % everywhere;
    TTFT within 10 % where the queueing delay is small (M >= 32 up to 50 % load, M = 8 at 20 %). Beyond that the
    delay of a small or nearly full batch is the model's known gap (benchmarks/RESULTS.md), not asserted here."""
    misses = []
    for batch in (8, 32, 128):
        for geometric in (False, True):
            pm, cfg, out = _pair(n, m, batch, geometric, params)
            for load in (0.2, 0.5, 0.7):
                rate = load * pm.max_rate
                res = _simulate(cfg, rate, n, out, 15000)
                got = pm.analyze(rate)
                checks = [("itl", got.itl, res.itl_mean, 0.05), ("thr", got.throughput, res.throughput, 0.05)]
                if load <= (0.5 if batch >= 32 else 0.2):
                    checks.append(("ttft", got.ttft, res.ttft_mean, 0.10))
                for name, model, sim, tol in checks:
                    if abs(model - sim) > tol * sim:
                        misses.append((batch, geometric, load, name, round(model, 3), round(sim, 3)))
    assert len(misses) <= 2, misses  # at most 2 of 46 checks (the simulator's own noise)


def test_tuner_fits_the_iteration_model_on_the_simulated_observer():
    from inferno_mip.tuner import Observation, TunerOptions, predict, tune_all
    from inferno_mip.tuner.config import parse_config
    from inferno_mip.tuner.observers import Phase, SimulatedObserver

    truth = (16.0, 0.04, 2e-4)
    sim = SimulatedObserver([Phase(25, 120, 1024, 256, *truth)], noise=0.05, seed=0, load_spread=0.5,
                            token_spread=0.5, perf_model="iteration", out_tokens_cv=1.0)
    cfg = parse_config({"filterData": {"gammaFactor": 1, "errorLevel": 0.05, "tPercentile": 1.96},
                        "modelData": {"initState": [5, 0.05, 5e-5], "percentChange": [0.15] * 3,
                                      "boundedState": False, "expectedObservations": [200, 40]}})
    options = TunerOptions(process_scale=0.003, perf_model="iteration")
    pts = tune_all(sim, cfg, options=options)
    held = Observation(rpm=100, in_tokens=1500, out_tokens=400, max_batch=128, max_queue=1280, out_tokens_cv=1.0)
    fitted = [pts[-1].params[k] for k in ("alpha", "beta", "gamma")]
    want = predict(truth, held, perf_model="iteration")
    assert np.all(np.abs(predict(fitted, held, perf_model="iteration") / want - 1) < 0.05)
    assert sum(p.status == "accepted" for p in pts[10:]) >= 10


@pytest.mark.parametrize("batch, queue", [(1, 0), (1, 8), (16, 0), (16, 160)])
def test_closed_form_prefill_equals_the_table_sums(batch, queue):
    pm = make_perf_model("iteration", BASE, in_tokens=300, out_tokens=200, max_batch=batch, max_queue=queue,
                         out_tokens_cv=0.7)
    assert pm.service.affine
    rates = np.geomspace(pm.rate_range[0], 2.0 * pm.max_rate, 25)
    closed = pm.analyze(rates)
    pm.service.affine = False  # the general path: sums over the in-service distribution
    try:
        tables = pm.analyze(rates)
    finally:
        pm.service.affine = True
    for name in ("ttft", "itl", "prefill_time", "wait_time"):
        np.testing.assert_allclose(getattr(closed, name), getattr(tables, name), rtol=1e-9, atol=1e-12)


@settings(max_examples=150, deadline=None)  # 3,000 examples pass too (a few minutes)
@given(st.floats(0.5, 50), st.floats(1e-3, 0.2), st.floats(0, 2e-3), st.floats(0, 8192), st.floats(1.5, 4),
       st.integers(2, 4), st.integers(0, 60), st.floats(0, 1.5))
def test_itl_rises_with_the_rate_at_few_output_tokens(alpha, beta, gamma, n, m, batch, queue, out_cv):
    """Few decode iterations and a small batch, up to past saturation, where the prefill's share of the service
    time is largest: ITL must not fall as the rate rises (it did by up to 1 % with a time-averaged prefill)."""
    pm = make_perf_model("iteration", dict(alpha=alpha, beta=beta, gamma=gamma), in_tokens=n, out_tokens=m,
                         max_batch=batch, max_queue=queue, max_num_tokens=NO_BUDGET, out_tokens_cv=out_cv)
    itl = pm.analyze(np.geomspace(pm.rate_range[0], 1.5 * pm.max_rate, 200)).itl
    assert np.all(np.diff(itl) >= -1e-9 * itl[1:])


@pytest.mark.parametrize("m", [2.0, 3.0, 257.0])
def test_itl_of_a_lone_request_is_one_decode_iteration(m):
    """At vanishing load a request decodes alone: ITL = alpha + its mean decode work per iteration."""
    n = 300.0
    pm = make_perf_model("iteration", BASE, in_tokens=n, out_tokens=m, max_batch=8, max_queue=16,
                         max_num_tokens=NO_BUDGET)
    d = m - 1.0
    decode = BASE["beta"] * d + BASE["gamma"] * (n * d + d * m / 2.0)  # token j reads n + j context tokens
    assert pm.analyze(pm.rate_range[0]).itl == pytest.approx(BASE["alpha"] + decode / d, rel=2e-3)


GRID = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "perf-model" / "perf-model-grid.csv"


def test_stored_simulator_grid_is_matched():
    """The model against the stored simulator grid of benchmarks/perf_model.py (396 points, seeds added where the
    mean was unresolved; no simulation here). Floors a little under the values RESULTS.md reports (TTFT within
    10 % at 99 % of the 319 resolved points, 92 % of all, 98 % of the 198 with equal output lengths and 85 % of
    those with geometric ones, ITL at 99 %
    of all, throughput at all), so a model change that loses accuracy against the simulator fails here."""
    with GRID.open() as f:
        rows = list(csv.DictReader(f))
    ttft_ok, resolved, itl_ok, thr_ok = [], [], [], []
    equal = np.array([r["lengths"] == "equal" for r in rows])
    for r in rows:
        v = {k: float(x) for k, x in r.items() if k not in ("set", "lengths")}
        pm = make_perf_model("iteration", {k: v[f"set_{k}"] for k in ("alpha", "beta", "gamma")},
                             in_tokens=v["set_n"], out_tokens=v["set_m"], max_batch=int(v["batch"]),
                             max_queue=128, max_num_tokens=NO_BUDGET, out_tokens_cv=v["out_cv"])
        m = pm.analyze(v["rate"])
        ttft_ok.append(abs(m.ttft / v["sim_ttft"] - 1) <= 0.10)
        resolved.append(2.0 * v["sim_ttft_se"] <= 0.05 * v["sim_ttft"])
        itl_ok.append(abs(m.itl / v["sim_itl"] - 1) <= 0.10)
        thr_ok.append(abs(m.throughput / v["sim_thr"] - 1) <= 0.10)
    ttft_ok, resolved = np.array(ttft_ok), np.array(resolved)
    assert len(rows) == 396 and resolved.sum() >= 315
    assert ttft_ok[resolved].mean() >= 0.97  # 98.7 % measured
    assert ttft_ok.mean() >= 0.90  # all points, unresolved ones too (91.7 % measured; the acceptance target)
    assert ttft_ok[equal].mean() >= 0.96  # equal output lengths (98.5 % measured; 82.8 % before the spread factor)
    assert ttft_ok[~equal].mean() >= 0.83  # geometric (84.8 % measured; 80.3 % before the composition term)
    assert np.mean(itl_ok) >= 0.97 and all(thr_ok)


def test_full_batch_composition_age_balance():
    """benchmarks/perf_model_occupancy.composition_ratio, the predicted mean iteration time per occupancy over the
    chain's mean field: exactly the mean field when the residents' ages do not vary (the first-order age balance
    has it as its solution), and at llama_70b/H100, M = 8, geometric lengths, 50 % load (grid row 188) rising with
    the occupancy to the simulator's measured full-batch ratio (1.21 over 24 seeds, RESULTS.md) within 0.06."""
    from benchmarks.perf_model_occupancy import composition_ratio

    s = dict(alpha=16.32, beta=0.421, gamma=0.01315625, n=128.0, m=1024.0)
    rate = 0.5 * 0.05587756680755869  # half the simulated capacity (req/s) at M = 8, geometric lengths
    flat = composition_ratio(s, 8, rate, var_age=0.0)
    assert np.allclose(flat, 1.0, atol=1e-9)
    cv = math.sqrt(1.0 - 1.0 / s["m"])
    var_age = decode_cost_variance(s["gamma"], s["n"], s["m"], 0.0, cv) / s["gamma"] ** 2
    ratio = composition_ratio(s, 8, rate, var_age=var_age)
    assert np.all(np.diff(ratio[1:]) > 0)
    assert ratio[8] == pytest.approx(1.21, abs=0.06)


def test_composition_for_all_rates_at_once_equals_the_age_balance():
    """benchmarks/perf_model_composition.composition_log_ratio (all rates and batch sizes in one tridiagonal solve
    per sweep) against composition_ratio (one rate at a time, swept to 1e-9): llama_70b/H100 with geometric
    lengths, rates from 10 % load to 15 % overload, M = 8 and 32 in one call (padded rows). Within 1e-4 in log."""
    from benchmarks.perf_model_composition import composition_log_ratio
    from benchmarks.perf_model_occupancy import composition_ratio

    s = dict(alpha=16.32, beta=0.421, gamma=0.01315625, n=128.0, m=1024.0)
    var_age = decode_cost_variance(1.0, s["n"], s["m"], 0.0, math.sqrt(1.0 - 1.0 / s["m"]))
    rates = np.array([0.005, 0.02, 0.04, 0.065, 0.005, 0.02, 0.04, 0.07])  # req/s; capacity ~0.056 (M = 8), ~0.061
    batch = np.array([8, 8, 8, 8, 32, 32, 32, 32])
    one = np.ones(rates.size)
    c0 = s["beta"] + s["gamma"] * s["n"]
    got = composition_log_ratio(rates / 1000.0, batch, 128 * one, s["alpha"] * one, c0 * one, s["gamma"] * one,
                                s["m"] * one, var_age * one, 32)
    for i, (rate, b) in enumerate(zip(rates, batch)):
        want = np.log(composition_ratio(s, int(b), float(rate), var_age)[1:])
        assert np.allclose(got[i, :b], want, atol=1e-4)
        assert np.all(got[i, b:] == 0.0)


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 12), queue=st.integers(0, 40), load=st.floats(0.05, 1.5),
       tilt=st.lists(st.floats(-0.3, 0.3), min_size=12, max_size=12))
def test_tilted_wait_is_the_chain_with_slowed_rates(batch, queue, load, tilt):
    """tilted_wait reweights the chain's solution; it must equal the chain solved with mu(k)/ratio_k."""
    from benchmarks.perf_model_composition import tilted_wait
    from inferno_mip.queueing.chain import BirthDeathChain

    log_mu = np.log(np.arange(1, batch + 1) / (40.0 + 3.0 * np.arange(1, batch + 1)))
    log_ratio = np.array(tilt[:batch])[None, :]
    lam = np.array([load * np.exp(log_mu[-1])])
    st0 = BirthDeathChain(log_mu, batch, queue).solve(lam)
    want = BirthDeathChain(log_mu - log_ratio[0], batch, queue).solve(lam).wait_time
    got = tilted_wait(st0, log_ratio, np.array([batch]), np.array([float(queue)]), np.log(lam) - log_mu[-1])
    assert got == pytest.approx(want, rel=1e-9, abs=1e-300)


def test_composition_tabulated_once_per_model_against_the_exact_solve():
    """benchmarks/perf_model_composition.log_ratio_table + tabulated_factor (log(W_c/W_chain) at 17 utilisations,
    interpolated in rho) against composition_factor solved at each rate: the same TTFT at the table's own
    utilisations (1e-9), within 1 % between them (0.6 % at most on the stored grids, RESULTS.md); llama_70b/H100,
    M = 32, geometric lengths, Q = 128."""
    from benchmarks import perf_model_composition as pc
    from inferno_mip.queueing import iteration

    s = dict(alpha=16.32, beta=0.421, gamma=0.01315625, n=128.0, m=1024.0)
    model = make_perf_model("iteration", {k: s[k] for k in ("alpha", "beta", "gamma")}, in_tokens=s["n"],
                            out_tokens=s["m"], max_batch=32, max_queue=128, max_num_tokens=1e12,
                            out_tokens_cv=math.sqrt(1.0 - 1.0 / s["m"]))
    rho, table = pc.log_ratio_table(model, 17)
    assert np.all(np.isfinite(table)) and table[1] > 0.0  # the composition slows a filling batch: W_c > W
    e_s = model.service.e_s
    nodes = rho[1:-1] / e_s  # req/ms
    between = np.arange(0.05, 1.0, 0.05) / e_s  # the error is largest at 75-100 % (4 % with 5 utilisations)
    original = iteration.queue_factor
    with pc.without_model_term():  # the model's own closed form is checked elsewhere
        plain = [model.analyze(1000.0 * lam).ttft for lam in nodes]
        try:
            iteration.queue_factor = pc.composition_factor
            exact = [model.analyze(1000.0 * lam).ttft for lam in np.concatenate((nodes, between))]
            iteration.queue_factor = pc.tabulated_factor(rho, table)
            got = [model.analyze(1000.0 * lam).ttft for lam in np.concatenate((nodes, between))]
        finally:
            iteration.queue_factor = original
    k = nodes.size
    assert max(e / t for e, t in zip(exact, plain)) > 1.05  # the composition adds wait (the model is low there)
    assert got[:k] == pytest.approx(exact[:k], rel=1e-9)
    assert got[k:] == pytest.approx(exact[k:], rel=0.01)


def _composition_by_recurrence(alpha, c0, gamma, m, var_age, n_max, lam):
    """r_k = 1 + gamma max(e0_k + lambda e1_k, 0)/T_mf(k), k = 0..N, by the recurrences of
    iteration.composition_term run one k at a time (each to its fixed point: T uses e0_k as soon as it is known)."""
    gv, size = gamma * var_age, n_max + 1
    t_mf = alpha + (c0 + gamma * m) * np.arange(size)
    e0, t = np.zeros(size), t_mf.copy()
    for k in range(1, size):
        e0[k] = e0[k - 1] + gv * (k - 1) / t[k - 1]
        t[k] = t_mf[k] + gamma * e0[k]
    e1 = np.zeros(size)
    for k in range(1, size):
        own = -gv * (k - 1) * gamma * e1[k - 1] / t[k - 1] ** 2
        if k < n_max:
            e1[k] = e1[k - 1] + (m / k) * (t[k] * k / (k + 1) * e0[k + 1] - t[k] * e0[k] - gv * k) + own
        else:
            e1[k] = e1[k - 1] - t[k] * m * e0[k] / n_max ** 2 + own
    return 1.0 + gamma * np.maximum(e0 + lam * e1, 0.0) / t_mf


def test_composition_closed_form_against_the_age_balance():
    """The first-order closed form of the filling batch's composition (the recurrences of composition_term)
    against the age balance solved to convergence (benchmarks/perf_model_occupancy.composition_ratio):
    llama_70b/H100, geometric lengths, M = 8 and 32. The full batch's slowdown, which sets P(full), within 1 %
    up to half the capacity; every occupancy within 2 % in log at light load (10 %)."""
    from benchmarks.perf_model_occupancy import composition_ratio

    s = dict(alpha=16.32, beta=0.421, gamma=0.01315625, n=128.0, m=1024.0)
    var_age = decode_cost_variance(1.0, s["n"], s["m"], 0.0, math.sqrt(1.0 - 1.0 / s["m"]))
    c0 = s["beta"] + s["gamma"] * s["n"]
    for batch, capacity in ((8, 0.0559), (32, 0.061)):  # req/s, simulated
        for load in (0.05, 0.1, 0.3, 0.5):
            want = composition_ratio(s, batch, load * capacity, var_age)
            got = _composition_by_recurrence(s["alpha"], c0, s["gamma"], s["m"], var_age, batch,
                                             load * capacity / 1000.0)
            assert got[batch] == pytest.approx(want[batch], rel=0.01)
            if load <= 0.1:
                assert np.allclose(np.log(got[1:]), np.log(want[1:]), atol=0.02)


def test_composition_term_of_many_models_at_once():
    """composition_term (all models in one set of array operations; sums over k exact up to EXACT_SLOTS = 64,
    beyond by the trapezoid rule with its end-slope term) against the recurrences run model by model: within 1e-12
    in the added delay's log where every k is summed (and at N = 65, whose 65 points fall on the integers), 5e-3
    for the trapezoid (2.5e-4 to 1.6e-3 measured at N = 66, 100, 128, 256, where the delay is up to e^99 times the
    chain's); zero with no age variance."""
    from inferno_mip.queueing.iteration import COMPOSITION_POINTS, EXACT_SLOTS, composition_term, quadrature_nodes

    alpha, c0, gamma, m = 16.32, 0.421 + 0.01315625 * 128, 0.01315625, 1024.0
    var_age = decode_cost_variance(1.0, 128.0, m, 0.0, math.sqrt(1.0 - 1.0 / m))
    batches = np.array([1, 2, 8, 33, 48, 64, 65, 66, 100, 128, 256])
    assert EXACT_SLOTS == 64 and quadrature_nodes(batches).tolist() == [0, 0, 0, 0, 0, 0, 65, 65, 65, 65, 65]
    e_s, scv_i, slope = 400.0, 1.2, 0.1
    one = np.ones(batches.size)
    got = composition_term(alpha * one, c0 * one, gamma * one, m * one, var_age * one, batches, e_s * one,
                           scv_i * one, slope * one).T  # a row per model
    rho = np.linspace(0.0, 1.0, COMPOSITION_POINTS)
    for row, batch in zip(got, batches):
        r = np.array([_composition_by_recurrence(alpha, c0, gamma, m, var_age, batch, x / e_s) for x in rho])
        ratio = np.prod(r[:, 1:], axis=1) * r[:, -1]
        want = (1.0 - rho) * 0.5 * (1.0 + scv_i) * np.maximum(ratio - 1.0, 0.0)
        tol = 1e-12 if batch <= EXACT_SLOTS or batch == 65 else 5e-3
        assert np.allclose(np.log1p(row), np.log1p(want), atol=tol, rtol=0.0), batch
    assert got[0].max() == 0.0  # one slot: a full batch is one request, no composition
    none = composition_term(alpha * one, c0 * one, gamma * one, m * one, 0.0 * one, batches, e_s * one,
                            scv_i * one, slope * one)
    assert not none.any()


def test_composition_term_quadrature_against_every_k_summed():
    """The trapezoid rule with its end-slope term (65 points beyond N = 64; every k summed up to 64) against every
    k summed, on models whose term varies with the utilisation (clipped composition at high load): within 5e-3 in
    log up to N = 64, 2e-2 at N = 100 and 256 (3.0e-3 and 1.2e-2 measured on 256 random sizing workloads)."""
    from inferno_mip.queueing.iteration import composition_term

    rng = np.random.default_rng(3)
    for batch, tol in ((48, 5e-3), (64, 5e-3), (100, 2e-2), (256, 2e-2)):
        models = [make_perf_model("iteration", dict(alpha=float(rng.uniform(4, 20)), beta=float(rng.uniform(0.01, 0.08)),
                                                    gamma=float(rng.uniform(1e-4, 1e-3))),
                                  in_tokens=float(rng.integers(64, 1024)), out_tokens=float(rng.integers(64, 1024)),
                                  max_batch=batch, max_queue=10 * batch, out_tokens_cv=1.0).service for _ in range(24)]
        cols = np.array([mdl.comp_args for mdl in models]).T
        args = (*cols[:5], cols[5].astype(np.int64), *cols[6:9])
        got, every = composition_term(*args), composition_term(*args, nodes=100_000)
        assert (every > 0.0).sum(axis=1).max() > 1  # the term reaches beyond light traffic
        assert np.allclose(np.log1p(got), np.log1p(every), atol=tol, rtol=0.0), batch


def _random_composition_models(rng, batches, out_cv=None):
    return [make_perf_model("iteration", dict(alpha=float(rng.uniform(2, 30)), beta=float(rng.uniform(0.005, 0.2)),
                                              gamma=float(rng.uniform(5e-5, 3e-3))),
                            in_tokens=float(rng.integers(16, 4096)), out_tokens=float(rng.integers(8, 2048)),
                            max_batch=int(b), max_queue=4 * int(b),
                            out_tokens_cv=float(rng.uniform(0.2, 2.0)) if out_cv is None else out_cv).service
            for b in batches]


def test_composition_term_against_the_per_k_reference_on_random_models():
    """composition_term (recurrences as w = gamma e0 and gamma e1 with e1's simplified source, all models at once,
    mixed max batches, the product only at the inner utilisations) against the reference: the original
    recurrences run model by model at every k (_composition_by_recurrence), W_c/W = r_N prod_k r_k at each of the 17
    utilisations, weighted by (1 - rho) variability_factor(scv_i, mdc_ratio): within 1e-11 in log(1 + term) where
    every k is summed (N <= 64; 7e-15 measured), on random models, output CV 0.2-2."""
    from inferno_mip.queueing.iteration import (COMPOSITION_POINTS, composition_term, mdc_ratio,
                                                variability_factor)

    rng = np.random.default_rng(11)
    batches = rng.choice([1, 2, 3, 5, 8, 16, 17, 24, 32, 33, 40, 48, 63, 64], size=40)
    models = _random_composition_models(rng, batches)
    cols = np.array([mdl.comp_args for mdl in models]).T
    got = composition_term(*cols[:5], cols[5].astype(np.int64), *cols[6:9])
    assert got.shape == (COMPOSITION_POINTS, len(models))
    rho = np.linspace(0.0, 1.0, COMPOSITION_POINTS)
    for j, mdl in enumerate(models):
        alpha, c0, gamma, m, var_age, batch, e_s, scv_i, slope = cols[:9, j]
        r = np.array([_composition_by_recurrence(alpha, c0, gamma, m, var_age, int(batch), x / e_s) for x in rho])
        ratio = np.prod(r[:, 1:], axis=1) * r[:, -1]
        light = variability_factor(np.full(rho.size, max(scv_i, 0.0)), mdc_ratio(slope, rho))
        want = (1.0 - rho) * light * np.maximum(ratio - 1.0, 0.0)
        assert np.allclose(np.log1p(got[:, j]), np.log1p(want), atol=1e-11, rtol=0.0), (j, int(batch))
    assert (got[1:-1] > 0.0).any(axis=0).mean() > 0.5  # the term is on for most of them


def test_full_batch_factor_table_is_queue_factor_plus_the_term():
    """With every output CV > 0, row_adjust reads queue_factor + composition_delay at the full batch from one table
    (full_batch_factor): at the table's utilisations the same as the two computed apart (1e-12), between them
    within 2 % (queue_factor's M/D/c curve interpolated linearly: 0.8 % here, 1.6 % at most on random sizing
    workloads, N = 8-256), stacked or alone."""
    from inferno_mip.queueing.iteration import (COMPOSITION_POINTS, composition_delay, full_batch_factor,
                                                set_composition_tables)
    from inferno_mip.queueing.rows import RowSet

    rng = np.random.default_rng(5)
    models = _random_composition_models(rng, rng.choice([2, 8, 16, 32, 64, 100], size=12), out_cv=1.0)
    assert all(mdl.comp_on for mdl in models)
    term, _, factor, _ = set_composition_tables(models)
    rho = np.linspace(0.0, 1.0, COMPOSITION_POINTS)
    fine = np.linspace(0.0, 1.0, 161)
    for j, mdl in enumerate(models):
        at_points = SimpleNamespace(lam=rho / mdl.e_s)
        want = queue_factor(mdl, mdl.max_batch, at_points)
        np.testing.assert_allclose(factor[:, j], want + term[:, j], rtol=1e-12)
        between = SimpleNamespace(lam=fine / mdl.e_s)
        exact = queue_factor(mdl, mdl.max_batch, between) + composition_delay(mdl, between)
        np.testing.assert_allclose(full_batch_factor(mdl, between), exact, rtol=0.02)
    pm = make_perf_model("iteration", dict(alpha=8.0, beta=0.05, gamma=5e-4), in_tokens=300, out_tokens=200,
                         max_batch=16, max_queue=160, out_tokens_cv=1.0)
    rs = RowSet([pm, pm], [0, 1, 1], [16, 16, 16], [160, 160, 160])
    from inferno_mip.queueing.models import gather
    rows = gather(rs.params, rs.mi)
    lam = np.array([0.1, 0.5, 0.9]) / pm.service.e_s
    np.testing.assert_allclose(full_batch_factor(rows, SimpleNamespace(lam=lam)),
                               full_batch_factor(pm.service, SimpleNamespace(lam=lam)), rtol=1e-15)


def test_one_model_in_stacked_form_takes_the_max_batch_path():
    """A model sized alone is evaluated in stacked form (RowSet, arrays of one row); its rows sit at its max batch,
    so queue_factor uses the precomputed terms, as for the model itself, with the same values."""
    from inferno_mip.queueing.iteration import at_max_batch
    from inferno_mip.queueing.rows import RowSet

    pm = make_perf_model("iteration", dict(alpha=8.0, beta=0.05, gamma=5e-4), in_tokens=300, out_tokens=200,
                         max_batch=16, max_queue=160, out_tokens_cv=0.5)
    rs = RowSet([pm], [0, 0, 0], [16, 16, 16], [160, 160, 160])
    n = np.full(3, 16)
    assert at_max_batch(rs.params, n) and at_max_batch(pm.service, 16)
    stats = pm.chain.solve(np.array([0.2, 0.5, 0.8]) * pm.max_rate / 1000.0)
    stacked = queue_factor(rs.params, n, stats)
    np.testing.assert_array_equal(stacked, queue_factor(pm.service, 16, stats))
    below = RowSet([pm], [0, 0], [8, 16], [160, 160])
    assert not at_max_batch(below.params, np.array([8, 16]))


def test_composition_term_is_the_same_stacked_and_alone():
    """Sizing evaluates many models' rows at once (stacked tables, gathered per row); a model alone must give the
    same TTFT, with and without output-length CV, at different max batches."""
    from inferno_mip.queueing.sizing import analyze_models

    models = [make_perf_model("iteration", dict(alpha=20.0 + i, beta=0.1, gamma=0.002), in_tokens=100,
                              out_tokens=200, max_batch=8 * (1 + i % 3), max_queue=128,
                              out_tokens_cv=math.sqrt(1.0 - 1.0 / 200) if i % 2 else None) for i in range(6)]
    rates = [0.3 * (1 + i % 4) for i in range(6)]
    assert models[1].service.comp_on and not models[0].service.comp_on
    for group in (models, models[1:2] * 3):
        stacked = analyze_models(group, rates[:len(group)])
        for model, rate, got in zip(group, rates, stacked):
            assert got.ttft == pytest.approx(model.analyze(rate).ttft, rel=1e-12)
