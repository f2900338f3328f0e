"""Load forecasts one reaction time ahead (control period + start-up delay), with a safety margin.

A :class:`Forecaster` sees one series (a server's offered rate, req/s) one point at a time and predicts its value
``horizon`` seconds after the last point. Implementations: :class:`LastValue`, :class:`Ewma`, :class:`HoltWinters`
(statsmodels' exponential smoothing, damped additive trend, optional season). :class:`Margined` adds the recent
forecast-error quantile to any of them; :class:`BestRecent` runs several side by side and answers with the one
whose forecasts for the points that have since arrived erred least.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

FORECASTERS = ("last", "ewma", "holt-winters", "auto")


class Forecaster(Protocol):
    def update(self, time: float, value: float) -> None:
        """Add one observation (seconds, value); times must increase."""
        ...

    def predict(self, horizon: float) -> float:
        """The value `horizon` seconds after the last observation (NaN before the first)."""
        ...


class LastValue:
    """Tomorrow is today: the last value seen."""

    name = "last"

    def __init__(self):
        self.last = math.nan

    def update(self, time: float, value: float) -> None:
        self.last = float(value)

    def predict(self, horizon: float) -> float:
        return self.last


class Ewma:
    """Exponentially weighted moving average with a half-life in seconds (irregular spacing handled)."""

    name = "ewma"

    def __init__(self, half_life: float = 60.0):
        if not half_life > 0:
            raise ValueError(f"half_life: must be > 0, got {half_life!r}")
        self.half_life = float(half_life)
        self.level = math.nan
        self.time = math.nan

    def update(self, time: float, value: float) -> None:
        if math.isnan(self.level):
            self.level, self.time = float(value), float(time)
            return
        weight = 1.0 - 0.5 ** (max(time - self.time, 0.0) / self.half_life)
        self.level += weight * (float(value) - self.level)
        self.time = float(time)

    def predict(self, horizon: float) -> float:
        return self.level


class HoltWinters:
    """Holt's damped additive trend (plus an additive season when ``season`` points are given) on the last
    ``window`` points, by statsmodels; the last value until ``min_points`` have arrived or when a fit fails.
    The smoothing parameters are re-estimated every ``refit_every`` points (an optimised fit costs ~100x a
    fixed-parameter one) and reused in between. Points are taken as equally spaced (the control period); the
    horizon is rounded up to whole steps."""

    name = "holt-winters"

    def __init__(self, window: int = 40, min_points: int = 6, season: int = 0, refit_every: int = 10):
        self.window, self.min_points, self.season = int(window), int(min_points), int(season)
        self.refit_every = max(1, int(refit_every))
        self.values: deque[float] = deque(maxlen=max(self.window, 2 * self.season + 2))
        self.times: deque[float] = deque(maxlen=2)
        self.smoothing: dict[str, float] | None = None
        self.since_fit = 0
        self.failed = ""  # why the last fit fell back to the last value

    def update(self, time: float, value: float) -> None:
        self.values.append(float(value))
        self.times.append(float(time))
        self.since_fit += 1

    def predict(self, horizon: float) -> float:
        if not self.values:
            return math.nan
        y = np.array(self.values, dtype=np.float64)
        if len(y) < self.min_points or np.ptp(y) == 0:
            return float(y[-1])
        step = self.times[-1] - self.times[0] if len(self.times) == 2 else 0.0
        steps = max(1, math.ceil(horizon / step - 1e-9)) if step > 0 else 1
        try:
            value = self._forecast(y, steps)
        except Exception as exc:  # statsmodels raises many kinds on degenerate series; the last value is safe
            self.failed, self.smoothing = f"{type(exc).__name__}: {exc}", None
            return float(y[-1])
        self.failed = ""
        if not math.isfinite(value):
            return float(y[-1])
        # a fit gone wild must not order capacity: at most twice the largest value of the window
        return min(max(value, 0.0), 2.0 * float(y.max()))

    def _forecast(self, y: np.ndarray, steps: int) -> float:
        import warnings

        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        seasonal = "add" if self.season > 1 and len(y) >= 2 * self.season + 2 else None
        model = ExponentialSmoothing(y, trend="add", damped_trend=True, seasonal=seasonal,
                                     seasonal_periods=self.season if seasonal else None,
                                     initialization_method="estimated")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reuse = (self.smoothing is not None and self.since_fit < self.refit_every
                     and ("smoothing_seasonal" in self.smoothing) == bool(seasonal))
            if reuse:
                fit = model.fit(optimized=False, **self.smoothing)
            else:
                fit = model.fit()
                keys = ("smoothing_level", "smoothing_trend", "damping_trend") + (
                    ("smoothing_seasonal",) if seasonal else ())
                self.smoothing = {k: float(fit.params[k]) for k in keys}
                self.since_fit = 0
            return float(fit.forecast(steps)[-1])


@dataclass
class _Pending:
    target_time: float
    value: float


class ErrorTracker:
    """Forecasts waiting for their target time, and the relative errors of those resolved (newest last)."""

    def __init__(self, keep: int = 30, tolerance: float = 1.0):
        self.pending: deque[_Pending] = deque()
        self.errors: deque[float] = deque(maxlen=keep)  # (actual - forecast) / max(forecast, floor)
        self.tolerance = tolerance  # seconds: an observation this close before the target resolves it

    def expect(self, target_time: float, value: float) -> None:
        if math.isfinite(value):
            self.pending.append(_Pending(target_time, value))

    def observe(self, time: float, value: float, floor: float) -> None:
        while self.pending and self.pending[0].target_time <= time + self.tolerance:
            p = self.pending.popleft()
            self.errors.append((value - p.value) / max(abs(p.value), floor))

    def quantile(self, q: float) -> float:
        return float(np.quantile(np.array(self.errors), q)) if self.errors else 0.0

    def mean_abs(self) -> float:
        return float(np.mean(np.abs(np.array(self.errors)))) if self.errors else math.inf


class Margined:
    """A forecaster plus a safety margin: its relative under-forecast at quantile ``q`` over the last ``keep``
    resolved forecasts (never negative, at most ``max_margin``), times the forecast. The forecast itself is kept
    within [value just seen, (1 + ``level_shift``) x it] when those bounds are switched on."""

    def __init__(self, inner: Forecaster, horizon: float, q: float = 0.9, keep: int = 12, max_margin: float = 1.0,
                 floor: float = 1e-3, at_least_last: bool = False, level_shift: float = 0.0):
        self.inner, self.horizon, self.q, self.max_margin, self.floor = inner, float(horizon), q, max_margin, floor
        self.at_least_last = at_least_last  # never forecast below the value just seen (load that is already here)
        self.level_shift = level_shift  # never forecast above (1 + this) x the value just seen (0: no bound)
        self.tracker = ErrorTracker(keep)
        self.name = getattr(inner, "name", type(inner).__name__)
        self.last_time = math.nan
        self.raw = math.nan
        self.margin = 0.0

    def update(self, time: float, value: float) -> None:
        self.tracker.observe(time, value, self.floor)
        self.inner.update(time, value)
        self.last_time = time
        self.raw = self.inner.predict(self.horizon)
        if self.at_least_last and math.isfinite(self.raw):
            self.raw = max(self.raw, float(value))
        if self.level_shift > 0 and math.isfinite(self.raw):
            # a value this far under the forecast is the load leaving its level, which a smoother follows only
            # over its half-life (a fall is no trend to extrapolate)
            self.raw = min(self.raw, (1.0 + self.level_shift) * float(value))
        self.tracker.expect(time + self.horizon, self.raw)

    def predict(self, horizon: float | None = None) -> float:
        raw = self.raw if horizon is None or horizon == self.horizon else self.inner.predict(horizon)
        self.margin = min(max(self.tracker.quantile(self.q), 0.0), self.max_margin)
        return max(raw, 0.0) * (1.0 + self.margin)


class BestRecent:
    """Several margined forecasters side by side; the answer is the one with the smallest mean absolute relative
    error over its resolved forecasts (ties and the start go to the first listed). With ``switch`` > 0 the chosen
    one is kept until another errs less by more than that share of its error: forecasters whose errors are close
    would otherwise alternate from cycle to cycle, and their forecasts (a trend extrapolated or not) differ by
    more than the errors that chose them."""

    def __init__(self, forecasters: list[Margined], switch: float = 0.0):
        if not forecasters:
            raise ValueError("BestRecent needs at least one forecaster")
        if not 0.0 <= switch < 1.0:
            raise ValueError(f"switch: must be in [0, 1), got {switch!r}")
        self.forecasters = forecasters
        self.chosen = forecasters[0]
        self.switch = float(switch)

    @property
    def name(self) -> str:
        return self.chosen.name

    @property
    def margin(self) -> float:
        return self.chosen.margin

    @property
    def raw(self) -> float:
        return self.chosen.raw

    def update(self, time: float, value: float) -> None:
        for f in self.forecasters:
            f.update(time, value)
        scores = [f.tracker.mean_abs() for f in self.forecasters]
        if not any(math.isfinite(s) for s in scores):
            self.chosen = self.forecasters[0]
            return
        best = self.forecasters[int(np.argmin(scores))]
        current = scores[self.forecasters.index(self.chosen)]
        if not math.isfinite(current) or min(scores) < (1.0 - self.switch) * current:
            self.chosen = best

    def predict(self, horizon: float | None = None) -> float:
        return self.chosen.predict(horizon)


def make_forecaster(kind: str, horizon: float, *, margin_quantile: float | None = 0.9, max_margin: float = 0.15,
                    half_life: float = 60.0, season: int = 0, at_least_last: bool = False,
                    level_shift: float = 0.0, switch: float = 0.0) -> Margined | BestRecent | None:
    """A forecaster by name (``none`` gives None: use the observed value); ``margin_quantile`` None: no margin;
    ``at_least_last``: no forecast below the last observed value (a smoother lags a rise by its half-life);
    ``level_shift``: no forecast above (1 + this) x the last observed value (0: no bound); ``switch``: the
    hysteresis of ``auto``'s choice (:class:`BestRecent`)."""
    if kind == "none":
        return None
    q = margin_quantile if margin_quantile is not None else 0.0
    max_margin = max_margin if margin_quantile is not None else 0.0
    builders = {"last": LastValue, "ewma": lambda: Ewma(half_life), "holt-winters": lambda: HoltWinters(season=season)}
    if kind == "auto":
        return BestRecent([Margined(builders[k](), horizon, q, max_margin=max_margin, at_least_last=at_least_last,
                                    level_shift=level_shift) for k in builders], switch)
    if kind not in builders:
        raise ValueError(f"unknown forecaster {kind!r}; known: none, {', '.join(FORECASTERS)}")
    return Margined(builders[kind](), horizon, q, max_margin=max_margin, at_least_last=at_least_last,
                    level_shift=level_shift)
