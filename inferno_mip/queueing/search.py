"""Rate searches: Go's BinarySearch (compat) and a bracketing root finder (default)."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy.optimize import brentq

__all__ = ["within_tolerance", "go_binary_search", "first_crossing"]

GO_EPSILON = 1e-6
GO_MAX_ITERATIONS = 100


def within_tolerance(x: float, v: float, tol: float = GO_EPSILON, *, buggy: bool = False) -> bool:
    """Go utils.WithinTolerance; buggy=True is v0.1.0's |x - v/v| <= tol (B10)."""
    if x == v:
        return True
    if v == 0:
        return False
    return abs(x - v / v) <= tol if buggy else abs((x - v) / v) <= tol


def go_binary_search(
    f: Callable[[float], float],
    x_min: float,
    x_max: float,
    y_target: float,
    *,
    buggy_tolerance: bool = False,
    float32: bool = True,
) -> tuple[float, int]:
    """Go utils.BinarySearch (spec §2.1): returns (x, ind), ind -1 below / +1 above region / 0 inside.

    Direction is inferred from the end points only (B3). float32=True keeps x in float32 like Go;
    once the bracket stops changing every later iteration repeats, so the loop stops there
    (same result as running all 100 iterations).
    """
    if x_min > x_max:
        raise ValueError(f"BinarySearch: x_min {x_min} > x_max {x_max}")
    rnd = (lambda v: float(np.float32(v))) if float32 else float
    lo, hi = rnd(x_min), rnd(x_max)
    y0 = f(lo)
    if within_tolerance(y0, y_target, buggy=buggy_tolerance):
        return lo, 0
    y1 = f(hi)
    if within_tolerance(y1, y_target, buggy=buggy_tolerance):
        return hi, 0
    increasing = y0 < y1
    if (increasing and y_target < y0) or (not increasing and y_target > y0):
        return lo, -1
    if (increasing and y_target > y1) or (not increasing and y_target < y1):
        return hi, 1
    x = lo
    for _ in range(GO_MAX_ITERATIONS):
        x = rnd((lo + hi) / 2.0)
        y = f(x)
        if within_tolerance(y, y_target, buggy=buggy_tolerance):
            break
        new = (lo, x) if (increasing and y_target < y) or (not increasing and y_target > y) else (x, hi)
        if new == (lo, hi):
            break
        lo, hi = new
    return x, 0


def first_crossing(
    xs: np.ndarray,
    vals: np.ndarray,
    metric_scalar: Callable[[float], float],
    target: float,
    *,
    xtol: float = 1e-10,
) -> float | None:
    """Largest x in [xs[0], xs[-1]] with metric <= target on [xs[0], x] (up to grid resolution).

    xs: increasing grid of rates, vals: the metric on it. Returns None if metric(xs[0]) > target
    (infeasible). No direction is guessed (B3): if no grid value exceeds the target, returns
    xs[-1]. Otherwise brentq on log x inside the first bracket, then steps down so that
    metric_scalar(x) <= target holds exactly for the returned x.
    """
    above = ~(vals <= target)
    if not above.any():
        return float(xs[-1])
    i = int(np.argmax(above))
    while True:  # the scalar and vector evaluations may differ in the last ulp: re-check
        if i == 0:
            return float(xs[0]) if metric_scalar(float(xs[0])) <= target else None
        a, b = float(xs[i - 1]), float(xs[i])
        if metric_scalar(a) <= target:
            break
        i -= 1
    if metric_scalar(b) <= target:
        return b
    ua, ub = math.log(a), math.log(b)

    def g(u: float) -> float:
        x = a if u == ua else b if u == ub else math.exp(u)
        return metric_scalar(x) - target

    u = brentq(g, ua, ub, xtol=xtol, rtol=4 * np.finfo(float).eps)
    step = xtol
    while g(u) > 0:
        u -= step
        step *= 2.0
        if u <= ua:
            return a
    return max(a, math.exp(u))
