"""Multi-observation estimators: cold-start guess, batch fits, identifiability (condition number), sliding window.

Fits minimise relative residuals ((TTFT_model - TTFT_obs)/TTFT_obs, (ITL_model - ITL_obs)/ITL_obs) over the
observations. ``method="nm"`` is inferno's (scaled adaptive Nelder-Mead, 500 evaluations, MaxFloat64/2
penalty); ``method="lsq"`` (default) is ``scipy.optimize.least_squares`` in ln x with bounds, a robust loss and
weights, multi-started from x0 and the seed.
"""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares, minimize

from .errors import TunerError
from .observation import Observation
from .perfmodel import TUNED_PERF_MODEL, predict

__all__ = ["FALLBACK_STATE", "FitResult", "InitEstimator", "SlidingWindowEstimator", "condition_number",
           "fit", "fit_least_squares", "fit_nelder_mead", "guess_init_state", "objective", "residuals"]

MAX_FLOAT = sys.float_info.max
FALLBACK_STATE = (5.0, 0.05, 5e-4)  # inferno's x0 when no guess is possible
BASE_FACTOR = 0.9  # legacy guess: alpha = 0.9 ITL
MAX_CONDITION_NUMBER = 1000.0
KAPPA_STEP = 1e-3
LSQ_SPAN = np.log(1e4)  # lsq bounds: x0 / 1e4 .. x0 * 1e4


def guess_init_state(obs: Observation | None, seed=None) -> np.ndarray | None:
    """inferno's GuessInitState: zero-load algebra TTFT ~ a + (b+g)L, ITL ~ a + b + g(L + (m+1)/2)."""
    if obs is None:
        return None
    try:
        obs.validate()
    except TunerError:
        return None
    ttft, itl, L, m = obs.ttft, obs.itl, obs.in_tokens, obs.out_tokens
    if min(ttft, itl, L, m) <= 0:
        return None
    if seed is not None and len(seed) == 3 and all(s > 0 for s in seed):
        seed = np.array(seed, dtype=np.float64)
        g = seed[2]
        if L > 1:
            b = (ttft - itl + g * (m + 1) / 2) / (L - 1)
            a = itl - b - g * (L + (m + 1) / 2)
            if a > 0 and b > 0:
                return np.array([a, b, g])
        return seed.copy()
    a = BASE_FACTOR * itl
    s = (ttft - a) / L
    if s < 0:
        return None
    d = L + (m + 1) / 2 - 1
    if d <= 0:
        return None
    g = ((itl - a) - s) / d
    b = s - g
    x = np.array([a, b, g])
    return x if np.all(x > 0) else None


def residuals(x, observations, *, weighted: bool = False, perf_model: str = TUNED_PERF_MODEL) -> np.ndarray:
    """Relative residuals, 2 per observation (NaN where the model fails or an observed value is <= 0)."""
    out = np.empty(2 * len(observations))
    for i, o in enumerate(observations):
        zo = np.array([o.ttft, o.itl])
        zm = predict(x, o, perf_model=perf_model)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where((zo > 0) & (zm > 0), (zm - zo) / zo, np.nan)
        out[2 * i: 2 * i + 2] = r * (np.sqrt(o.weight) if weighted else 1.0)
    return out


def objective(x, observations, perf_model: str = TUNED_PERF_MODEL) -> float:
    """inferno's fit objective: sum of squared relative residuals; MaxFloat64/2 on any failure."""
    x = np.asarray(x, dtype=np.float64)
    if np.any(x <= 0):
        return MAX_FLOAT / 2
    r = residuals(x, observations, perf_model=perf_model)
    return MAX_FLOAT / 2 if not np.all(np.isfinite(r)) else float(r @ r)


@dataclass(frozen=True)
class FitResult:
    x: np.ndarray
    fun: float  # sum of squared relative residuals at x
    ok: bool
    message: str = ""


def fit_nelder_mead(x0, observations, *, max_evals: int = 500, perf_model: str = TUNED_PERF_MODEL) -> FitResult:
    """inferno's fitWithX0: adaptive NM on p (x = p * x0) from p = 1, simplex step 0.05, 500 evaluations."""
    x0 = np.asarray(x0, dtype=np.float64)
    if not observations:
        return FitResult(x0, MAX_FLOAT, False, "no observations")
    n = x0.size
    simplex = np.vstack([np.ones(n), np.ones(n) + 0.05 * np.eye(n)])
    res = minimize(lambda p: objective(p * x0, observations, perf_model), np.ones(n), method="Nelder-Mead",
                   options={"adaptive": True, "initial_simplex": simplex, "maxfev": max_evals,
                            "xatol": 0.0, "fatol": 1e-10, "maxiter": 10 * max_evals})
    x = res.x * x0
    ok = bool(np.all(x > 0) and np.all(np.isfinite(x)) and res.fun < MAX_FLOAT / 4)
    return FitResult(x, float(res.fun), ok, "" if ok else "Nelder-Mead found no valid parameters")


