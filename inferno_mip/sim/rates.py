"""Request-rate profiles over time (requests/second inside; YAML speaks requests/minute).

Each profile gives its cumulative intensity Lambda(t) (expected arrivals in [0, t)) exactly, so arrivals are
drawn by inversion: Lambda on a grid of ``resolution`` seconds, Poisson counts per cell, uniform positions in a
cell (exact for rates constant within a cell; ramps and sines are resolved to the grid). Past its end a profile
holds its last rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


class RateProfile:
    """Base: ``rate(t)`` and ``cumulative(t)`` for arrays of times (seconds)."""

    def rate(self, t: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def cumulative(self, t: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def arrivals(self, rng: np.random.Generator, t0: float, t1: float, resolution: float,
                 multiplier=None) -> np.ndarray:
        """Sorted arrival times in [t0, t1). ``multiplier(cell_starts)`` scales each cell's rate (noise)."""
        edges = np.arange(t0, t1, resolution)
        edges = np.append(edges, t1)
        expected = np.diff(self.cumulative(edges))
        if multiplier is not None:
            expected = expected * multiplier(edges[:-1])
        counts = rng.poisson(np.maximum(expected, 0.0))
        starts = np.repeat(edges[:-1], counts)
        widths = np.repeat(np.diff(edges), counts)
        return np.sort(starts + rng.random(len(starts)) * widths)


@dataclass(frozen=True)
class Phases(RateProfile):
    """Consecutive phases: (seconds, rate at the end in req/s, ramp). A ramp goes linearly from the previous
    phase's rate (0 before the first); otherwise the rate steps and holds."""

    durations: tuple[float, ...]
    rates: tuple[float, ...]
    ramps: tuple[bool, ...]

    def _knots(self):
        # Piecewise-linear rate through knots (time, rate); a step is two knots at one time.
        times, values, t, prev = [], [], 0.0, 0.0
        for d, r, ramp in zip(self.durations, self.rates, self.ramps):
            times.append(t)
            values.append(prev if ramp else r)
            t += d
            times.append(t)
            values.append(r)
            prev = r
        return np.array(times), np.array(values)

    def rate(self, t):
        times, values = self._knots()
        t = np.asarray(t, dtype=np.float64)
        # Right-continuous at steps: the last knot at or before t on each segment.
        i = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 1)
        j = np.minimum(i + 1, len(times) - 1)
        span = times[j] - times[i]
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(span > 0, (t - times[i]) / span, 0.0)
        out = values[i] + frac * (values[j] - values[i])
        return np.where(t >= times[-1], values[-1], out)

    def cumulative(self, t):
        times, values = self._knots()
        t = np.asarray(t, dtype=np.float64)
        seg_area = np.diff(times) * (values[:-1] + values[1:]) / 2
        cum = np.concatenate([[0.0], np.cumsum(seg_area)])
        i = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 1)
        j = np.minimum(i + 1, len(times) - 1)
        dt = np.clip(t - times[i], 0.0, None)
        span = times[j] - times[i]
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = np.where(span > 0, (values[j] - values[i]) / span, 0.0)
        inside = cum[i] + dt * values[i] + 0.5 * slope * dt * dt
        after = cum[-1] + (t - times[-1]) * values[-1]
        return np.where(t >= times[-1], after, inside)


@dataclass(frozen=True)
class Diurnal(RateProfile):
    """mean * (1 + amplitude * sin(2 pi (t + shift) / period)), amplitude in [0, 1]."""

    mean: float
    amplitude: float
    period: float
    shift: float = 0.0

    def rate(self, t):
        t = np.asarray(t, dtype=np.float64)
        return self.mean * (1 + self.amplitude * np.sin(2 * math.pi * (t + self.shift) / self.period))

    def cumulative(self, t):
        t = np.asarray(t, dtype=np.float64)
        w = 2 * math.pi / self.period
        return self.mean * (t - self.amplitude / w * (np.cos(w * (t + self.shift)) - math.cos(w * self.shift)))


@dataclass(frozen=True)
class StepRates(RateProfile):
    """Replayed per-interval rates: ``rates[i]`` req/s from ``times[i]`` until the next time (0 before the
    first, the last rate after the last)."""

    times: tuple[float, ...]
    rates: tuple[float, ...]

    def rate(self, t):
        t = np.asarray(t, dtype=np.float64)
        i = np.searchsorted(np.array(self.times), t, side="right") - 1
        return np.where(i >= 0, np.array(self.rates)[np.maximum(i, 0)], 0.0)

    def cumulative(self, t):
        times, rates = np.array(self.times), np.array(self.rates)
        cum = np.concatenate([[0.0], np.cumsum(np.diff(times) * rates[:-1])])
        t = np.asarray(t, dtype=np.float64)
        i = np.searchsorted(times, t, side="right") - 1
        ii = np.maximum(i, 0)
        return np.where(i >= 0, cum[ii] + (t - times[ii]) * rates[ii], 0.0)


@dataclass(frozen=True)
class Timestamps(RateProfile):
    """Replayed arrival times (seconds): exactly these arrivals, nothing random."""

    times: tuple[float, ...]

    def rate(self, t):
        # Arrivals per second over the surrounding minute, for display.
        times = np.array(self.times)
        t = np.asarray(t, dtype=np.float64)
        return (np.searchsorted(times, t + 30.0) - np.searchsorted(times, t - 30.0)) / 60.0

    def cumulative(self, t):
        return np.searchsorted(np.array(self.times), np.asarray(t, dtype=np.float64), side="left").astype(float)

    def arrivals(self, rng, t0, t1, resolution, multiplier=None):
        times = np.array(self.times)
        return times[(times >= t0) & (times < t1)]


class OUNoise:
    """inferno's load-emulator noise: a relative multiplier x, stepped every ``interval`` seconds by
    x <- x + theta (1 - x) + N(0, sigma), floored at 0, starting at 1. Drawn lazily, in order, from ``rng``."""

    def __init__(self, theta: float, sigma: float, interval: float, rng: np.random.Generator):
        self.theta, self.sigma, self.interval, self._rng = theta, sigma, interval, rng
        self._values = [1.0]

    def __call__(self, t: np.ndarray) -> np.ndarray:
        k = np.floor(np.asarray(t, dtype=np.float64) / self.interval).astype(np.int64)
        top = int(k.max(initial=0))
        while len(self._values) <= top:
            x = self._values[-1]
            self._values.append(max(0.0, x + self.theta * (1.0 - x) + self.sigma * float(self._rng.normal())))
        return np.array(self._values)[np.maximum(k, 0)]
