"""Optimal concurrency (spec §2.5; goldens G2, G3, G9), the exact all-M curve, the v0.1 model (G8).

Tolerances (spec §4): rates and ITL 1e-4 relative; W 1e-3 relative or 0.01 ms absolute.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inferno_mip.queueing import InfeasibleTarget, make_perf_model
from inferno_mip.queueing.concurrency import closed_form_brackets, optimal_concurrency, throughput_curve
from inferno_mip.queueing.sizing import size_models

DATA = Path(__file__).parent / "data" / "queueing"
REL = 1e-4
G2P = dict(alpha=12.0, beta=0.05, gamma=0.0005)
BASE = dict(alpha=8.0, beta=0.033, gamma=0.000333)


def g2_model(m_max, compat=True):
    return make_perf_model("new", G2P, in_tokens=128, out_tokens=512, max_batch=m_max, max_queue=128, compat=compat)


def test_g2_onset_m_max_48():
    g = json.loads((DATA / "solution-optimize.json").read_text())
    r = optimal_concurrency(g2_model(48), ttft=60, itl=20)
    assert (r.concurrency, r.m_itl, r.m_tpf, r.calls, r.feasible) == (g["concurrency"], g["M_ITL"], g["M_TPF"],
                                                                        g["oracleCalls"], g["feasible"])
    assert r.throughput == pytest.approx(g["throughput"], rel=REL)
    assert r.sizing.metrics.ttft == pytest.approx(g["avgTTFT"], rel=REL)


def test_g3_onset_m_max_256_probe_sequence():
    r = optimal_concurrency(g2_model(256), ttft=60, itl=20)
    assert r.probes == (256, 143, 87, 59, 45, 52, 49, 49)
    assert (r.concurrency, r.m_itl, r.m_tpf, r.calls) == (49, 31, 164, 8)
    assert r.throughput == pytest.approx(2.9715836, rel=REL)
    m = r.sizing.metrics
    assert m.resp_time == pytest.approx(10277.985, rel=REL)
    assert abs(m.wait_time - 12.017578) <= max(1e-3 * 12.017578, 0.01)
    assert m.num_in_service == pytest.approx(30.50618, rel=REL)
    assert m.ttft == pytest.approx(57.9873, rel=REL) and m.itl == pytest.approx(19.999996, rel=REL)
    assert m.max_rate == pytest.approx(3.9003835, rel=REL)


def baseline(m_max=256, compat=True):
    return make_perf_model("new", BASE, in_tokens=256, out_tokens=1024, max_batch=m_max, max_queue=128, compat=compat)


def test_g9_onset_baseline():
    r = optimal_concurrency(baseline(), ttft=60, itl=20)
    assert (r.m_itl, r.m_tpf) == (40, 147)
    assert r.probes == (256, 148, 94, 67, 53, 60, 64, 67)
    assert (r.concurrency, r.calls) == (67, 8)
    assert r.throughput == pytest.approx(1.9037623, rel=REL)


def test_compat_curve_is_g4_sweep():
    """Vectorised compat curve over all M = the per-M Go Size of the /target sweep (G4, 256 rows)."""
    rows = json.loads((DATA / "baseline_lambda_sweep.json").read_text())["rows"]
    curve = throughput_curve(baseline(), ttft=60, itl=20)
    for r in rows:
        f = curve.throughput[r["m"] - 1]
        if r["infeasible"]:
            assert f == 0.0 and isinstance(curve.sizing(r["m"]), InfeasibleTarget)
        else:
            assert f == pytest.approx(r["throughput"], rel=REL), r["m"]


@pytest.mark.parametrize("compat", [False, True])
def test_curve_matches_per_model_size(compat):
    curve = throughput_curve(g2_model(96, compat), ttft=60, itl=20, queue_ratio=10)
    models = [make_perf_model("new", G2P, in_tokens=128, out_tokens=512, max_batch=m, max_queue=10 * m,
                              compat=compat) for m in (1, 2, 7, 31, 48, 49, 50, 96)]
    for pm, s in zip(models, size_models(models, [(60, 20, 0)] * len(models))):
        got = curve.sizing(pm.max_batch)
        if isinstance(s, Exception):
            assert isinstance(got, Exception)
        else:
            assert got.rate == pytest.approx(s.rate, rel=1e-12) and got.binding == s.binding


def test_exact_default_optimum():
    r = optimal_concurrency(g2_model(256, compat=False), ttft=60, itl=20)
    assert r.method == "exact" and r.probes == ()
    f = r.curve.throughput
    # argmax is the exact peak; M* the smallest M within eps/2 of it (Go's 6-probe search stops at 49)
    assert r.peak_batch == 49 and r.peak_throughput == pytest.approx(2.9715836, rel=REL)
    assert r.concurrency == 48 and f[47] >= 0.99 * f.max() > f[46]
    assert r.sizing.metrics.ttft <= 60 and r.sizing.metrics.itl <= 20
    # B3 fixed: M = 1 is feasible in default mode (Go: "below region")
    assert f[0] > 0
    assert np.all(f <= r.curve.rate * (1 + 1e-12))


def test_brackets_and_validation():
    assert closed_form_brackets(g2_model(256), 60, 20, 256) == (31, 164)
    assert closed_form_brackets(g2_model(256), 0, 0, 256) == (1, 1)  # a zero target fails every B
    with pytest.raises(ValueError):
        optimal_concurrency(g2_model(48), ttft=60, itl=20, m_max=49)
    infeasible = optimal_concurrency(g2_model(48), ttft=1.0, itl=1.0)
    assert not infeasible.feasible and infeasible.concurrency == 1 and infeasible.calls == 0


# ---------------------------------------------------------------- G8: v0.1.0 REST decode-only model
@pytest.mark.parametrize("compat", [True, False])
def test_g8_v01_rest_model(compat):
    """mu(n) = n/(1024 (19 + n)); /solve at 30 RPM and /target (wait 1 s, ITL 50 ms); wait target = TTFT."""
    pm = make_perf_model("v01", dict(alpha=19.0, beta=1.0), in_tokens=0, out_tokens=1024, max_batch=48,
                         max_queue=200, compat=compat)
    assert pm.max_rate * 60 == pytest.approx(41.93564, rel=REL)
    m = pm.analyze(0.5)
    assert m.throughput * 60 == pytest.approx(29.999998, rel=REL)
    assert m.resp_time / 1000 == pytest.approx(41.96881, rel=REL)
    assert abs(m.wait_time - 2.7617) <= 0.01  # Go's float32 W; exact 2.7588 ms
    assert m.num_in_service == pytest.approx(20.983025, rel=REL)
    assert m.itl == pytest.approx(40.98247, rel=REL)
    s = pm.size(ttft=1000.0, itl=50.0)
    assert s.binding == "itl"
    assert s.throughput * 60 == pytest.approx(35.200314, rel=REL)
    assert s.target_rates["ttft"] * 60 == pytest.approx(36.61307, rel=REL)
    assert s.target_rates["itl"] * 60 == pytest.approx(35.200314, rel=REL)
    assert s.metrics.itl == pytest.approx(49.999996, rel=REL) and s.metrics.itl <= 50.0 + 5e-5
    assert abs(s.metrics.wait_time - 332.88673) <= 1e-3 * 332.88673
    assert s.metrics.resp_time / 1000 == pytest.approx(51.532883, rel=REL)
    assert s.metrics.num_in_service == pytest.approx(30.037598, rel=REL)
