"""Acceptance: simulated data from known parameters (5% noise) -> predictions within 5% at a held-out load after
20 observations, and again within 20 observations of a parameter jump; lock-out recovery, rejection of
unevaluable observations, the offline trace end to end, inferno's demo behaviour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inferno_mip.tuner import Observation, PerfTuner, TunerOptions, predict, tune_all
from inferno_mip.tuner.config import default_config, parse_config
from inferno_mip.tuner.observers import OfflineObserver, Phase, SimulatedObserver, TraceObserver
from inferno_mip.tuner.observers.simulated import DEMO_PHASES
from inferno_mip.tuner.run import final_params

DATA = Path(__file__).parent / "data" / "tuner"
A, B = (16, 0.04, 2e-4), (24, 0.06, 3e-4)
PHASES = [Phase(20, 120, 1024, 256, *A), Phase(20, 120, 1024, 256, *B)]
HELD = [Observation(rpm=100, in_tokens=1500, out_tokens=400, max_batch=128, max_queue=1280),
        Observation(rpm=60, in_tokens=600, out_tokens=150, max_batch=128, max_queue=1280)]
CFG = parse_config({"filterData": {"gammaFactor": 1, "errorLevel": 0.05, "tPercentile": 1.96},
                    "modelData": {"initState": [5, 0.05, 5e-5], "percentChange": [0.15] * 3,
                                  "boundedState": False, "expectedObservations": [200, 40]}})
OPTIONS = TunerOptions(process_scale=0.003)


def held_error(params: dict, truth) -> float:
    x = [params["alpha"], params["beta"], params["gamma"]]
    return max(float(np.max(np.abs(predict(x, h) / predict(truth, h) - 1))) for h in HELD)


def run(seed, options=OPTIONS):
    sim = SimulatedObserver(PHASES, noise=0.05, seed=seed, load_spread=0.5, token_spread=0.5)
    return sim, tune_all(sim, CFG, options=options)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_converges_within_20_and_reconverges_after_jump(seed):
    sim, pts = run(seed)
    assert len(pts) == 40
    assert held_error(pts[19].params, A) < 0.05  # after 20 observations
    assert held_error(pts[39].params, B) < 0.05  # 20 observations after the jump
    assert sum(p.status == "rejected" for p in pts[20:]) <= 5  # the lock-out is short


def test_without_recovery_the_nis_gate_locks_out():
    sim, pts = run(0, TunerOptions(process_scale=0.003, lockout_after=0))
    assert held_error(pts[19].params, A) < 0.05
    assert all(p.status == "rejected" for p in pts[25:])  # frozen on the old regime (inferno's weakness 5)
    assert held_error(pts[39].params, B) > 0.2


def test_recovery_by_inflation_also_escapes_lockout():
    """P inflation (the alternative recovery) escapes too, but only gently: one observation cannot pin 3 params."""
    opts = TunerOptions(process_scale=0.003, lockout_recovery="inflate", lockout_inflation=10, lockout_after=1)
    sim, pts = run(0, opts)
    assert sum(p.status == "accepted" for p in pts[25:]) >= 8
    assert held_error(pts[39].params, B) < 0.05


def test_bad_observations_are_rejected_with_reason():
    t = PerfTuner(CFG, x0=A)
    good = SimulatedObserver(PHASES[:1], noise=0.0, seed=0)
    o = next(iter(good))
    cases = {"ttft": float("nan"), "itl": -1.0, "rpm": 0.0, "max_batch": 0}
    for field, v in cases.items():
        r = t.step(Observation(**{**o.to_dict(), field: v}))
        assert not r.accepted and f"observation.{field}" in r.reason
    with pytest.raises(Exception, match="observation.itl: missing"):
        Observation.from_dict({k: v for k, v in o.to_dict().items() if k != "itl"})
    assert t.step(o).accepted


def test_unevaluable_observation_is_rejected_not_zeroed():
    """gamma = 0 in linear space: the Jacobian's -eps point has gamma < 0, which the perf model cannot evaluate."""
    o = Observation(rpm=60, in_tokens=1024, out_tokens=256, max_batch=64, ttft=50, itl=10)
    t = PerfTuner(CFG, x0=[16, 0.04, 1.0], options=TunerOptions(log_space=False))
    t.ekf._s[2] = 0.0
    snap = t.ekf.snapshot()
    r = t.step(o, skip_nis=True)
    assert not r.accepted and "cannot evaluate" in r.reason
    np.testing.assert_array_equal(t.ekf.state, snap[0])
    ref = PerfTuner(CFG, x0=[16, 0.04, 1.0], options=TunerOptions.reference())
    ref.ekf._s[2] = 0.0
    r = ref.step(o, skip_nis=True)  # inferno: h = [0, 0] at the bad point -> a spurious slope, no rejection
    assert "cannot evaluate" not in r.reason


