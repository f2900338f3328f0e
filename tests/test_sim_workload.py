"""Workloads: rate profiles, noise, replay, lengths from YAML, seeding, and clear errors on bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from inferno_mip.sim import SimulationError, Workload
from inferno_mip.sim.rates import Diurnal, OUNoise, Phases, StepRates

ROOT = Path(__file__).resolve().parent.parent
SCENARIO_RAMP = ROOT / "tests" / "data" / "sim" / "five-phase-ramp.yaml"  # fixed copy: the shipped one may change


def write(tmp_path, data, name="w.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_phases_rate_and_cumulative_agree_with_numeric_integration():
    p = Phases((100.0, 200.0, 50.0, 80.0), (1.0, 3.0, 0.5, 0.5), (False, True, False, True))
    t = np.linspace(0, 500, 500_001)
    r = p.rate(t)
    assert r[0] == 1.0 and p.rate(np.array(200.0)) == pytest.approx(2.0)  # halfway up the ramp 1 -> 3
    assert p.rate(np.array(320.0)) == 0.5  # a step down holds
    numeric = np.concatenate([[0], np.cumsum((r[1:] + r[:-1]) / 2 * np.diff(t))])
    np.testing.assert_allclose(p.cumulative(t[::1000]), numeric[::1000], atol=5e-3)  # trapezoid over a step


def test_diurnal_and_step_rates_cumulative_agree_with_numeric_integration():
    for profile in (Diurnal(2.0, 0.6, 300.0, 40.0), StepRates((10.0, 50.0, 90.0), (1.0, 0.0, 4.0))):
        t = np.linspace(0, 400, 400_001)
        r = profile.rate(t)
        numeric = np.concatenate([[0], np.cumsum((r[1:] + r[:-1]) / 2 * np.diff(t))])
        np.testing.assert_allclose(profile.cumulative(t[::1000]), numeric[::1000], atol=5e-3)


def test_arrival_counts_follow_the_profile():
    w = Workload.from_yaml(SCENARIO_RAMP)
    spec = w.for_server("Premium-granite_13b")
    times, _, _ = w.stream("Premium-granite_13b").until(3900.0)
    # Without noise the counts per phase would be Poisson(Lambda); the noise is mean-reverting around 1.
    edges = np.array([0, 600, 1500, 2400, 3300, 3900.0])
    counts = np.histogram(times, edges)[0]
    expected = np.diff(spec.rate.cumulative(edges))
    np.testing.assert_allclose(counts, expected, rtol=0.08)
    assert np.all(np.diff(times) >= 0)


def test_streams_are_reproducible_and_independent_of_how_far_each_call_goes():
    w = Workload.from_yaml(SCENARIO_RAMP)
    a = w.stream("Free-llama_13b")
    whole = a.until(1000.0)
    b = w.stream("Free-llama_13b")
    parts = [b.until(t) for t in (13.0, 400.5, 401.0, 1000.0)]
    for i in range(3):
        np.testing.assert_array_equal(whole[i], np.concatenate([p[i] for p in parts]))
    other = w.stream("Bronze-llama_13b").until(1000.0)
    assert not np.array_equal(whole[0][:50], other[0][:50])  # servers draw from their own streams


def test_ou_noise_reverts_to_one():
    noise = OUNoise(0.2, 0.1, 30.0, np.random.default_rng(0))
    x = noise(np.arange(0, 30 * 20000, 30.0))
    assert x[0] == 1.0 and x.min() >= 0
    assert x.mean() == pytest.approx(1.0, abs=0.02)
    # Stationary AR(1) spread: sigma / sqrt(1 - (1 - theta)^2).
    assert x.std() == pytest.approx(0.1 / math.sqrt(1 - 0.8 ** 2), rel=0.1)


def test_replay_of_timestamps_and_of_rates(tmp_path):
    (tmp_path / "ts.csv").write_text("time\n0.5\n2.25\n2.5\n7\n")
    (tmp_path / "rates.csv").write_text("time,rpm\n0,60\n100,600\n")
    (tmp_path / "lens.csv").write_text("tokens\n10\n20\n30\n")
    w = Workload.from_yaml(write(tmp_path, {"servers": {
        "a": {"rate": {"replay": {"csv": "ts.csv"}}, "out_tokens": {"trace": {"csv": "lens.csv"}}},
        "b": {"rate": {"replay": {"csv": "rates.csv"}}}}}))
    times, _, out = w.stream("a").until(10.0)
    np.testing.assert_array_equal(times, [0.5, 2.25, 2.5, 7.0])
    assert set(out.tolist()) <= {10, 20, 30}
    times, _, _ = w.stream("b").until(200.0)
    assert np.sum(times < 100) == pytest.approx(100, abs=35) and np.sum(times >= 100) == pytest.approx(1000, abs=100)


def test_lengths_from_yaml(tmp_path):
    w = Workload.from_yaml(write(tmp_path, {"seed": 3, "servers": {"*": {
        "rate": {"phases": [{"for": 10, "rpm": 60}]},
        "in_tokens": {"dist": "lognormal", "mean": 300, "cv": 0.5},
        "out_tokens": {"dist": "trace", "values": [5, 7]}}}}))
    spec = w.for_server("anything")
    assert (spec.in_tokens.kind, spec.in_tokens.mean, spec.in_tokens.cv) == ("lognormal", 300.0, 0.5)
    assert spec.out_tokens.values == (5, 7)
    assert w.seed == 3


@pytest.mark.parametrize("data, field", [
    ({"servers": {"a": {"rate": {"phases": [{"for": 10, "rpm": -5}]}}}}, "servers.a.rate.phases[0].rpm"),
    ({"servers": {"a": {"rate": {"phases": [{"for": 10, "rpm": float("nan")}]}}}}, "servers.a.rate.phases[0].rpm"),
    ({"servers": {"a": {"rate": {"phases": [{"for": 10, "rpm": 5, "rampp": True}]}}}}, "phases[0].rampp"),
    ({"servers": {"a": {"rate": {"phases": [{"for": 10, "rpm": 5}]}, "speed": 1}}}, "servers.a.speed"),
    ({"servers": {"a": {"rate": {"phases": [{"for": 10, "rpm": 5}]}, "in_tokens": {"dist": "fixed", "mean": 0}}}},
     "servers.a.in_tokens.mean"),
    ({"servers": {"a": {"rate": {"phases": [{"for": 10, "rpm": 5}]},
                        "out_tokens": {"dist": "lognormal", "mean": 10}}}}, "out_tokens.cv"),
    ({"servers": {"a": {"rate": {"phases": [{"for": 10, "rpm": 5}]},
                        "out_tokens": {"dist": "zipf", "mean": 10}}}}, "out_tokens.dist"),
    ({"servers": {}}, "servers"),
    ({"servers": {"a": {"rate": {"diurnal": {"mean_rpm": 5, "amplitude": 2}}}}}, "amplitude"),
    ({"servers": {"a": {"rate": {"phases": [{"for": 1, "rpm": 1}], "diurnal": {"mean_rpm": 5}}}}}, "exactly one"),
    ({"servers": {"a": {"rate": {"replay": {"csv": "missing.csv"}}}}}, "servers.a.rate.replay.csv"),
    ({"seed": -1, "servers": {"a": {"rate": {"phases": [{"for": 1, "rpm": 1}]}}}}, "seed"),
    ({"sed": 1}, "top level.sed"),
])
def test_bad_workload_names_the_field(tmp_path, data, field):
    with pytest.raises(SimulationError) as err:
        Workload.from_yaml(write(tmp_path, data))
    assert field in str(err.value) and "w.yaml" in str(err.value)


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(SimulationError, match="not valid YAML"):
        Workload.from_yaml(write(tmp_path, "servers: [a: b"))
    with pytest.raises(SimulationError, match="cannot read"):
        Workload.from_yaml(tmp_path / "nope.yaml")


def test_diurnal_from_yaml_follows_its_sine(tmp_path):
    w = Workload.from_yaml(write(tmp_path, {"seed": 2, "servers": {"a": {"rate": {
        "diurnal": {"mean_rpm": 600, "amplitude": 0.8, "period": 600, "shift": 0}}}}}))
    times, _, _ = w.stream("a").until(1200.0)
    counts = np.histogram(times, [0, 300, 600, 900, 1200])[0]
    high = 10 * (300 + 0.8 * 600 / math.pi)  # integral of the upper half of the sine, 10 req/s on average
    low = 10 * (300 - 0.8 * 600 / math.pi)
    np.testing.assert_allclose(counts, [high, low, high, low], rtol=0.06)
