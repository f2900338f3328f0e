"""The real-data fit of benchmarks/perf_model_real.py on observations made by the model itself."""

import numpy as np
import pytest

from benchmarks.perf_model_real import LAG, fit, predict

TRUE = (11.0, 0.05, 2e-5)


def _rows(kind=LAG, x=TRUE + (0.3,)):
    """Synthetic observations of one server: the model's own predictions at several rates and batch sizes,
    the fit started from parameters 30 % off."""
    rows = []
    for rate, big_n, n, m in [(1.0, 32, 1000, 500), (2.5, 32, 900, 450), (4.0, 64, 1100, 520), (5.5, 128, 1000, 480),
                              (2.0, 128, 950, 600), (6.5, 128, 1050, 500), (3.0, 64, 1000, 400), (5.0, 64, 980, 510)]:
        r = dict(N=big_n, Q=0, n=float(n), m=float(m), rate=rate, x0=tuple(1.3 * v for v in TRUE))
        r.update(predict(kind, x, r))
        rows.append(r)
    return rows


@pytest.mark.parametrize("procedure", ["tuner", "robust"])
def test_fit_recovers_the_parameters_that_made_the_observations(procedure):
    x = fit(LAG, _rows(), procedure)
    assert x[0] == pytest.approx(TRUE[0], rel=0.03)
    assert x[1] == pytest.approx(TRUE[1], rel=0.03)
    assert x[3] == pytest.approx(0.3, rel=0.1)


def test_robust_fit_is_not_pulled_by_one_outlier():
    rows = _rows("iteration", TRUE)
    clean = [dict(r) for r in rows]
    rows[5]["itl"] *= 1.5  # one window measured far from its set point
    errs = {}
    for procedure in ("tuner", "robust"):
        x = fit("iteration", rows, procedure)
        errs[procedure] = max(abs(predict("iteration", x, r)["itl"] / r["itl"] - 1) for i, r in enumerate(clean)
                              if i != 5)
    assert errs["robust"] < 0.02  # least squares: 12 % at the worst other row
    assert errs["robust"] < errs["tuner"] / 5


def test_lag_is_never_negative():
    rows = _rows(LAG, TRUE + (0.0,))
    for r in rows:
        r["ttft"] *= 0.97  # TTFTs below what zero lag gives
    assert fit(LAG, rows, "robust")[3] >= 0.0
    assert np.isfinite(fit(LAG, rows, "robust")).all()