def fit_least_squares(x0, observations, *, seed=None, loss: str = "soft_l1", f_scale: float = 0.05,
                      prior_weight: float = 0.0, perf_model: str = TUNED_PERF_MODEL) -> FitResult:
    """Bounded robust least squares in ln x, weighted by observation weight; multi-start from x0 and seed.

    prior_weight > 0 adds ridge rows prior_weight * (ln x - ln seed) (MAP around the seed): well posed at any
    condition number.
    """
    x0 = np.asarray(x0, dtype=np.float64)
    if not observations:
        return FitResult(x0, MAX_FLOAT, False, "no observations")
    starts = [x0] + ([np.asarray(seed, dtype=np.float64)] if seed is not None else [])
    anchor = np.log(starts[-1])

    def resid(theta):
        r = residuals(np.exp(theta), observations, weighted=True, perf_model=perf_model)
        r = np.where(np.isfinite(r), r, 10.0)  # failures: a large, finite residual
        if prior_weight > 0:
            r = np.concatenate([r, prior_weight * (theta - anchor)])
        return r

    best = None
    for s in starts:
        if s.shape != x0.shape or np.any(s <= 0) or not np.all(np.isfinite(s)):
            continue
        t0 = np.log(s)
        try:
            res = least_squares(resid, t0, bounds=(t0 - LSQ_SPAN, t0 + LSQ_SPAN), loss=loss, f_scale=f_scale,
                                x_scale=1.0, diff_step=1e-6, max_nfev=200)
        except (ValueError, np.linalg.LinAlgError):
            continue
        x = np.exp(res.x)
        fun = objective(x, observations, perf_model)
        if best is None or fun < best.fun:
            best = FitResult(x, fun, fun < MAX_FLOAT / 4, "")
    if best is None or not best.ok:
        return FitResult(x0, MAX_FLOAT, False, "least squares found no valid parameters")
    return best


def fit(x0, observations, method: str = "lsq", seed=None, perf_model: str = TUNED_PERF_MODEL) -> FitResult:
    if method == "nm":
        return fit_nelder_mead(x0, observations, perf_model=perf_model)
    if method == "lsq":
        return fit_least_squares(x0, observations, seed=seed, perf_model=perf_model)
    raise TunerError(f"fit method: expected 'nm' or 'lsq', got {method!r}")


def condition_number(observations, x, perf_model: str = TUNED_PERF_MODEL) -> float:
    """kappa of the relative-residual Jacobian w.r.t. ln x (central differences, step 1e-3); inf if degenerate."""
    x = np.asarray(x, dtype=np.float64)
    if 2 * len(observations) < x.size or np.any(x <= 0):
        return float("inf")
    cols = []
    for k in range(x.size):
        up, dn = x.copy(), x.copy()
        up[k] *= 1 + KAPPA_STEP
        dn[k] *= 1 - KAPPA_STEP
        rp = residuals(up, observations, perf_model=perf_model)
        rm = residuals(dn, observations, perf_model=perf_model)
        if not (np.all(np.isfinite(rp)) and np.all(np.isfinite(rm))):
            return float("inf")
        cols.append((rp - rm) / (2 * KAPPA_STEP))
    try:
        sv = np.linalg.svd(np.column_stack(cols), compute_uv=False)
    except np.linalg.LinAlgError:
        return float("inf")
    return float(sv[0] / sv[-1]) if sv[-1] > 0 and np.isfinite(sv).all() else float("inf")


class InitEstimator:
    """Cold start: collect min_obs observations, then one batch fit with the identifiability guard.

    ``max_obs`` caps the stored list (inferno's grows forever); the newest are kept.
    """

    def __init__(self, min_obs: int = 5, *, hold_back: bool = True, max_condition: float = MAX_CONDITION_NUMBER,
                 seed=None, method: str = "lsq", max_obs: int = 100, perf_model: str = TUNED_PERF_MODEL):
        self.min_obs = max(1, int(min_obs))
        self.perf_model = perf_model
        self.hold_back, self.max_condition, self.method = hold_back, float(max_condition), method
        self.seed = None if seed is None else tuple(float(v) for v in seed)
        self.observations: deque[Observation] = deque(maxlen=max(self.min_obs, int(max_obs)))
        self.fit_done = False
        self.last_fit_value = 0.0
        self.last_condition = 0.0

    def add(self, obs: Observation | None) -> bool:
        """Add a valid observation (invalid ones are ignored, as inferno); True if added."""
        return _append_valid(self.observations, obs)

    @property
    def ready(self) -> bool:
        return len(self.observations) >= self.min_obs

    def fit(self) -> np.ndarray:
        """Fit all observations; on an ill-conditioned fit return the zero-load guess (fit value 0)."""
        obs = list(self.observations)
        if not obs:
            raise TunerError("init fit: no observations")
        x0 = guess_init_state(obs[0], self.seed)
        if x0 is None:
            x0 = np.array(FALLBACK_STATE)
        res = fit(x0, obs, self.method, self.seed, self.perf_model)
        if not res.ok:
            self.last_fit_value = MAX_FLOAT
            g = guess_init_state(obs[0], self.seed)
            if g is None:
                raise TunerError(f"init fit failed ({res.message}) and no guess from the first observation")
            return g
        if self.max_condition > 0:
            self.last_condition = condition_number(obs, res.x, self.perf_model)
            if self.last_condition > self.max_condition:
                g = guess_init_state(obs[0], self.seed)
                if g is None:
                    self.last_fit_value = MAX_FLOAT
                    raise TunerError(f"init fit ill-conditioned (kappa {self.last_condition:.3g}) and no guess")
                self.last_fit_value = 0.0
                self.fit_done = True
                return g
        self.last_fit_value = res.fun
        self.fit_done = True
        return res.x

    def to_dict(self) -> dict:
        return {"min_obs": self.min_obs, "observations": [o.to_dict() for o in self.observations],
                "fit_done": self.fit_done, "last_fit_value": self.last_fit_value,
                "last_condition": self.last_condition}

    def load(self, d: dict) -> InitEstimator:
        self.observations.extend(Observation(**o) for o in d.get("observations", []))
        self.fit_done = bool(d.get("fit_done", False))
        self.last_fit_value = float(d.get("last_fit_value", 0.0))
        self.last_condition = float(d.get("last_condition", 0.0))
        return self


