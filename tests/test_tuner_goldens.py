"""Spec §8 goldens: core (h, NIS and positivity gates), estimator (guess, fits, kappa, sliding window), service
(SWNM after init, poor-fit fallback, excursion, cold start, calibrate). Reference mode = inferno's semantics."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from inferno_mip.queueing import make_perf_model
from inferno_mip.tuner import (InitEstimator, Observation, PerfTuner, SlidingWindowEstimator, TunerOptions,
                               condition_number, fit_least_squares, fit_nelder_mead, guess_init_state, predict)
from inferno_mip.tuner.config import parse_config
from inferno_mip.tuner.estimators import objective
from inferno_mip.tuner.service import ServiceError, ServiceSettings, TunerService, excursion

MAX_FLOAT = sys.float_info.max
SEED = (5.0, 0.05, 5e-5)
BOTH = [TunerOptions.reference(), TunerOptions()]
MODES = pytest.mark.parametrize("compat", [True, False], ids=["reference", "improved"])
# Nelder-Mead fits take seconds each: the lsq variants run by default, the nm ones with the slow tests.
METHODS = pytest.mark.parametrize("method", [pytest.param("nm", marks=pytest.mark.slow), "lsq"])


def obs(rpm, i, o, n=64, ttft=0.0, itl=0.0, q=0):
    return Observation(rpm=rpm, in_tokens=i, out_tokens=o, max_batch=n, max_queue=q, ttft=ttft, itl=itl)


def true_obs(x, rpm, i, o, n=64, q=0):
    z = predict(x, obs(rpm, i, o, n, q=q))
    return obs(rpm, i, o, n, z[0], z[1], q)


def cfg(init, pc, bounded, lo=None, hi=None, eo=(200, 40), e=0.05):
    md = {"initState": list(init), "percentChange": [pc] * 3, "boundedState": bounded,
          "expectedObservations": list(eo)}
    if bounded:
        md.update(minState=list(lo), maxState=list(hi))
    return parse_config({"filterData": {"gammaFactor": 1, "errorLevel": e, "tPercentile": 1.96}, "modelData": md})


# -- core ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("q, ttft, itl", [(128, 190470, 92.957), (0, 217.74, 92.623)])
def test_h_equals_analyzer(q, ttft, itl):
    x = (8, 0.016, 5e-4)
    o = obs(200, 2048, 1024, 64, q=q)
    m = make_perf_model("new", dict(alpha=8, beta=0.016, gamma=5e-4), in_tokens=2048, out_tokens=1024,
                        max_batch=64, max_queue=q).analyze(200 / 60)
    np.testing.assert_allclose(predict(x, o), [m.ttft, m.itl], rtol=1e-12)
    np.testing.assert_allclose(predict(x, o), [ttft, itl], rtol=1e-4)


NIS_CFG = dict(init=SEED, pc=0.15, bounded=True, lo=(0.5, 0.005, 5e-6), hi=(50, 0.5, 5e-4))
NIS_OBS = obs(30, 512, 128, 128, 5000, 5000)


@pytest.mark.parametrize("options", BOTH, ids=["reference", "improved"])
def test_nis_gate_rejects_and_rolls_back_bit_identically(options):
    t = PerfTuner(cfg(**NIS_CFG), options=options)
    x0, P0 = t.ekf.state.copy(), t.P.copy()
    r = t.step(NIS_OBS)
    assert not r.accepted and "NIS" in r.reason and r.nis > 7.378
    np.testing.assert_allclose(r.predicted, [35.62, 5.18], rtol=1e-3)
    np.testing.assert_array_equal(t.ekf.state, x0)
    np.testing.assert_array_equal(t.P, P0)
    assert PerfTuner(cfg(**NIS_CFG), options=options).step(NIS_OBS, skip_nis=True).accepted


def test_nis_gate_reference_numbers():
    r = PerfTuner(cfg(**NIS_CFG), options=TunerOptions.reference()).step(NIS_OBS)
    assert r.nis == pytest.approx(1.13e7, rel=2e-3)
    r = PerfTuner(cfg(**NIS_CFG), options=TunerOptions.reference()).step(NIS_OBS, skip_nis=True)
    np.testing.assert_allclose(r.x, [50, 0.0980, 2.52e-4], rtol=2e-3)
    assert r.x[0] == 50.0  # clamped at max


def test_positivity_gate_rolls_back_in_reference_mode_and_log_space_cannot_fail():
    c = cfg((1e-3, 1e-4, 1e-6), 50, False, eo=(1e-3, 1e-3))
    o = obs(30, 512, 128, 128, 1e-3, 1e-3)
    t = PerfTuner(c, options=TunerOptions.reference())
    snap = t.ekf.snapshot()
    r = t.step(o, skip_nis=True)
    assert not r.accepted and r.reason.startswith("positivity")
    np.testing.assert_array_equal(r.x, [1e-3, 1e-4, 1e-6])
    np.testing.assert_array_equal(t.ekf.state, snap[0])
    np.testing.assert_array_equal(t.P, snap[1])
    r = PerfTuner(c, options=TunerOptions()).step(o, skip_nis=True)
    assert r.accepted and all(v > 0 for v in r.x)


# -- estimator -----------------------------------------------------------------------------------------------
Q = obs(265, 1123, 487, 128, 80.48, 15.911)


def test_guess_init_state_goldens():
    np.testing.assert_allclose(guess_init_state(Q, SEED), [15.78509, 0.0575590, 5e-5], rtol=1e-6)
    assert guess_init_state(Q, SEED)[2] == 5e-5
    g = guess_init_state(Q)
    np.testing.assert_allclose(g, [14.3199, 0.057792, 1.1217e-3], rtol=1e-4)
    assert g[2] > 10 * SEED[2]
    np.testing.assert_array_equal(guess_init_state(obs(265, 1000, 400, 128, 5, 20), SEED), SEED)
    np.testing.assert_array_equal(guess_init_state(Q, SEED[:2]), g)  # length-2 seed: legacy path
    assert guess_init_state(obs(265, 1000, 400, 128, 0, 20), SEED) is None


TRUTH = np.array([16.78, 0.073, 0.00228])
POINTS = [(10, 90, 670), (15, 120, 900), (20, 150, 1100), (12, 100, 750), (18, 165, 1250)]
OBS5 = [true_obs(TRUTH, *p) for p in POINTS]


def test_init_fit_observations_golden():
    want = [(45.082, 20.201), (59.010, 26.367), (104.104, 48.081), (48.698, 21.747), (135.963, 63.648)]
    np.testing.assert_allclose([(o.ttft, o.itl) for o in OBS5], want, rtol=1e-4)


@METHODS
def test_init_fit_recovery(method):
    ie = InitEstimator(5, method=method)
    assert ie.last_fit_value == 0 and ie.last_condition == 0
    for o in OBS5:
        ie.add(o)
    np.testing.assert_allclose(ie.fit(), TRUTH, rtol=0.10)
    assert ie.last_condition == pytest.approx(21.5, rel=0.01)
    assert 0 <= ie.last_fit_value < 1e-6
    fit = fit_nelder_mead if method == "nm" else fit_least_squares
    np.testing.assert_allclose(fit([1, 0.01, 1e-4], OBS5).x, TRUTH, rtol=0.10)


def test_last_fit_value_accessors():
    ie = InitEstimator(1, method="nm")
    ie.add(obs(15, 120, 700, 64, 55, 6))
    ie.fit()
    assert ie.last_fit_value >= 0
    assert fit_nelder_mead([0, 0, 0], OBS5[:1]).fun == MAX_FLOAT / 2 or not fit_nelder_mead([0, 0, 0], OBS5[:1]).ok
    assert objective([0, 0, 0], OBS5) == MAX_FLOAT / 2


X8 = np.array([8, 0.016, 5e-4])
COLLINEAR = [true_obs(X8, 15, 2000, 1000, 128, 2048)] * 3
EXCITED = [true_obs(X8, *p, 128, 2048) for p in [(12, 500, 400), (15, 1500, 1000), (18, 2500, 1600)]]


def test_condition_number_goldens():
    assert condition_number(COLLINEAR, X8) >= 1e6
    k = condition_number(EXCITED, X8)
    assert np.isfinite(k) and k < 1e4
    assert k == pytest.approx(9.95, rel=0.01)
    assert condition_number(EXCITED[:1], X8) == float("inf")  # 2 residuals < 3 parameters


@METHODS
def test_sliding_window_guard(method):
    swe = SlidingWindowEstimator(10, 2, 0, method=method)
    swe.seed_last_fit(X8)
    for o in COLLINEAR:
        swe.add(o)
    np.testing.assert_array_equal(swe.fit(), X8)
    assert swe.held
    swe = SlidingWindowEstimator(10, 2, 0, method=method)
    for o in COLLINEAR:
        swe.add(o)
    np.testing.assert_allclose(swe.fit(), guess_init_state(COLLINEAR[-1]))
    assert not swe.held
    swe = SlidingWindowEstimator(10, 2, 0, method=method)
    for o in EXCITED:
        swe.add(o)
    x = swe.fit()
    assert not swe.held and 6 <= x[0] <= 10 and x[1] >= 0.010 and x[2] >= 1e-4
    ie = InitEstimator(2, method=method)
    for o in COLLINEAR[:2]:
        ie.add(o)
    np.testing.assert_allclose(ie.fit(), guess_init_state(COLLINEAR[0]))
    assert ie.last_fit_value != MAX_FLOAT


def test_sliding_window_mechanics():
    swe = SlidingWindowEstimator(3, 1, 0)
    for r in (10, 20, 30, 40):
        swe.add(obs(r, 100, 100, 64, 10, 5))
    assert [o.rpm for o in swe.observations] == [20, 30, 40]
    swe = SlidingWindowEstimator(3, 1, 0)
    swe.seed_observations([obs(r, 100, 100, 64, 10, 5) for r in (10, 20, 30, 40, 50)])
    assert [o.rpm for o in swe.observations] == [30, 40, 50]
    with pytest.raises(Exception, match="empty"):
        SlidingWindowEstimator(3, 1, 0).fit()
    assert SlidingWindowEstimator(0, 5, 0).window == 1 and SlidingWindowEstimator(4, 9, 0).min_obs == 4


@METHODS
def test_sliding_window_recovery_and_outlier(method):
    swe = SlidingWindowEstimator(4, 1, 0.5, method=method)
    for o in OBS5[:4]:
        swe.add(o)
    np.testing.assert_allclose(swe.fit(), TRUTH, rtol=0.10)
    swe = SlidingWindowEstimator(10, 2, 0.5, method=method)
    for o in OBS5 + [obs(10, 90, 670, 64, 500, 5)]:
        swe.add(o)
    np.testing.assert_allclose(swe.fit(), TRUTH, rtol=0.15)
    assert len(swe.observations) == 6  # the outlier stays in the window


# -- service -------------------------------------------------------------------------------------------------
def spec(rpm, ttft, itl, i, o, n=64, model="m", acc="A100", q=0):
    return {"name": "s", "model": model, "maxBatchSize": n, "maxQueueSize": q,
            "currentAlloc": {"accelerator": acc, "numReplicas": 1, "maxBatch": n, "ttftAverage": ttft,
                             "itlAverage": itl, "load": {"arrivalRate": rpm, "avgInTokens": i, "avgOutTokens": o}}}


@MODES
def test_swnm_after_init(compat):
    svc = TunerService(ServiceSettings(mode="sliding-window", init_obs=3, window=5, compat=compat))
    for cycle in (1, 2):
        with pytest.raises(ServiceError, match="collecting"):
            svc.tune([spec(15, 55, 6, 120, 700)])
    data, _ = svc.tune([spec(15, 55, 6, 120, 700)])
    assert all(v > 0 for v in data["models"][0]["perfParms"].values())


@MODES
def test_poor_fit_fallback(compat):
    svc = TunerService(ServiceSettings(mode="sliding-window", init_obs=2, init_fit_threshold=1e-4, compat=compat))
    with pytest.raises(ServiceError):
        svc.tune([spec(15, 55, 6, 120, 700)])
    with pytest.raises(ServiceError, match="falling back"):
        svc.tune([spec(30, 120, 12, 200, 1500)])
    assert svc.fallbacks == {"m/A100"} and not svc.sliding
    svc.tune([spec(30, 120, 12, 200, 1500)])
    assert svc.fallbacks == {"m/A100"} and not svc.sliding


def test_excursion_reference_numbers_and_bounds():
    seed = [8, 0.016, 5e-4]
    held = list(seed)
    o = obs(15, 120, 700, 64, 55, 6)
    r = excursion(ServiceSettings(compat=True), held, o)
    np.testing.assert_allclose(r.predicted, [18.75, 8.64], rtol=1e-3)
    np.testing.assert_allclose(r.innovation, [36.25, -2.64], atol=0.005)
    np.testing.assert_allclose(r.x, [8.0074, 0.016019, 4.9991e-4], rtol=1e-4)
    assert held == seed  # the held slice is not mutated
    r = excursion(ServiceSettings(), held, o)
    for v, s in zip(r.x[1:], seed[1:]):
        assert s / 10 <= v <= 10 * s


@MODES
def test_cold_start_keeps_gamma_small(compat):
    svc = TunerService(ServiceSettings(init_obs=2, max_condition=1000, compat=compat))
    for _ in range(4):
        try:
            svc.tune([spec(265, 80.48, 15.911, 1123, 487, 128, "qwen", "H100")])
        except ServiceError:
            pass
    assert svc.store["qwen/H100"].gamma <= 5 * 5e-5
    st = svc.calibration_statuses()[0]
    assert st["illConditioned"] and st["needsCalibration"] and st["conditionNumber"] > 1e6


CAL_TRUTH = (12, 0.04, 6e-5)
SWEEP = [(r, 512, 256) for r in (30, 60, 90, 120, 150)] + [(60, 1024, 128), (60, 256, 512)]


def cal_specs(model="m"):
    out = []
    for r, i, o in SWEEP:
        z = predict(CAL_TRUTH, obs(r, i, o, 128))
        out.append(spec(r, z[0], z[1], i, o, 128, model))
    return out


@pytest.mark.parametrize("compat", [pytest.param(True, marks=pytest.mark.slow), False],
                         ids=["reference", "improved"])
def test_calibrate(compat):
    svc = TunerService(ServiceSettings(compat=compat))
    data, _ = svc.calibrate(cal_specs())
    p = data["models"][0]["perfParms"]
    hold = obs(75, 768, 192, 128)
    np.testing.assert_allclose(predict(CAL_TRUTH, hold), [56.186, 12.882], rtol=1e-4)
    np.testing.assert_allclose(predict([p["alpha"], p["beta"], p["gamma"]], hold), predict(CAL_TRUTH, hold),
                               rtol=0.20)
    assert svc.store["m/A100"].update_count >= 3
    assert svc.estimators["m/A100"].last_condition == pytest.approx(148, rel=0.01)
    svc2 = TunerService(ServiceSettings(compat=compat))
    with pytest.raises(ServiceError, match="ill-conditioned"):
        svc2.calibrate([cal_specs()[1]] * 3)
    assert not svc2.store
    data, _ = svc.calibrate(cal_specs("fresh") + [cal_specs("bad")[1]] * 3)
    assert [m["name"] for m in data["models"]] == ["fresh"]
