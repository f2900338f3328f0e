"""Default (fixed) semantics vs compat, documented bug fixes (spec §5), validation, performance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inferno_mip.queueing import (
    PERF_MODELS,
    InfeasibleTarget,
    Metrics,
    QueueingError,
    Sizing,
    make_perf_model,
)

BASE = dict(alpha=8.0, beta=0.033, gamma=0.000333)
G2P = dict(alpha=12.0, beta=0.05, gamma=0.0005)
V02P = dict(alpha=17.15, beta=0.34, gamma=170.0, delta=0.017)


def pair(kind, params, **kw):
    return (make_perf_model(kind, params, compat=True, **kw), make_perf_model(kind, params, compat=False, **kw))


CASES = [
    ("new", G2P, dict(in_tokens=128, out_tokens=512, max_batch=48, max_queue=128), dict(ttft=60, itl=20)),
    ("new", BASE, dict(in_tokens=256, out_tokens=1024, max_batch=64, max_queue=128), dict(ttft=60, itl=20)),
    ("old3", G2P, dict(in_tokens=128, out_tokens=512, max_batch=48, max_queue=128), dict(ttft=60, itl=20)),
    ("old", G2P, dict(in_tokens=128, out_tokens=512, max_batch=48, max_queue=128), dict(ttft=60, itl=20)),
    ("v02", V02P, dict(in_tokens=96, out_tokens=1024, max_batch=19, max_queue=190), dict(ttft=1000, itl=40)),
    ("new", BASE, dict(in_tokens=4096, out_tokens=64, max_batch=128, max_queue=16), dict(ttft=5000, itl=400)),
]


@pytest.mark.parametrize("kind,params,kw,targets", CASES)
def test_default_agrees_with_compat_without_fixes(kind, params, kw, targets):
    compat, default = pair(kind, params, **kw)
    assert compat.rate_range == default.rate_range
    rates = np.linspace(0.05, 0.95, 7) * compat.max_rate
    a, b = compat.analyze(rates), default.analyze(rates)
    chunked = kind == "new" and kw["in_tokens"] == 4096  # B4 fix changes prefill there
    for f in ("throughput", "resp_time", "wait_time", "num_in_service", "blocking"):
        np.testing.assert_allclose(getattr(b, f), getattr(a, f), rtol=1e-12, atol=1e-12)
    if not chunked:
        for f in ("prefill_time", "itl", "ttft"):
            np.testing.assert_allclose(getattr(b, f), getattr(a, f), rtol=1e-10)
    sc, sd = compat.size(**targets), default.size(**targets)
    assert sd.binding == sc.binding
    assert sd.rate == pytest.approx(sc.rate, rel=1e-4)  # Go's bisection stops within its 1e-6 y-tolerance
    for name, t in targets.items():
        assert getattr(sd.metrics, name) <= t  # never slightly above (Go may be)


def test_b1_wait_is_exact_float64():
    _, pm = pair("new", BASE, in_tokens=256, out_tokens=1024, max_batch=64, max_queue=128)
    m = pm.analyze(1.5)
    assert m.wait_time == pytest.approx(0.0020526, rel=1e-4)  # float32 Go is noise here (spec C2)
    # W = sum_{k>N}(k-N) p_k / X, never R - S: positive and tiny at very low load, not 0 or noise
    low = pm.analyze(0.5)
    assert 0 < low.wait_time < 1e-12
    assert low.wait_time < low.resp_time * 1e-12


def test_b2_single_state_loss_system():
    params = dict(alpha=8.0, beta=0.033, gamma=0.000333)
    compat, default = pair("new", params, in_tokens=256, out_tokens=1024, max_batch=1, max_queue=0)
    with pytest.raises(QueueingError, match="B2"):
        compat.analyze(0.05)
    with pytest.raises(InfeasibleTarget):
        compat.size(ttft=60)
    m = default.analyze(0.05)
    mu = 1000 * math.exp(default.service.log_mu[0])
    assert m.blocking == pytest.approx(0.05 / (0.05 + mu), rel=1e-12)  # Erlang loss, K = 1
    assert m.throughput == pytest.approx(0.05 * mu / (0.05 + mu), rel=1e-12)
    assert m.wait_time == 0.0
    s = default.size(ttft=60)
    assert s.metrics.ttft <= 60


def test_b3_no_direction_guessing():
    compat, default = pair("new", BASE, in_tokens=256, out_tokens=1024, max_batch=1, max_queue=128)
    lo, hi = default.rate_range
    s = default.size(itl=20)  # achievable everywhere: Go says "below region"
    assert s.rate == pytest.approx(hi, rel=1e-12) and s.binding == "none"
    with pytest.raises(InfeasibleTarget, match=r"ITL target 8.0 ms .* best achievable 8.28"):
        default.size(itl=8.0)  # unachievable: Go returns lambda_max
    # G4 row M = 1: infeasible in Go, feasible with TTFT binding once fixed
    s = default.size(ttft=60, itl=20)
    assert s.binding == "ttft"
    assert s.rate == pytest.approx(4.884377e-4, rel=1e-4)
    assert s.metrics.ttft <= 60


def test_b3_infeasible_below_region_default():
    _, pm = pair("new", G2P, in_tokens=128, out_tokens=512, max_batch=48, max_queue=128)
    with pytest.raises(InfeasibleTarget, match="TTFT target 10.0 ms"):
        pm.size(ttft=10.0)


@pytest.mark.parametrize("kind,params", [("new", dict(alpha=0.0, beta=0.0, gamma=0.0)),
                                         ("v02", dict(alpha=0.0, beta=0.0, gamma=0.0, delta=0.0))])
def test_b5_all_zero_params_raise_promptly(kind, params):
    with pytest.raises(QueueingError, match="all zero"):  # up front, not after a search that never ends
        make_perf_model(kind, params, in_tokens=10, out_tokens=10, max_batch=4, max_queue=40)


def test_b5_infinite_service_rate_raises():
    # decode-only v02 with zero decode cost: tau(B) = 0, mu infinite (Go loops forever)
    with pytest.raises(QueueingError, match="not finite"):
        make_perf_model("v02", dict(alpha=0.0, beta=0.0, gamma=5.0, delta=0.1), in_tokens=0, out_tokens=8,
                        max_batch=4, max_queue=40)


def test_b7_tps_not_capped_in_default():
    compat, default = pair("new", dict(alpha=17.15, beta=0.034, gamma=0.0010625), in_tokens=96,
                           out_tokens=1024, max_batch=38, max_queue=0)
    sc = compat.size(ttft=1000, itl=40, tps=4000)
    sd = default.size(ttft=1000, itl=40, tps=4000)
    assert sc.binding == "tps" and sc.rate == pytest.approx(0.9 * compat.max_rate, rel=1e-12)
    assert sd.binding == "none" and sd.rate == pytest.approx(default.max_rate, rel=1e-12)
    assert sd.target_rates["tps"] == pytest.approx(default.max_rate, rel=1e-12)


def test_b10_v02_decode_only_effective_concurrency():
    kw = dict(in_tokens=0, out_tokens=64, max_batch=8, max_queue=80)
    compat, default = pair("v02", V02P, **kw)
    m = default.analyze(0.5 * default.max_rate)
    assert m.prefill_time == 0.0
    # tau(B) = (m-1)(alpha + beta B) is inverted exactly, so ITL = Dec(n_e) = S/(m-1)
    st = default.chain.solve(np.array([0.5 * default.max_rate / 1000]))
    assert m.itl == pytest.approx(st.service_time[0] / 63, rel=1e-12)
    # Go subtracts gamma_p although prefill is 0: n_e and ITL are lower
    assert compat.analyze(0.5 * compat.max_rate).itl < m.itl


def test_v02_single_token_decode_only_is_finite():
    _, pm = pair("v02", V02P, in_tokens=0, out_tokens=1, max_batch=4, max_queue=40)
    m = pm.analyze(0.5 * pm.max_rate)
    assert all(np.isfinite(getattr(m, f)) for f in ("itl", "ttft", "prefill_time", "resp_time"))


def test_analyze_vectorised_matches_scalar():
    _, pm = pair("new", BASE, in_tokens=256, out_tokens=1024, max_batch=64, max_queue=640)
    rates = np.geomspace(pm.rate_range[0], 3 * pm.max_rate, 50)  # > 32 rates: numpy tail path
    arr = pm.analyze(rates)
    assert isinstance(arr, Metrics) and arr.ttft.shape == (50,)
    for i in (0, 17, 49):
        one = pm.analyze(float(rates[i]))
        assert isinstance(one.ttft, float)
        for f in ("throughput", "ttft", "itl", "wait_time", "blocking", "num_in_service"):
            assert getattr(one, f) == pytest.approx(getattr(arr, f)[i], rel=1e-11, abs=1e-300)


def test_sizing_shape_and_no_targets():
    _, pm = pair("old", G2P, in_tokens=128, out_tokens=512, max_batch=48, max_queue=128)
    s = pm.size()
    assert isinstance(s, Sizing) and s.binding == "none"
    assert s.rate == pytest.approx(pm.max_rate) and set(s.target_rates) == {"ttft", "itl", "tps"}
    s.target_rates["ttft"] = -1.0  # cached results are not shared mutable state
    assert pm.size().target_rates["ttft"] > 0
    assert s.throughput == s.metrics.throughput


# ------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("kw,match", [
    (dict(max_batch=0), "max_batch"),
    (dict(max_batch=2.5), "max_batch"),
    (dict(max_queue=-1), "max_queue"),
    (dict(out_tokens=0.5), "out_tokens"),
    (dict(in_tokens=-1), "in_tokens"),
    (dict(in_tokens=float("nan")), "in_tokens"),
    (dict(max_num_tokens=-5), "max_num_tokens"),
    (dict(params=dict(alpha=-1, beta=0.03, gamma=0.0003)), "alpha"),
    (dict(params=dict(alpha=float("inf"), beta=0.03, gamma=0.0003)), "alpha"),
    (dict(params=dict(alpha=8, beta=float("nan"), gamma=0.0003)), "beta"),
    (dict(params=dict(alpha=8, beta=0.03)), "missing"),
    (dict(kind="v05"), "unknown"),
])
def test_invalid_inputs(kw, match):
    args = dict(kind="new", params=BASE, in_tokens=100, out_tokens=100, max_batch=8, max_queue=80)
    args.update(kw)
    kind, params = args.pop("kind"), args.pop("params")
    with pytest.raises(QueueingError, match=match):
        make_perf_model(kind, params, **args)


def test_invalid_rates_and_targets():
    for kind in PERF_MODELS:
        pm = make_perf_model(kind, dict(BASE, delta=0.01), in_tokens=100, out_tokens=100, max_batch=8,
                             max_queue=80)
        for bad in (0.0, -1.0, float("nan"), float("inf"), np.array([1.0, -2.0])):
            with pytest.raises(QueueingError):
                pm.analyze(bad)
        for bad in (dict(ttft=-1), dict(itl=float("nan")), dict(tps=-0.1)):
            with pytest.raises(QueueingError):
                pm.size(**bad)