class SlidingWindowEstimator:
    """Refit over the last ``window`` observations each cycle (inferno's SWNM, or lsq by default).

    Outlier pass (threshold > 0): drop the single worst observation if its residual norm exceeds the threshold
    and refit. Condition guard: keep the last good fit (``held``) when the window is ill-conditioned.
    """

    def __init__(self, window: int = 10, min_obs: int = 5, residual_threshold: float = 0.5, *,
                 max_condition: float = MAX_CONDITION_NUMBER, seed=None, method: str = "lsq",
                 perf_model: str = TUNED_PERF_MODEL):
        self.window = max(1, int(window))
        self.perf_model = perf_model
        self.min_obs = min(max(1, int(min_obs)), self.window)
        self.threshold, self.max_condition, self.method = float(residual_threshold), float(max_condition), method
        self.seed = None if seed is None else tuple(float(v) for v in seed)
        self.observations: deque[Observation] = deque(maxlen=self.window)
        self.last_fit: np.ndarray | None = None
        self.held = False
        self.last_condition = 0.0

    def add(self, obs: Observation | None) -> bool:
        """Add a valid observation (invalid ones are ignored, as inferno); True if added."""
        return _append_valid(self.observations, obs)

    def seed_observations(self, observations) -> None:
        for o in observations:
            self.add(o)

    def seed_last_fit(self, x) -> None:
        self.last_fit = np.array(x, dtype=np.float64)

    @property
    def ready(self) -> bool:
        return len(self.observations) >= self.min_obs

    def fit(self) -> np.ndarray:
        self.held = False
        obs = list(self.observations)
        if not obs:
            raise TunerError("sliding-window fit: window is empty")
        x0 = self.last_fit.copy() if self.last_fit is not None else guess_init_state(obs[-1], self.seed)
        if x0 is None:
            x0 = np.array(FALLBACK_STATE)
        res = fit(x0, obs, self.method, self.seed, self.perf_model)
        if not res.ok:
            g = guess_init_state(obs[-1], self.seed)
            if g is None:
                raise TunerError(f"sliding-window fit failed ({res.message}) and no guess from the last observation")
            fitted = g
        else:
            fitted = res.x
        used = obs
        if self.threshold > 0 and len(obs) > 1:
            rho = []
            for o in obs:
                r = residuals(fitted, [o], perf_model=self.perf_model)
                rho.append(float(np.hypot(*r)) if np.all(np.isfinite(r)) else MAX_FLOAT)
            worst = int(np.argmax(rho))
            if rho[worst] > self.threshold:
                used = obs[:worst] + obs[worst + 1:]
                res2 = fit(fitted, used, self.method, self.seed, self.perf_model)
                if res2.ok:
                    fitted = res2.x
        if self.max_condition > 0:
            self.last_condition = condition_number(used, fitted, self.perf_model)
            if self.last_condition > self.max_condition:
                if self.last_fit is not None:
                    self.held = True
                    return self.last_fit.copy()
                g = guess_init_state(obs[-1], self.seed)
                if g is None:
                    raise TunerError(f"sliding-window fit ill-conditioned (kappa {self.last_condition:.3g}), no guess")
                self.last_fit = g
                return g.copy()
        self.last_fit = np.array(fitted, dtype=np.float64)
        return self.last_fit.copy()

    def to_dict(self) -> dict:
        return {"observations": [o.to_dict() for o in self.observations],
                "last_fit": None if self.last_fit is None else self.last_fit.tolist(), "held": self.held}

    def load(self, d: dict) -> SlidingWindowEstimator:
        self.observations.extend(Observation(**o) for o in d.get("observations", []))
        lf = d.get("last_fit")
        self.last_fit = None if lf is None else np.array(lf, dtype=np.float64)
        self.held = bool(d.get("held", False))
        return self


def _append_valid(window: deque, obs: Observation | None) -> bool:
    """Append `obs` to `window` if it is a valid observation; True if appended."""
    if obs is None:
        return False
    try:
        obs.validate()
    except TunerError:
        return False
    window.append(obs)
    return True
