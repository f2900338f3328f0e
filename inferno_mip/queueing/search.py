"""Go's BinarySearch and WithinTolerance (spec §2.1), scalar; sizing.py runs the same search vectorised."""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["within_tolerance", "go_binary_search", "GO_EPSILON", "GO_MAX_ITERATIONS"]

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
