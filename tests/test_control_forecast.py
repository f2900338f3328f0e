"""Forecasters: exact behaviour on simple series, margins that cover, and the per-series choice by error."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferno_mip.control.forecast import BestRecent, Ewma, HoltWinters, LastValue, Margined, make_forecaster
from inferno_mip.control.loop import LoopConfig

PERIOD = 30.0


def feed(f, values, period=PERIOD):
    for k, v in enumerate(values):
        f.update(k * period, float(v))


@given(st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=30))
def test_last_value_is_the_last(values):
    f = LastValue()
    feed(f, values)
    assert f.predict(90.0) == values[-1]


def test_ewma_half_life():
    f = Ewma(half_life=60.0)
    f.update(0.0, 0.0)
    f.update(60.0, 1.0)  # one half-life later: halfway to the new value
    assert f.predict(30.0) == pytest.approx(0.5, abs=1e-12)
    f.update(180.0, 1.0)  # two more half-lives: 1 - 0.5 * 0.25
    assert f.predict(30.0) == pytest.approx(0.875, abs=1e-12)


@given(st.lists(st.floats(0, 1e3, allow_nan=False), min_size=1, max_size=20))
def test_ewma_stays_within_the_range_seen(values):
    f = Ewma(45.0)
    feed(f, values)
    assert min(values) - 1e-9 <= f.predict(60.0) <= max(values) + 1e-9


def test_holt_winters_extrapolates_a_ramp():
    values = 1.0 + 0.1 * np.arange(30)  # +0.1 per period
    f = HoltWinters()
    feed(f, values)
    # three periods ahead: 3.9 + 0.3 = 4.2; the damped trend may fall a little short, never below the last value
    assert f.predict(3 * PERIOD) == pytest.approx(4.2, rel=0.03)
    assert f.predict(3 * PERIOD) > values[-1]


def test_holt_winters_falls_back_to_last_value_when_short_or_flat():
    f = HoltWinters(min_points=6)
    feed(f, [1.0, 2.0, 3.0])
    assert f.predict(PERIOD) == 3.0
    g = HoltWinters()
    feed(g, [2.0] * 20)
    assert g.predict(PERIOD) == 2.0


@pytest.mark.parametrize("q", [0.9, LoopConfig().margin_quantile])
def test_margin_covers_noise_at_its_quantile(q):
    rng = np.random.default_rng(1)
    values = 10.0 * (1.0 + 0.2 * rng.standard_normal(400))
    f = Margined(LastValue(), horizon=PERIOD, q=q, keep=60)
    covered = []
    forecast = None
    for k, v in enumerate(values):
        if forecast is not None and k > 80:
            covered.append(v <= forecast)
        f.update(k * PERIOD, v)
        forecast = f.predict()
    assert f.margin > 0
    # the q quantile of last-value errors: coverage near q (sampling noise of a 60-point window)
    assert q - 0.1 <= np.mean(covered) <= q + 0.07


def test_margin_never_negative_and_bounded():
    f = Margined(LastValue(), horizon=PERIOD, q=0.9, max_margin=0.5)
    feed(f, [100.0 - k for k in range(50)])  # always over-forecast: errors negative
    assert f.margin == 0.0 and f.predict() == 51.0
    g = Margined(LastValue(), horizon=PERIOD, q=0.9, max_margin=0.5)
    feed(g, [2.0 ** k for k in range(20)])  # always doubling: error 100 %, clipped
    g.predict()
    assert g.margin == 0.5


def test_level_shift_follows_a_fall_at_once():
    """A smoother lags a fall by its half-life; with level_shift the forecast is at most (1 + it) x the value
    just seen, so sizing follows a surge's end in one cycle."""
    plain = make_forecaster("ewma", horizon=3 * PERIOD, margin_quantile=None)
    bounded = make_forecaster("ewma", horizon=3 * PERIOD, margin_quantile=None, level_shift=0.5)
    series = [5.0] * 20 + [1.0]
    feed(plain, series)
    feed(bounded, series)
    assert plain.predict() > 2.5 and bounded.predict() == pytest.approx(1.5)
    feed(bounded, [5.0] * 20 + [4.0])  # within the band: the smoother's own answer
    assert bounded.predict() > 4.0


