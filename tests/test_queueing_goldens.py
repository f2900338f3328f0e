"""Compat mode against the Go goldens of reference/specs/queue-model.md §4.

Tolerances (spec §4): rates, L_s, R, ITL 1e-4 relative; W 1e-3 relative or 0.01 ms absolute; TTFT 1e-4 relative.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inferno_mip.queueing import (
    InfeasibleTarget,
    QueueingError,
    chunk_counts,
    make_perf_model,
    new_primitives,
    solve_chain,
)

DATA = Path(__file__).parent / "data" / "queueing"
REL = 1e-4
BASE = dict(alpha=8.0, beta=0.033, gamma=0.000333)
G2P = dict(alpha=12.0, beta=0.05, gamma=0.0005)


def load(name):
    return json.loads((DATA / name).read_text())


def rel(a, b):
    return abs(a - b) / abs(b)


def check_wait(actual, expected):
    assert abs(actual - expected) <= max(1e-3 * abs(expected), 0.01), (actual, expected)


def check(actual, expected, tol=REL):
    assert rel(actual, expected) <= tol, (actual, expected, rel(actual, expected))


def check_metrics(m, exp: dict):
    """exp keys are Metrics field names; wait_time uses the W tolerance."""
    for k, v in exp.items():
        got = getattr(m, k)
        if k == "wait_time":
            check_wait(got, v)
        elif v == 0:
            assert abs(got) < 1e-9, (k, got)
        else:
            check(got, v)


# ---------------------------------------------------------------- G1 primitives, C9 chunk table
@pytest.mark.parametrize("row", load("golden_primitives.json"), ids=lambda r: f"B{r['B']}-n{r['AvgInputTokens']}")
@pytest.mark.parametrize("float32", [True, False])
def test_g1_primitives(row, float32):
    p = new_primitives(row["alpha"], row["beta"], row["gamma"], row["AvgInputTokens"], row["AvgOutputTokens"],
                       [row["B"]], float32=float32)
    assert int(p["nc"][0]) == row["nc"]
    for key, gkey in (("iter_time", "iter_time"), ("prefill", "prefill"), ("itl", "itl"), ("tau", "tau")):
        check(float(p[key][0]), row[gkey], 1e-6)


def test_c9_chunk_table():
    for f32 in (True, False):
        nc = chunk_counts(4096, 512, 4200, 256, float32=f32)
        assert (nc[1:12] == 1).all() and (nc[12:241] == 2).all() and (nc[241:257] == 3).all()
        nc = chunk_counts(4096, 64, 8192, 128, float32=f32)
        assert list(np.flatnonzero(np.diff(nc[1:])) + 2) == [65, 98, 110, 118, 123, 127]
        assert nc[128] == 7
    pm = make_perf_model("new", BASE, in_tokens=256, out_tokens=1024, max_batch=64, max_queue=0, compat=True)
    check(pm.service.w_tot[1], 304.3776, 1e-6)
    check(pm.service.delta[1], 0.2969538, 1e-6)
    check(1000 / pm.service.w_tot[1], 3.285393, 1e-6)


# ---------------------------------------------------------------- C1 chain
def test_c1_chain():
    st = solve_chain(np.log([0.5, 0.8]), [0.4], 2, 1)
    p = np.append(st.p_head[0], [st.p_block[0] - st.blocking[0], st.blocking[0]])
    np.testing.assert_allclose(p, [5 / 12, 1 / 3, 1 / 6, 1 / 12], rtol=1e-12)
    for got, exp in (
        (st.num_in_system, 0.9166667), (st.num_in_service, 0.8333333), (st.throughput, 0.3666667),
        (st.resp_time, 2.5), (st.service_time, 2.272727), (st.wait_time, 0.2272727), (1 - st.p0, 0.5833333),
    ):
        check(float(got[0]), exp, 1e-6)


# ---------------------------------------------------------------- G2, G3 (v0.8 Size at N = 48, 49)
def test_g2_size_n48():
    pm = make_perf_model("new", G2P, in_tokens=128, out_tokens=512, max_batch=48, max_queue=128, compat=True)
    s = pm.size(ttft=60, itl=20)
    g = load("solution-optimize.json")
    assert s.binding == "ttft"
    check(s.throughput, g["throughput"])
    check(s.target_rates["ttft"], 2.949464)
    check(s.target_rates["itl"], 2.971982)
    check(pm.max_rate, g["maxRPS"])
    check_metrics(s.metrics, dict(resp_time=g["avgRespTime"], wait_time=g["avgWaitTime"],
                                  num_in_service=g["avgNumInServ"], ttft=g["avgTTFT"], itl=g["avgITL"]))


def test_g3_size_n49():
    pm = make_perf_model("new", G2P, in_tokens=128, out_tokens=512, max_batch=49, max_queue=128, compat=True)
    s = pm.size(ttft=60, itl=20)
    assert s.binding == "itl"
    check(s.throughput, 2.9715836)
    check(pm.max_rate, 3.9003835)
    check_metrics(s.metrics, dict(resp_time=10277.985, wait_time=12.017578, num_in_service=30.50618,
                                  ttft=57.9873, itl=19.999996))


# ---------------------------------------------------------------- G4 /target sweep (all 256 rows)
def test_g4_baseline_sweep():
    rows = load("baseline_lambda_sweep.json")["rows"]
    assert len(rows) == 256
    worst = 0.0
    for r in rows:
        pm = make_perf_model("new", BASE, in_tokens=256, out_tokens=1024, max_batch=r["m"], max_queue=128,
                             compat=True)
        if r["infeasible"]:
            with pytest.raises(InfeasibleTarget):
                pm.size(ttft=60, itl=20)
            continue
        s = pm.size(ttft=60, itl=20)
        for got, key in ((s.throughput, "throughput"), (s.target_rates["ttft"], "RPSTargetTTFT"),
                         (s.target_rates["itl"], "RPSTargetITL")):
            worst = max(worst, rel(got, r[key]))
            assert rel(got, r[key]) <= REL, (r["m"], key, got, r[key])
    assert worst < 5e-5  # observed 1.3e-5


# ---------------------------------------------------------------- G6 curve
@pytest.mark.parametrize("frac,rps,rho,ttft,itl", [
    (0.05, 0.0359, 0.0014, 50.719, 9.776), (0.5, 0.3585, 0.0262, 67.544, 18.189),
    (0.8, 0.5737, 0.0978, 116.225, 42.529), (0.9, 0.6454, 0.1983, 184.562, 76.698),
    (0.95, 0.6812, 0.3496, 297.414, 128.147),
])
def test_g6_curve(frac, rps, rho, ttft, itl):
    pm = make_perf_model("new", dict(alpha=8, beta=0.016, gamma=0.0005), in_tokens=2048, out_tokens=1024,
                         max_batch=256, max_queue=128, compat=True)
    lo, hi = pm.rate_range
    check(lo, 0.00010459)
    check(hi, 0.7170629)
    m = pm.analyze(frac * hi)
    # printf-rounded values: compare at their printed precision
    assert abs(m.offered_rate - rps) <= 0.5e-4
    assert abs(m.rho - rho) <= 0.5e-4
    assert abs(m.ttft - ttft) <= 0.5e-3 + 1e-5 * ttft  # Go's float32 frac accumulates at 0.95
    assert abs(m.itl - itl) <= 0.5e-3


# ---------------------------------------------------------------- G7 (v0.3.0, "old3")
def test_g7_old3_solve_and_target():
    pm = make_perf_model("old3", G2P, in_tokens=128, out_tokens=512, max_batch=48, max_queue=128, compat=True)
    g = load("solution-solve.json")
    m = pm.analyze(3.0)
    check(pm.max_rate, g["maxRPS"])
    check(m.throughput, 3.0)
    check_metrics(m, dict(resp_time=g["avgRespTime"], wait_time=g["avgWaitTime"],
                          num_in_service=g["avgNumInServ"], ttft=g["avgTTFT"], itl=g["avgITL"]))
    g = load("solution-target.json")
    s = pm.size(ttft=60, itl=20)
    assert s.binding == "itl"
    check(s.throughput, g["throughput"])
    check(s.target_rates["ttft"], g["RPSTargetTTFT"])
    check(s.target_rates["itl"], g["RPSTargetITL"])
    check_metrics(s.metrics, dict(resp_time=g["avgRespTime"], wait_time=g["avgWaitTime"],
                                  num_in_service=g["avgNumInServ"], ttft=g["avgTTFT"], itl=g["avgITL"]))


def test_old3_compat_rejects_overload_but_old_allows_it():
    old3 = make_perf_model("old3", G2P, in_tokens=128, out_tokens=512, max_batch=48, max_queue=128, compat=True)
    with pytest.raises(QueueingError, match="exceeds max rate"):
        old3.analyze(10.0)
    old = make_perf_model("old", G2P, in_tokens=128, out_tokens=512, max_batch=48, max_queue=128, compat=True)
    assert old.analyze(10.0).blocking > 0.5
    # (m+1)/2 vs m/2 shifts results by ~1e-5 (B8)
    assert 0 < rel(old.analyze(3.0).itl, old3.analyze(3.0).itl) < 1e-3


# ---------------------------------------------------------------- C2 .. C8
def test_c2_new_nc1():
    pm = make_perf_model("new", BASE, in_tokens=256, out_tokens=1024, max_batch=64, max_queue=128, compat=True)
    lo, hi = pm.rate_range
    check(lo, 1.17587e-4)
    check(hi, 2.309813)
    check(np.exp(pm.service.log_mu[0]), 1.1758650e-4)
    check(np.exp(pm.service.log_mu[-1]), 2.3121248e-3)
    check_metrics(pm.analyze(1.5), dict(throughput=1.5, resp_time=15649.34, wait_time=0.0020526,
                                        num_in_service=23.47401, prefill_time=23.20699, itl=15.25990,
                                        ttft=38.46894, rho=0.3667814))
    s = pm.size(ttft=60, itl=20)
    check(s.target_rates["ttft"], 1.868013)
    check(s.target_rates["itl"], 1.923704)
    check(s.target_rates["tps"], 2.309813)
    check(s.throughput, 1.868013)
    check_metrics(s.metrics, dict(resp_time=19721.93, wait_time=13.61134, num_in_service=36.81539,
                                  prefill_time=27.16876, itl=19.21987, ttft=59.99997))


def c3_model(compat=True):
    return make_perf_model("new", BASE, in_tokens=4096, out_tokens=64, max_batch=128, max_queue=16, compat=compat)


def test_c3_chunked():
    pm = c3_model()
    mu = np.exp(pm.service.log_mu) * 1000
    assert int(np.argmax(mu)) + 1 == 97
    check(mu.max(), 4.296348)
    lo, hi = pm.rate_range
    check(lo, 0.00133935)
    check(hi, 4.248172)
    check_metrics(pm.analyze(2.0), dict(resp_time=1365.607, wait_time=0.0, num_in_service=2.731214,
                                        prefill_time=150.5681, itl=18.98499, ttft=169.5530))
    s = pm.size(ttft=5000, itl=400)
    check(s.rate, 4.248172)
    check(s.throughput, 4.222014)
    check_metrics(s.metrics, dict(num_in_service=77.01354, itl=274.4396, ttft=1150.599))


def locate_jump(pm, lo, hi):
    """Bisect the rate where round(B_bar) crosses 64.5 (C3's first chunk step)."""
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if pm.analyze(mid).num_in_service < 64.5:
            lo = mid
        else:
            hi = mid
    return lo, hi


def test_c3_discontinuity_compat_and_fixed_default():
    lo, hi = locate_jump(c3_model(), 4.19, 4.21)
    check(lo, 4.201257)
    below, above = c3_model().analyze(lo), c3_model().analyze(hi)
    check(below.ttft, 695.53, 2e-5 * 10)
    check(above.ttft, 916.72, 2e-5 * 10)
    check(below.itl, 234.83)
    check(above.itl, 231.32)
    # default (B4 fix): prefill averaged over the in-service distribution is continuous
    d_lo, d_hi = c3_model(False).analyze(lo), c3_model(False).analyze(hi)
    assert rel(d_hi.ttft, d_lo.ttft) < 1e-6
    assert rel(d_hi.itl, d_lo.itl) < 1e-6


def test_c4_decode_only():
    pm = make_perf_model("new", dict(alpha=10, beta=0.02, gamma=0.0002), in_tokens=0, out_tokens=200,
                         max_batch=32, max_queue=0, compat=True)
    lo, hi = pm.rate_range
    check(lo, 4.955352e-4)
    check(hi, 14.10370)
    check_metrics(pm.analyze(5), dict(throughput=4.999999, resp_time=2102.323, wait_time=0.0,
                                      num_in_service=10.51161, prefill_time=10.37952, itl=10.45972,
                                      ttft=20.83924))


def test_c5_head_model_and_overload():
    pm = make_perf_model("new", G2P, in_tokens=128, out_tokens=512, max_batch=48, max_queue=128, compat=True)
    check_metrics(pm.analyze(3.0), dict(resp_time=10348.37, wait_time=21.40539, num_in_service=30.98089,
                                        prefill_time=26.09048, itl=20.11889, ttft=67.61476, max_rate=3.860929))
    m = pm.analyze(10.0)
    check_metrics(m, dict(throughput=3.864794, wait_time=32956.49, num_in_service=48.0, rho=1.0,
                          ttft=33011.11, resp_time=45376.30))
    assert m.throughput > m.max_rate


def test_c6_b3_compat():
    pm = make_perf_model("new", BASE, in_tokens=256, out_tokens=1024, max_batch=1, max_queue=128, compat=True)
    lo, hi = pm.rate_range
    check(pm.analyze(lo).itl, 8.289200)
    check(pm.analyze(hi).itl, 8.288913)
    with pytest.raises(InfeasibleTarget, match="below region"):
        pm.size(itl=20)
    s = pm.size(itl=8.0)  # unachievable, yet Go returns lambda_max
    assert s.target_rates["itl"] == pytest.approx(hi, rel=1e-12)
    s = pm.size(ttft=60)
    check(s.rate, 4.884377e-4)
    check(s.metrics.ttft, 60.00006)


def test_c7_v02():
    pm = make_perf_model("v02", dict(alpha=17.15, beta=0.34, gamma=170, delta=0.017), in_tokens=96,
                         out_tokens=1024, max_batch=38 * 512 // 1024, max_queue=190, compat=True)
    check(pm.max_rate, 0.7793779)
    m = pm.analyze(0.5)
    check_metrics(m, dict(resp_time=21987.23, wait_time=112.1715, num_in_service=10.93753,
                          prefill_time=189.4308, itl=21.19808, ttft=301.6023))
    check(pm.service.effective_concurrency(pm.chain.solve(np.array([0.5e-3])))[0], 11.90611)
    s = pm.size(ttft=1000, itl=40)
    check(s.target_rates["ttft"], 0.5946356)
    check(s.target_rates["itl"], 0.7793779)
    check(s.throughput, 0.5946356)
    assert s.binding == "ttft"
    check_metrics(s.metrics, dict(itl=22.03582, ttft=1000.001))
    assert int(np.ceil(1.0 / s.throughput)) == 2
    with pytest.raises(QueueingError, match="exceeds max rate"):
        pm.analyze(0.8)


def test_c8_new_loss_system():
    pm = make_perf_model("new", dict(alpha=17.15, beta=0.034, gamma=0.0010625), in_tokens=96, out_tokens=1024,
                         max_batch=76 * 512 // 1024, max_queue=0, compat=True)
    s = pm.size(ttft=1000, itl=40)
    check(s.rate, 0.8591119)
    check(s.throughput, 0.7877494)
    assert s.binding == "none"
    check_metrics(s.metrics, dict(itl=38.85435, ttft=80.12078))
    assert int(np.ceil(1.0 / s.throughput)) == 2
    check(s.throughput * 60, 47.26496)
    check_metrics(pm.analyze(0.5), dict(throughput=0.4999916, num_in_service=14.06266, itl=27.43785,
                                        ttft=56.87763, rho=0.3700701))
    s = pm.size(ttft=1000, itl=40, tps=4000)
    assert s.binding == "tps"
    check(s.target_rates["tps"], 0.7732007)
    check(s.throughput, 0.7459832)
