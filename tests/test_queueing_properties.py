"""Property tests (hypothesis) of the default-mode perf models."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from inferno_mip.queueing import PERF_MODELS, InfeasibleTarget, QueueingError, make_perf_model

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def perf_models(draw, kinds=PERF_MODELS, chunked=True):
    kind = draw(st.sampled_from(kinds))
    if kind == "v02":
        params = dict(alpha=draw(st.floats(0.5, 50)), beta=draw(st.floats(1e-3, 1.0)),
                      gamma=draw(st.floats(0.0, 300)), delta=draw(st.floats(1e-4, 0.1)))
        n = float(draw(st.integers(0, 4096)))
        m = float(draw(st.integers(1, 2048)))
    else:
        params = dict(alpha=draw(st.floats(0.5, 50)), beta=draw(st.floats(1e-3, 0.2)),
                      gamma=draw(st.floats(0.0, 2e-3)))
        n = draw(st.floats(0, 8192))
        m = draw(st.floats(1, 2048))
    big_n = draw(st.integers(1, 256))
    q = draw(st.integers(0, 10 * big_n))
    mt = draw(st.sampled_from([8192.0, 2048.0])) if chunked else 1e12
    return make_perf_model(kind, params, in_tokens=n, out_tokens=m, max_batch=big_n, max_queue=q,
                           max_num_tokens=mt)


def _non_decreasing(v, rtol=1e-9):
    d = np.diff(v)
    return bool(np.all(d >= -rtol * np.maximum(np.abs(v[1:]), 1e-9)))


@SETTINGS
@given(perf_models(chunked=False))
def test_latencies_non_decreasing_in_rate_at_constant_chunks(pm):
    if pm.kind == "new":
        assert (pm.service.nc == 1).all()
    rates = np.geomspace(pm.rate_range[0], 1.5 * pm.max_rate, 200)
    m = pm.analyze(rates)
    fields = ["ttft", "wait_time", "resp_time", "num_in_service", "throughput"]
    # ITL is the residual (S - Pf(B_bar))/m: with N = 1, S is constant while Pf grows, so ITL
    # decreases slightly with load (spec B3/B9); for N >= 2, dS/dlam > dPf/dlam.
    # With a single output token there is no decode interval: ITL is then a residual of rounding, not a latency.
    if pm.max_batch >= 2 and pm.out_tokens >= 2:
        fields.append("itl")
    for f in fields:
        assert _non_decreasing(getattr(m, f)), f


@SETTINGS
@given(perf_models(), st.floats(1e-6, 5.0))
def test_analyze_finite_and_consistent(pm, frac):
    rates = np.array([frac * pm.max_rate, pm.rate_range[0], pm.max_rate])
    m = pm.analyze(rates)
    for f in ("throughput", "resp_time", "wait_time", "prefill_time", "itl", "ttft", "num_in_service", "rho",
              "blocking"):
        v = getattr(m, f)
        assert np.all(np.isfinite(v)), (f, v)
    assert np.all(m.throughput <= m.offered_rate * (1 + 1e-12))
    assert np.all(m.wait_time >= 0) and np.all((m.rho >= 0) & (m.rho <= 1))
    assert np.all((m.blocking >= 0) & (m.blocking <= 1))
    assert np.all(m.num_in_service <= pm.max_batch * (1 + 1e-12))
    if pm.max_queue == 0 and pm.kind != "iteration":
        assert np.all(m.wait_time == 0)
    if pm.kind == "iteration":  # its wait includes the iteration-boundary wait, even without a queue
        assert np.all(m.wait_time <= m.ttft)


@SETTINGS
@given(perf_models(), st.floats(0.0, 1.2), st.floats(0.0, 1.2), st.booleans(), st.booleans())
def test_size_meets_every_set_target(pm, f_ttft, f_itl, use_ttft, use_itl):
    lo, hi = pm.rate_range
    m = pm.analyze(np.array([lo, hi]))
    # targets between the metric at lambda_min and somewhat above its value at lambda_max
    ttft = float(m.ttft[0] + f_ttft * (m.ttft[1] - m.ttft[0]) * 1.1) if use_ttft else 0.0
    itl = float(m.itl[0] + f_itl * abs(m.itl[1] - m.itl[0]) * 1.1) if use_itl else 0.0
    assume(ttft >= 0 and itl >= 0)
    try:
        s = pm.size(ttft=ttft, itl=itl)
    except InfeasibleTarget:
        at_min = pm.analyze(lo)  # (a target equal to the value at lambda_min may go either way by an ulp)
        tol = 1 - 1e-12
        assert (ttft > 0 and at_min.ttft > ttft * tol) or (itl > 0 and at_min.itl > itl * tol)
        return
    assert lo <= s.rate <= hi
    if ttft > 0:
        assert s.metrics.ttft <= ttft
    if itl > 0:
        assert s.metrics.itl <= itl
    assert s.throughput == s.metrics.throughput <= s.rate * (1 + 1e-12)
    assert s.rate == min(s.target_rates.values())


@SETTINGS
@given(st.sampled_from(PERF_MODELS), st.integers(-3, 0), st.integers(-3, -1), st.floats(-5, 0.999))
def test_invalid_inputs_raise_queueing_error(kind, bad_n, bad_q, bad_m):
    params = dict(alpha=8.0, beta=0.03, gamma=0.0003, delta=0.01)
    for kw in (dict(max_batch=bad_n, max_queue=4, out_tokens=8.0), dict(max_batch=4, max_queue=bad_q, out_tokens=8.0),
               dict(max_batch=4, max_queue=4, out_tokens=bad_m)):
        try:
            make_perf_model(kind, params, in_tokens=10.0, **kw)
        except QueueingError:
            continue
        raise AssertionError(f"no QueueingError for {kw}")


def test_size_finds_a_rate_where_the_metric_is_nearly_flat():
    # TTFT rises by 1e-5 over this model's whole low-rate range, so a target just above its value at lambda_min
    # is met over a wide span of rates; stepping a few ulps below a root that misses by float noise never got there.
    pm = make_perf_model("v02", dict(alpha=1.0, beta=1.0, gamma=18.0, delta=0.03125), in_tokens=1.0, out_tokens=451.0,
                         max_batch=103, max_queue=10, max_num_tokens=8192.0)
    lo, _ = pm.rate_range
    target = 18.031439997221085
    assert pm.analyze(lo).ttft < target
    s = pm.size(ttft=target)
    assert s.metrics.ttft <= target and s.rate >= lo and s.binding == "ttft"
