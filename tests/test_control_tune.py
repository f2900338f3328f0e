"""The tune stage's gate: tuned parameters fitted with the solver's perf model, and a capacity the fleet has not
shown is not taken from window averages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferno_mip.control.protocols import FleetObservation, ServerObservation
from inferno_mip.control.tune import (InProcessTuner, ParameterGate, TuneResult, capacity, server_specs,
                                      sizing_perf_model, slo_targets)
from inferno_mip import load_scenario
from inferno_mip.tuner import Observation

from conftest import SCENARIOS

KEY = ("granite_8b", "H100")
TRUE = {KEY: {"alpha": 8.0, "beta": 0.016, "gamma": 0.0005}}
ITL, TTFT = 30.0, 200.0  # granite's Premium SLO in scenarios/inferno-ramp


def seen(rpm: float, itl: float = 20.0, ttft: float = 80.0) -> Observation:
    return Observation(rpm=rpm, in_tokens=2048, out_tokens=1024, max_batch=128, ttft=ttft, itl=itl)


def gate(**kw) -> ParameterGate:
    return ParameterGate(TRUE, max_change=100.0, band=0.0, min_gain=-1e9, perf_model="iteration",
                         targets={KEY: (ITL, TTFT)}, **kw)


def cap(p) -> float:
    return capacity(p, seen(1.0), ITL, TTFT, "iteration")


def test_the_tuner_and_gate_fit_the_perf_model_the_solver_sizes_with():
    assert sizing_perf_model({}) == "iteration"  # perfParms data (G3) in the default settings
    assert sizing_perf_model({"compat": True}) == "old3"
    assert sizing_perf_model({"perf_model": "new"}) == "new"
    tuner = InProcessTuner(perf_model="iteration")
    assert tuner.service.settings.tuner_options.perf_model == "iteration"


def test_slo_targets_per_pair():
    assert slo_targets(load_scenario(SCENARIOS / "inferno-ramp")) == {
        ("granite_8b", "H100"): (30.0, 200.0), ("llama_13b", "H100"): (60.0, 1000.0)}


def test_true_capacity_reference():
    # 300 rpm needs 10 granite replicas in the ramp experiments: 30-ish rpm each within the SLO
    assert 28.0 < cap(TRUE[KEY]) < 36.0


def test_an_optimistic_change_goes_only_as_far_as_the_fleet_has_shown():
    g = gate(demonstrated_margin=0.1)
    flat = {"alpha": 16.0, "beta": 0.016, "gamma": 0.00018}  # what window averages near saturation suggest
    assert cap(flat) > 1.3 * cap(TRUE[KEY])
    shown = cap(TRUE[KEY]) * 1.05
    params, notes = g.apply(TuneResult({KEY: flat}), {KEY: [seen(10.0), seen(shown)]})
    got = params[KEY]
    assert cap(TRUE[KEY]) < cap(got) <= 1.1 * shown * (1 + 1e-9)
    assert "not identified" in notes[0]
    # shown only below what the parameters in use claim: nothing moves
    g = gate(demonstrated_margin=0.1)
    params, notes = g.apply(TuneResult({KEY: flat}), {KEY: [seen(5.0), seen(12.0)]})
    assert params[KEY] == TRUE[KEY] and "kept those in use" in notes[0]
    # a replica over the SLO shows nothing
    params, _ = g.apply(TuneResult({KEY: flat}), {KEY: [seen(60.0, itl=45.0)]})
    assert params[KEY] == TRUE[KEY]


def test_a_pessimistic_change_passes():
    g = gate(demonstrated_margin=0.1)
    slow = {"alpha": 10.0, "beta": 0.02, "gamma": 0.0006}
    params, notes = g.apply(TuneResult({KEY: slow}), {KEY: [seen(10.0)]})
    assert params[KEY] == slow and not notes


@settings(max_examples=12, deadline=None)
@given(alpha=st.floats(2.0, 20.0), gamma=st.floats(5e-5, 1e-3), shown=st.floats(5.0, 80.0))
def test_accepted_capacity_never_exceeds_the_shown_rate_plus_margin(alpha, gamma, shown):
    g = gate(demonstrated_margin=0.1)
    new = {"alpha": alpha, "beta": 0.016, "gamma": gamma}
    got = g.apply(TuneResult({KEY: new}), {KEY: [seen(shown)]})[0][KEY]
    limit = max(1.1 * shown, cap(TRUE[KEY]))
    assert got == new and cap(new) <= limit or cap(got) <= limit * (1 + 1e-9)


def test_a_rate_counted_over_a_short_window_shows_its_lower_confidence_bound():
    g = gate(demonstrated_margin=0.0, window=30.0, z=1.0)
    assert g._lower_bound(36.0) == pytest.approx(36.0 * (1 - 1 / 18 ** 0.5))  # 18 requests in 30 s
    assert gate()._lower_bound(36.0) == 36.0  # no window: taken as exact
    flat = {"alpha": 16.0, "beta": 0.016, "gamma": 0.00018}
    # a window at 1.1x the true capacity within the SLO is chance, not capacity: nothing moves
    params, notes = g.apply(TuneResult({KEY: flat}), {KEY: [seen(1.1 * cap(TRUE[KEY]))]})
    assert params[KEY] == TRUE[KEY] and "not identified" in notes[0]


@pytest.mark.parametrize("engine_ttft", [None, 61.5])
def test_the_tuner_fits_the_engines_ttft_where_it_was_measured(engine_ttft):
    s = ServerObservation(name="s", model="granite_8b", service_class="Premium", accelerator="H100", max_batch=128,
                          replicas_ready=2, arrival_rate=4.0, in_tokens=2048, out_tokens=1024, itl=20.0, ttft=90.0,
                          engine_ttft=engine_ttft, running=10.0, waiting=0.0)
    (spec,) = server_specs(FleetObservation(time=0.0, servers={"s": s}))
    alloc = spec["currentAlloc"]
    assert alloc["ttftAverage"] == (90.0 if engine_ttft is None else engine_ttft)  # a latency: not divided
    assert alloc["load"]["arrivalRate"] == pytest.approx(120.0)  # per replica, in requests/minute