def test_offline_trace_end_to_end():
    obs = OfflineObserver(DATA / "tuner-exp13.csv")
    assert len(obs) >= 85 and obs.kind == "decode"
    pts = tune_all(obs, default_config(decode=True), kind="decode")
    assert len(pts) == len(obs)
    acc = [p for p in pts if p.status == "accepted"]
    assert len(acc) >= 0.8 * len(pts)
    final = final_params(pts)
    assert set(final) == {"alpha", "beta"} and all(v > 0 for v in final.values())
    itl_err = [abs(p.innovation[0] / p.observed[0]) for p in acc[10:]]  # wait dropped: z = [ITL]
    assert np.median(itl_err) < 0.05
    ref = tune_all(obs, default_config(decode=True), kind="decode", options=TunerOptions.reference(), gated=False)
    assert len(ref[-1].observed) == 2  # inferno observes [wait, ITL]


def test_data_observer_trace_prefill_decode():
    obs = TraceObserver(DATA / "data-observer-trace.csv")
    pts = tune_all(obs, default_config(), init_obs=5)
    acc = [p for p in pts if p.status == "accepted"]
    assert len(acc) >= 20
    rel = np.array([np.abs(np.array(p.innovation) / np.array(p.observed)) for p in acc[5:]])
    assert np.median(rel) < 0.10


def test_offline_bad_cells_become_rejections(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("RPM,tokens,avgConcurrency,maxConcurrency,avgWait,avgITL\n600,1000,30,64,0.003,2.7\n"
                 "600,x,30,64,0.003,2.7\n600,1000,30,64,0.003,\n")
    pts = tune_all(OfflineObserver(p), default_config(decode=True), kind="decode")
    assert [p.status for p in pts][1:] == ["rejected", "rejected"]
    assert "out_tokens" in pts[1].reason and "itl" in pts[2].reason
    with pytest.raises(Exception, match="missing CSV columns"):
        OfflineObserver(DATA / "benchmark-trace.csv")


LEGACY = parse_config({"filterData": {"gammaFactor": 1, "errorLevel": 0.05, "tPercentile": 1.96},
                       "modelData": {"initState": [10, 0.02, 1e-4], "percentChange": [0.25] * 3,
                                     "boundedState": True, "minState": [4, 0.002, 1e-5],
                                     "maxState": [100, 0.2, 1e-3], "expectedObservations": [200, 40]}})


@pytest.mark.parametrize("seed", [0, 1])
def test_simulated_demo_reference_bands(seed):
    """inferno's simulated demo (legacy config, Run without gates): regression bands of spec §8 (P1, P2)."""
    sim = SimulatedObserver(DEMO_PHASES, noise=0.05, seed=seed, compat=True)
    it = iter(sim)
    next(it)  # the first observation builds the tuner
    t = PerfTuner(LEGACY, options=TunerOptions.reference())
    xs = [t.run(o).x for o in it]
    a1, b1, g1 = xs[13]  # loop k uses step k+1: step 14
    assert 15.5 <= a1 <= 18.0 and 0.036 <= b1 <= 0.042 and 0.9e-4 <= g1 <= 1.15e-4
    a2, b2, g2 = xs[33]
    assert 21.5 <= a2 <= 27.0 and 0.070 <= b2 <= 0.088 and 2.2e-4 <= g2 <= 3.2e-4