def test_best_recent_picks_the_trend_model_on_a_ramp_and_smoothing_on_noise():
    ramp = make_forecaster("auto", horizon=2 * PERIOD)
    feed(ramp, 1.0 + 0.2 * np.arange(40))
    assert ramp.name == "holt-winters"
    rng = np.random.default_rng(3)
    noise = make_forecaster("auto", horizon=2 * PERIOD)
    feed(noise, 10.0 + rng.standard_normal(60))
    assert noise.name in ("ewma", "holt-winters")  # either smooths; the raw last value is worst on white noise
    errors = {f.name: f.tracker.mean_abs() for f in noise.forecasters}
    assert errors["last"] > min(errors.values())


class _Scored:
    """A stand-in forecaster whose recent mean absolute error is set by the test."""

    def __init__(self, name):
        self.name, self.error = name, math.inf
        self.tracker = self

    def update(self, time, value):
        pass

    def mean_abs(self):
        return self.error


def _choices(switch, errors):
    a, b = _Scored("a"), _Scored("b")
    best = BestRecent([a, b], switch=switch)
    out = []
    for t, (ea, eb) in enumerate(errors):
        a.error, b.error = ea, eb
        best.update(float(t), 1.0)
        out.append(best.name)
    return out


def test_best_recent_switches_only_for_a_clear_gain():
    errors = [(1.0, 0.95), (1.0, 0.7), (0.65, 0.7), (0.5, 0.7)]
    assert _choices(0.0, errors) == ["b", "b", "a", "a"]
    assert _choices(0.2, errors) == ["a", "b", "b", "a"]  # 0.95 and 0.65 are within 20 %; 0.7 and 0.5 are not
    with pytest.raises(ValueError, match="switch"):
        BestRecent([_Scored("a")], switch=1.0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 10), st.floats(0, 10)), min_size=1, max_size=12), st.floats(0, 0.9))
def test_best_recent_keeps_a_choice_within_the_switch_share_of_the_best(errors, switch):
    chosen = _choices(switch, errors)
    for (ea, eb), name in zip(errors, chosen):
        mine, other = (ea, eb) if name == "a" else (eb, ea)
        assert other >= (1.0 - switch) * mine - 1e-12  # never kept when another is clearly better
    for (ea, eb), name in zip(errors, _choices(0.0, errors)):  # without hysteresis: a least-error one (a tie
        assert (ea, eb)[name == "b"] == min(ea, eb)  # keeps the current choice)


def test_make_forecaster_names():
    assert make_forecaster("none", 60.0) is None
    assert isinstance(make_forecaster("auto", 60.0), BestRecent)
    assert make_forecaster("ewma", 60.0, margin_quantile=None).max_margin == 0.0
    with pytest.raises(ValueError, match="unknown forecaster"):
        make_forecaster("arima", 60.0)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1e3, allow_nan=False), min_size=1, max_size=15),
       st.sampled_from(["last", "ewma", "holt-winters", "auto"]))
def test_forecasts_are_finite_and_non_negative(values, kind):
    f = make_forecaster(kind, 90.0)
    feed(f, values)
    out = f.predict()
    assert math.isfinite(out) and out >= 0
    assert out <= 2.0 * max(values) * 1.15 + 1e-9  # a trend never orders more than twice the peak, plus margin


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=20))
def test_at_least_last_never_forecasts_below_the_value_just_seen(values):
    f = make_forecaster("ewma", 90.0, margin_quantile=None, at_least_last=True)
    plain = make_forecaster("ewma", 90.0, margin_quantile=None)
    feed(f, values)
    feed(plain, values)
    assert f.predict() == max(values[-1], plain.predict())


def test_at_least_last_follows_a_rise_a_smoother_lags():
    rise = [10.0] * 10 + [20.0]
    f, plain = (make_forecaster("ewma", 90.0, margin_quantile=None, at_least_last=a) for a in (True, False))
    feed(f, rise)
    feed(plain, rise)
    assert plain.predict() == pytest.approx(10.0 + 10.0 * (1 - 0.5 ** 0.5))  # 30 s of a 60 s half-life
    assert f.predict() == 20.0
