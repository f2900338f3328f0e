"""A generic Extended Kalman Filter (n states, m observations, any h(x) -> z), as inferno's kalman-filter.

Differences from inferno, each switchable: ``log_space`` filters theta = ln x (positivity for free, scale-free
Jacobian); ``joseph`` uses the Joseph-form covariance update with re-symmetrisation (inferno: P <- (I-KH)P);
S is factorised, never inverted explicitly. A non-finite h(x) raises InvalidObservation (inferno returns zeros).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve

from .errors import InvalidObservation, TunerError

__all__ = ["ExtendedKalmanFilter", "Innovation", "numerical_jacobian", "limit", "JACOBIAN_DELTA"]

JACOBIAN_DELTA = 0.01  # inferno's config.Delta
Func = Callable[[np.ndarray], np.ndarray]


def numerical_jacobian(func: Func, x, delta: float = JACOBIAN_DELTA, *, relative: bool = True,
                       vectorized: bool = False, fx: np.ndarray | None = None) -> np.ndarray:
    """Central-difference Jacobian, inferno's rule: eps_j = delta*|x_j| (delta if x_j = 0), or delta if not relative.

    With ``vectorized=True`` func takes a (2n, n) array of points and returns (2n, m) in one call.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    eps = np.where(x == 0, delta, delta * np.abs(x)) if relative else np.full(n, float(delta))
    steps = np.diag(eps)
    pts = np.concatenate([x + steps, x - steps])  # rows 0..n-1: +, n..2n-1: -
    if vectorized:
        vals = np.asarray(func(pts), dtype=np.float64)
    else:
        vals = np.array([np.asarray(func(p), dtype=np.float64) for p in pts])
    if vals.ndim != 2 or vals.shape[0] != 2 * n:
        raise TunerError(f"jacobian: function returned shape {vals.shape}, expected (2n={2 * n}, m)")
    return ((vals[:n] - vals[n:]) / (2.0 * eps[:, None])).T


def limit(x, lo, hi) -> np.ndarray:
    """State limiter: min(max(x, lo), hi) element-wise."""
    return np.minimum(np.maximum(np.asarray(x, dtype=np.float64), lo), hi)


@dataclass(frozen=True)
class Innovation:
    """Result of one update: innovation y = z - h(x), its covariance S, NIS = y' S^-1 y and the prediction h(x)."""

    y: np.ndarray
    S: np.ndarray
    nis: float
    predicted: np.ndarray


