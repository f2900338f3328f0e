"""Generic EKF (spec §2.1, §8 kalman-filter goldens) and filter configs (§2.2, §7)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferno_mip.tuner import ConfigError, ExtendedKalmanFilter, TunerError, limit, load_config, numerical_jacobian
from inferno_mip.tuner.config import parse_config

DATA = Path(__file__).parent / "data" / "tuner"


def test_numerical_jacobian_golden():
    f = lambda x: np.array([x[0], 5 * x[2], 4 * x[1] ** 2 - 2 * x[2], x[0] ** 2 * x[2]])  # noqa: E731
    J = numerical_jacobian(f, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(J, [[1, 0, 0], [0, 0, 5], [0, 16, -2], [6, 0, 1]], atol=1e-5)
    Jv = numerical_jacobian(lambda X: np.array([f(r) for r in X]), [1.0, 2.0, 3.0], vectorized=True)
    np.testing.assert_array_equal(J, Jv)


def test_numerical_jacobian_zero_component_uses_absolute_step():
    J = numerical_jacobian(lambda x: np.array([x[0] ** 2 + x[1]]), [0.0, 1.0])
    np.testing.assert_allclose(J, [[0.0, 1.0]], atol=1e-12)


@pytest.mark.parametrize("x, want", [([1, 2, 3], [1, 2, 3]), ([15, 2, 11], [10, 2, 10]), ([1, -5, -1], [1, 0, -1]),
                                     ([-5, 12, 7], [-1, 10, 7])])
def test_limiter_golden(x, want):
    np.testing.assert_array_equal(limit(x, [-1, 0, -1], [10, 10, 10]), want)
    ekf = ExtendedKalmanFilter(x, np.eye(3), bounds=([-1, 0, -1], [10, 10, 10]))  # clamps at install
    np.testing.assert_array_equal(ekf.x, want)


def test_limiter_min_above_max_is_error():
    with pytest.raises(TunerError, match=r"min\[1\]"):
        ExtendedKalmanFilter([1, 2, 3], bounds=([0, 5, 0], [1, 4, 1]))


def test_ekf_api_dimension_errors_and_identity_run():
    h = lambda x: np.array([x[0] + x[1], x[1]])  # noqa: E731
    ekf = ExtendedKalmanFilter([1.0, 2.0], np.eye(2), h=h)
    assert ekf.m == 2
    with pytest.raises(TunerError, match="Q"):
        ekf.predict(np.eye(3))
    with pytest.raises(TunerError, match="R"):
        ekf.update([1.0, 2.0], np.eye(3))
    with pytest.raises(TunerError, match="h"):
        ExtendedKalmanFilter([1.0, 2.0], h=h, m=3)
    with pytest.raises(TunerError, match="f"):
        ExtendedKalmanFilter([1.0, 2.0], f=lambda x: np.array([1.0]))
    with pytest.raises(TunerError, match="P0"):
        ExtendedKalmanFilter([1.0, 2.0], np.eye(3))
    ekf.predict(np.eye(2))
    inn = ekf.update([3.0, 2.0], np.eye(2))
    assert inn.nis == pytest.approx(0.0)
    assert ekf.state is ekf.state  # live object, as inferno's getters


def test_standalone_linear_model_converges():
    rng = np.random.default_rng(1)
    A = np.array([[1.0, 2.0], [0.5, -1.0], [3.0, 0.1]])
    truth = np.array([2.0, -1.0])
    ekf = ExtendedKalmanFilter([0.0, 0.0], np.eye(2) * 100, h=lambda x: A @ x)
    for _ in range(50):
        ekf.predict(np.zeros((2, 2)))
        ekf.update(A @ truth + rng.normal(0, 0.1, 3), np.eye(3) * 0.01)
    np.testing.assert_allclose(ekf.x, truth, atol=0.05)


def test_joseph_and_simple_update_agree_with_exact_gain():
    h = lambda x: np.array([x[0] * x[1], x[0] + x[1] ** 2])  # noqa: E731
    a = ExtendedKalmanFilter([1.0, 2.0], np.diag([0.3, 0.2]), h=h, joseph=True)
    b = ExtendedKalmanFilter([1.0, 2.0], np.diag([0.3, 0.2]), h=h, joseph=False)
    for f in (a, b):
        f.predict(np.eye(2) * 0.01)
        f.update([2.5, 5.5], np.eye(2) * 0.1)
    np.testing.assert_allclose(a.x, b.x, rtol=1e-12)
    np.testing.assert_allclose(a.P, b.P, rtol=1e-8, atol=1e-12)
    np.testing.assert_array_equal(a.P, a.P.T)


@settings(max_examples=40, deadline=None)
@given(z=st.lists(st.floats(1e-3, 1e3), min_size=2, max_size=2), p=st.floats(1e-3, 10.0))
def test_log_space_state_stays_positive_and_P_symmetric_psd(z, p):
    h = lambda x: np.array([x[0] + 2 * x[1], x[0] * x[1]])  # noqa: E731
    ekf = ExtendedKalmanFilter([1.0, 0.5], np.eye(2) * p, h=h, log_space=True)
    ekf.predict(np.eye(2) * 0.01)
    ekf.update(z, np.eye(2))
    assert np.all(ekf.x > 0)
    np.testing.assert_array_equal(ekf.P, ekf.P.T)
    assert np.all(np.linalg.eigvalsh(ekf.P) > -1e-12)


def test_non_finite_prediction_raises_invalid_observation():
    from inferno_mip.tuner import InvalidObservation

    ekf = ExtendedKalmanFilter([1.0], np.eye(1), h=lambda x: np.array([np.sqrt(x[0] - 2)]) if x[0] >= 2
                               else np.array([np.nan]), m=1)
    with pytest.raises(InvalidObservation):
        ekf.update([1.0], np.eye(1))


# -- configs (§7) ------------------------------------------------------------------------------------------
R_DIAG = {"default": [2603.08, 104.12], "decode": [26.03, 0.0026], "prefill-decode": [0.26, 0.26],
          "benchmark": [0.146, 0.407]}


@pytest.mark.parametrize("name", sorted(R_DIAG))
def test_config_noise_matrices(name):
    cfg = load_config(DATA / f"{name}-config-data.json")
    raw = json.loads((DATA / f"{name}-config-data.json").read_text())["modelData"]
    np.testing.assert_allclose(np.diag(cfg.measurement_noise()), R_DIAG[name], rtol=4e-3)
    x0, pc = np.array(raw["initState"]), np.array(raw["percentChange"])
    np.testing.assert_allclose(cfg.process_noise(), np.diag((pc * x0) ** 2))
    assert cfg.noise_factor == pytest.approx((cfg.error_level / cfg.t_percentile) ** 2 / cfg.gamma_factor)


def test_config_relative_noise_and_recentring():
    cfg = load_config(DATA / "default-config-data.json")
    np.testing.assert_allclose(np.diag(cfg.measurement_noise([100.0, 10.0])), cfg.noise_factor * np.array([1e4, 100]))
    c2 = cfg.with_state([8, 0.016, 5e-4])
    np.testing.assert_allclose(c2.min_state, [0.8, 0.0016, 5e-5])
    np.testing.assert_allclose(c2.max_state, [80, 0.16, 5e-3])


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["filterData"].pop("gammaFactor"), "gammaFactor: missing"),
    (lambda d: d["filterData"].__setitem__("gammaFactor", 0), "gammaFactor"),
    (lambda d: d["modelData"].__setitem__("percentChange", [0.1]), "percentChange: expected 3"),
    (lambda d: d["modelData"].__setitem__("minState", [1, 1, 1]), r"minState\[2\]"),
    (lambda d: d["modelData"].__setitem__("initState", [1, float("nan"), 1]), r"initState\[1\]"),
])
def test_config_errors_name_the_field(edit, field):
    d = json.loads((DATA / "default-config-data.json").read_text())
    edit(d)
    with pytest.raises(ConfigError, match=field):
        parse_config(d)


def test_config_missing_file():
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(DATA / "nope.json")
