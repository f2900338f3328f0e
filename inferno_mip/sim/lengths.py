"""Token-length distributions of requests (input or output), sampled as integers >= 1."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from .errors import SimulationError

KINDS = ("fixed", "geometric", "lognormal", "trace")


@dataclass(frozen=True)
class LengthDist:
    """A distribution of token counts per request.

    ``fixed``: every request has ``mean`` tokens (rounded). ``geometric``: support 1, 2, ... with the given mean
    (coefficient of variation sqrt(1 - 1/mean)). ``lognormal``: the given mean and coefficient of variation before
    rounding to an integer >= 1. ``trace``: drawn uniformly, with replacement, from the given values.
    """

    kind: str
    mean: float
    cv: float = 0.0
    values: tuple[int, ...] = field(default=(), repr=False)

    @staticmethod
    def fixed(value: float) -> LengthDist:
        _check_mean("fixed", value)
        return LengthDist("fixed", float(max(1, round(value))))

    @staticmethod
    def geometric(mean: float) -> LengthDist:
        _check_mean("geometric", mean)
        return LengthDist("geometric", float(mean), math.sqrt(1.0 - 1.0 / mean))

    @staticmethod
    def lognormal(mean: float, cv: float) -> LengthDist:
        _check_mean("lognormal", mean)
        if not (isinstance(cv, numbers.Real) and math.isfinite(cv) and cv >= 0):
            raise SimulationError(f"lognormal cv must be a finite number >= 0, got {cv!r}")
        if cv == 0:
            return LengthDist.fixed(mean)
        return LengthDist("lognormal", float(mean), float(cv))

    @staticmethod
    def trace(values) -> LengthDist:
        arr = np.asarray(list(values), dtype=np.float64)
        if arr.size == 0:
            raise SimulationError("trace of token lengths is empty")
        if not np.all(np.isfinite(arr)) or np.any(arr < 1):
            bad = arr[~np.isfinite(arr) | (arr < 1)][0]
            raise SimulationError(f"trace token lengths must be finite and >= 1, got {bad!r}")
        ints = tuple(int(v) for v in np.rint(arr))
        mean = float(np.mean(ints))
        return LengthDist("trace", mean, float(np.std(ints) / mean), ints)

    @staticmethod
    def from_mean_cv(mean: float, cv: float = 0.0, kind: str | None = None) -> LengthDist:
        """``kind`` fixed/geometric/lognormal; by default fixed when cv is 0, else lognormal."""
        kind = kind or ("fixed" if not cv else "lognormal")
        if kind == "fixed":
            return LengthDist.fixed(mean)
        if kind == "geometric":
            return LengthDist.geometric(mean)
        if kind == "lognormal":
            return LengthDist.lognormal(mean, cv)
        raise SimulationError(f"unknown length distribution {kind!r} (one of fixed, geometric, lognormal, trace)")

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` integer token counts (int64, each >= 1)."""
        if self.kind == "fixed":
            return np.full(size, int(self.mean), dtype=np.int64)
        if self.kind == "geometric":
            return rng.geometric(1.0 / self.mean, size).astype(np.int64)
        if self.kind == "lognormal":
            sigma2 = math.log1p(self.cv * self.cv)
            x = rng.lognormal(math.log(self.mean) - sigma2 / 2, math.sqrt(sigma2), size)
            return np.maximum(1, np.rint(x)).astype(np.int64)
        return np.asarray(self.values, dtype=np.int64)[rng.integers(0, len(self.values), size)]

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"fixed {self.mean:g}"
        if self.kind == "geometric":
            return f"geometric mean {self.mean:g}"
        return f"{self.kind} mean {self.mean:g} cv {self.cv:.3g}"


def _check_mean(kind: str, mean: float) -> None:
    if not (isinstance(mean, numbers.Real) and not isinstance(mean, bool) and math.isfinite(mean) and mean >= 1):
        raise SimulationError(f"{kind} token length mean must be a finite number >= 1, got {mean!r}")