def _matrix(name: str, a, shape: tuple[int, int]) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    if a.shape != shape:
        raise TunerError(f"{name}: expected shape {shape}, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise TunerError(f"{name}: has non-finite entries")
    return a


class ExtendedKalmanFilter:
    """EKF with random-walk or custom transition f, numerical Jacobians and an optional state limiter.

    ``x`` is always in natural units; with ``log_space`` the filter state (``state``), P, Q, bounds' use and the
    Jacobian step are in theta = ln x, and x must stay > 0.
    """

    def __init__(self, x0, P0=None, *, h: Func | None = None, m: int | None = None, f: Func | None = None,
                 bounds: tuple | None = None, log_space: bool = False, joseph: bool = True,
                 delta: float = JACOBIAN_DELTA, vectorized: bool = False, iterations: int = 1):
        x0 = np.array(x0, dtype=np.float64).ravel()
        if x0.size == 0 or not np.all(np.isfinite(x0)):
            raise TunerError(f"x0: expected a non-empty finite vector, got {x0!r}")
        if log_space and np.any(x0 <= 0):
            raise TunerError(f"x0: log-space filtering needs x0 > 0, got {x0.tolist()}")
        self.n = x0.size
        self.log_space, self.joseph, self.delta, self.vectorized = log_space, joseph, float(delta), vectorized
        if int(iterations) < 1:
            raise TunerError(f"iterations: must be >= 1, got {iterations!r}")
        self.iterations = int(iterations)  # > 1: iterated EKF (Gauss-Newton on the MAP objective)
        self._s = np.log(x0) if log_space else x0.copy()
        self.P = np.eye(self.n) if P0 is None else _matrix("P0", P0, (self.n, self.n))
        self._f = f
        self._lo = self._hi = None
        if f is not None:
            self._check(f, self.n, "f")
        self._h, self.m = None, m
        if h is not None:
            self.set_h(h)
        if bounds is not None:
            self.set_bounds(*bounds)

    # -- state ---------------------------------------------------------------------------------
    @property
    def x(self) -> np.ndarray:
        """Current state in natural units (a copy)."""
        return np.exp(self._s) if self.log_space else self._s.copy()

    @property
    def state(self) -> np.ndarray:
        """Internal filter state (ln x in log space); the live array."""
        return self._s

    def to_state(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return np.log(x) if self.log_space else x

    def from_state(self, s) -> np.ndarray:
        return np.exp(s) if self.log_space else np.asarray(s, dtype=np.float64)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        return self._s.copy(), self.P.copy()

    def restore(self, snap: tuple[np.ndarray, np.ndarray]) -> None:
        self._s, self.P = snap[0].copy(), snap[1].copy()

    def set_bounds(self, lo, hi) -> None:
        """Install the limiter (natural units) and clamp the current state, as inferno."""
        lo = np.asarray(lo, dtype=np.float64).ravel()
        hi = np.asarray(hi, dtype=np.float64).ravel()
        if lo.size != self.n or hi.size != self.n:
            raise TunerError(f"bounds: expected {self.n} min and max values, got {lo.size} and {hi.size}")
        bad = np.flatnonzero(lo > hi)
        if bad.size:
            i = int(bad[0])
            raise TunerError(f"bounds: min[{i}] = {lo[i]!r} > max[{i}] = {hi[i]!r}")
        if self.log_space:
            with np.errstate(divide="ignore"):
                lo, hi = np.log(np.maximum(lo, 0.0)), np.log(hi)
        self._lo, self._hi = lo, hi
        self._limit()

    def _limit(self) -> None:
        if self._lo is not None:
            self._s = limit(self._s, self._lo, self._hi)

    def _check(self, func: Func, m: int | None, name: str) -> int:
        out = np.asarray(func(self.x), dtype=np.float64).ravel()
        if m is not None and out.size != m:
            raise TunerError(f"{name}(x) returned {out.size} values, expected {m}")
        return out.size

    def set_h(self, h: Func) -> None:
        """Install the observation function; checks its output size once (as inferno's SethH)."""
        self.m = self._check(h, self.m, "h")
        self._h = h

    # -- internal-space functions -------------------------------------------------------------------
    def _h_state(self, h: Func) -> Func:
        def hs(s: np.ndarray) -> np.ndarray:
            if self.vectorized and s.ndim == 2:
                return np.asarray(h(self.from_state(s)), dtype=np.float64)
            return np.asarray(h(self.from_state(s)), dtype=np.float64).ravel()
        return hs

    def _jac(self, func: Func, s: np.ndarray) -> np.ndarray:
        # natural space: inferno's relative step; log space: an absolute step in ln x (= relative in x)
        return numerical_jacobian(func, s, self.delta, relative=not self.log_space, vectorized=self.vectorized)

    # -- predict / update ---------------------------------------------------------------------------
    def predict(self, Q) -> None:
        """x <- f(x) (identity by default), limiter, P <- F P F' + Q."""
        Q = _matrix("Q", Q, (self.n, self.n))
        if self._f is None:
            self._s = self._s.copy()
            F = np.eye(self.n)
        else:
            fs = lambda s: np.asarray(self._f(self.from_state(s)), dtype=np.float64).ravel()  # noqa: E731
            F = numerical_jacobian(lambda s: self.to_state(fs(s)), self._s, self.delta, relative=not self.log_space)
            self._s = self.to_state(fs(self._s))
        self._limit()
        self.P = F @ self.P @ F.T + Q

    def innovation(self, z, R, h: Func | None = None) -> tuple[Innovation, np.ndarray]:
        """y, S, NIS and H at the current state, without changing it."""
        h = h or self._h
        if h is None:
            raise TunerError("update: no observation function h installed")
        z = np.asarray(z, dtype=np.float64).ravel()
        m = z.size
        R = _matrix("R", R, (m, m))
        hs = self._h_state(h)
        pred = hs(self._s)
        if pred.size != m:
            raise TunerError(f"h(x) returned {pred.size} values, expected {m}")
        if not np.all(np.isfinite(pred)):
            raise InvalidObservation(f"h(x) is not finite at x = {self.x.tolist()}: {pred.tolist()}")
        if not np.all(np.isfinite(z)):
            raise InvalidObservation(f"observation z is not finite: {z.tolist()}")
        H = self._jac(hs, self._s)
        if not np.all(np.isfinite(H)):
            raise InvalidObservation(f"Jacobian of h is not finite at x = {self.x.tolist()}")
        y = z - pred
        S = H @ self.P @ H.T + R
        S = 0.5 * (S + S.T)
        try:
            c = cho_factor(S)
        except LinAlgError:
            raise TunerError(f"innovation covariance S is not positive definite: {S.tolist()}") from None
        nis = float(y @ cho_solve(c, y))
        return Innovation(y=y, S=S, nis=nis, predicted=pred), H

    def update(self, z, R, h: Func | None = None) -> Innovation:
        """One measurement update: x <- x + K y (limiter), P <- Joseph (or inferno's (I-KH)P).

        With iterations > 1 the update is iterated (IEKF): relinearise at the new estimate until it settles.
        The returned innovation, S and NIS are the prior ones (for gating).
        """
        inn, H = self.innovation(z, R, h)
        R = np.asarray(R, dtype=np.float64)
        hs = self._h_state(h or self._h)
        z = np.asarray(z, dtype=np.float64).ravel()
        prior = self._s.copy()
        s, y, S = prior, inn.y, inn.S
        for it in range(self.iterations):
            try:
                K = cho_solve(cho_factor(S), (self.P @ H.T).T).T  # K = P H' S^-1
            except LinAlgError:
                raise TunerError(f"innovation covariance S is not positive definite: {S.tolist()}") from None
            s_new = prior + K @ (y - H @ (prior - s))
            if self._lo is not None:
                s_new = limit(s_new, self._lo, self._hi)
            if it + 1 == self.iterations or np.max(np.abs(s_new - s)) < 1e-9 * (1 + np.max(np.abs(s))):
                s = s_new
                break
            pred = hs(s_new)
            Hn = self._jac(hs, s_new)
            if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(Hn))):
                s = s_new
                break
            s, H, y = s_new, Hn, z - pred
            S = H @ self.P @ H.T + R
            S = 0.5 * (S + S.T)
        self._s = s
        ikh = np.eye(self.n) - K @ H
        if self.joseph:
            P = ikh @ self.P @ ikh.T + K @ R @ K.T
            self.P = 0.5 * (P + P.T)
        else:
            self.P = ikh @ self.P
        return inn
