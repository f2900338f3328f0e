"""The perf-model tuner: an EKF on (alpha, beta, gamma) [or (alpha, beta) for decode] observing (TTFT, ITL).

``step`` is inferno's RunWithValidation (predict, update, positivity and NIS gates with rollback); ``run`` is
its ungated Run. TunerOptions switches each improvement over inferno; ``TunerOptions.reference()`` turns all off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import FilterConfig
from .ekf import ExtendedKalmanFilter
from .errors import InvalidObservation, TunerError
from .observation import DECODE, PREFILL_DECODE, Observation
from .perfmodel import PARAM_NAMES, REFERENCE_PERF_MODEL, TUNED_PERF_MODEL, observation_function, state_size

__all__ = ["MAX_NIS", "StepResult", "PerfTuner", "TunerOptions"]

MAX_NIS = 7.378  # chi-square, 2 dof, 97.5%
R_FLOOR_MS = 1e-3  # relative R: floor |z| at 1 us so R stays positive definite


@dataclass(frozen=True)
class TunerOptions:
    """Switches; defaults are the improved filter, ``reference()`` is inferno's."""

    log_space: bool = True  # filter theta = ln x: positivity for free
    relative_noise: bool = True  # R = c * z_observed^2 instead of c * expectedObservations^2
    joseph: bool = True  # Joseph-form P update (inferno: (I-KH)P)
    reject_unevaluable: bool = True  # h cannot be evaluated -> reject with a reason (inferno: h = [0, 0])
    nis_threshold: float = MAX_NIS  # NIS gate (0 disables)
    lockout_after: int = 3  # consecutive NIS rejections before recovery (0: never, inferno)
    lockout_recovery: str = "refit"  # "refit": fit the rejected + current observations; "inflate": P *= inflation
    lockout_inflation: float = 100.0  # "inflate" recovery (and after a refit, P <- inflation * Q)
    iterations: int = 3  # > 1: iterated EKF update (inferno: 1)
    drop_uninformative: bool = True  # decode with max_queue 0: wait is identically 0, observe ITL only
    process_scale: float = 1.0  # multiplies Q
    initial_scale: float = 1.0  # multiplies P0 (= Q, as inferno)
    use_bounds: bool = True  # config bounds (if boundedState)
    perf_model: str = TUNED_PERF_MODEL  # the perf model h(x) evaluates (inferno: "new")

    @classmethod
    def reference(cls, **kw) -> TunerOptions:
        base = dict(log_space=False, relative_noise=False, joseph=False, reject_unevaluable=False,
                    lockout_after=0, drop_uninformative=False, iterations=1, perf_model=REFERENCE_PERF_MODEL)
        return cls(**{**base, **kw})


@dataclass(frozen=True)
class StepResult:
    """Outcome of one tuner step; on rejection x is the previous (restored) state and reason says why."""

    accepted: bool
    x: tuple[float, ...]
    reason: str = ""
    innovation: tuple[float, ...] = ()
    predicted: tuple[float, ...] = ()
    observed: tuple[float, ...] = ()
    nis: float = 0.0
    recovered: bool = False  # this update was the lock-out recovery
    covariance: tuple = field(default=(), repr=False)

    def params(self) -> dict[str, float]:
        return dict(zip(PARAM_NAMES, self.x))


class PerfTuner:
    """EKF over perf-model parameters with inferno's gates and the switchable improvements of TunerOptions."""

    def __init__(self, config: FilterConfig, *, kind: str = PREFILL_DECODE, options: TunerOptions | None = None,
                 x0=None, P0=None, bounds=None):
        if kind not in (PREFILL_DECODE, DECODE):
            raise TunerError(f"kind: expected {PREFILL_DECODE!r} or {DECODE!r}, got {kind!r}")
        self.config, self.kind = config, kind
        self.options = opt = options or TunerOptions()
        n = state_size(kind)
        if config.n != n:
            raise TunerError(f"{config.source}: initState has {config.n} values, the {kind} model needs {n}")
        if config.m != 2:
            raise TunerError(f"{config.source}: expectedObservations has {config.m} values, expected 2")
        x0 = np.array(config.init_state if x0 is None else x0, dtype=np.float64)
        if x0.shape != (n,) or not np.all(np.isfinite(x0)) or np.any(x0 <= 0):
            raise TunerError(f"x0: expected {n} finite values > 0, got {x0.tolist()}")
        if opt.log_space:
            self.Q = config.log_process_noise() * opt.process_scale
        else:
            self.Q = config.process_noise(x0) * opt.process_scale
        if P0 is None:
            P0 = self.Q * opt.initial_scale
        if bounds is None and opt.use_bounds:
            bounds = config.bounds
        if opt.lockout_recovery not in ("refit", "inflate"):
            raise TunerError(f"lockout_recovery: expected 'refit' or 'inflate', got {opt.lockout_recovery!r}")
        self.ekf = ExtendedKalmanFilter(x0, P0, bounds=bounds, log_space=opt.log_space, joseph=opt.joseph,
                                        vectorized=True, iterations=opt.iterations)
        self.rejected: list[Observation] = []  # consecutive NIS-rejected observations (lock-out detection)

    @property
    def rejections(self) -> int:
        return len(self.rejected)

    @property
    def x(self) -> np.ndarray:
        return self.ekf.x

    @property
    def P(self) -> np.ndarray:
        return self.ekf.P

    def params(self) -> dict[str, float]:
        return dict(zip(PARAM_NAMES, (float(v) for v in self.x)))

    # -- one observation -------------------------------------------------------------------------------
    def _measurement(self, obs: Observation):
        """(z, R, h) for obs, with the switches applied."""
        opt = self.options
        z = np.array(obs.z(self.kind), dtype=np.float64)
        if opt.relative_noise:
            R = self.config.noise_factor * np.diag(np.maximum(np.abs(z), R_FLOOR_MS) ** 2)
        else:
            R = self.config.measurement_noise()
        h = observation_function(obs, self.kind, zeros=not opt.reject_unevaluable, perf_model=opt.perf_model)
        if opt.drop_uninformative and self.kind == DECODE and obs.max_queue == 0:
            return z[1:], R[1:, 1:], lambda x: np.asarray(h(x))[..., 1:]
        return z, R, h

    def run(self, obs: Observation) -> StepResult:
        """inferno's Run: predict + update, no gates (still rejects invalid observations)."""
        return self.step(obs, skip_nis=True, gates=False)

    def step(self, obs: Observation, skip_nis: bool = False, *, gates: bool = True) -> StepResult:
        """inferno's RunWithValidation; never raises for a bad observation (returns accepted=False, reason)."""
        opt = self.options
        try:
            obs.validate(self.kind)
        except InvalidObservation as exc:
            return self._rejected(str(exc))
        z, R, h = self._measurement(obs)
        snap = self.ekf.snapshot()
        recovering = (gates and not skip_nis and opt.lockout_after > 0 and opt.nis_threshold > 0
                      and self.rejections >= opt.lockout_after)
        try:
            self.ekf.predict(self.Q)
            if recovering:
                self._recover(obs)
            inn = self.ekf.update(z, R, h)
        except InvalidObservation as exc:
            self.ekf.restore(snap)
            return self._rejected(f"perf model cannot evaluate the observation: {exc}", observed=_t(z))
        except TunerError as exc:  # e.g. a singular innovation covariance: reject, never crash
            self.ekf.restore(snap)
            return self._rejected(f"filter update failed: {exc}", observed=_t(z))
        x = self.ekf.x
        common = dict(innovation=_t(inn.y), predicted=_t(inn.predicted), observed=_t(z))
        if gates and np.any(x[: min(3, x.size)] <= 0):
            self.ekf.restore(snap)
            return self._rejected("positivity: updated parameters not all > 0", **common)
        nis = 0.0 if (skip_nis or not gates) and not recovering else inn.nis
        if gates and not skip_nis and not recovering and opt.nis_threshold > 0 and nis >= opt.nis_threshold:
            self.ekf.restore(snap)
            self.rejected = (self.rejected + [obs])[-max(1, opt.lockout_after):]
            return self._rejected(f"NIS {nis:.4g} >= {opt.nis_threshold}", nis=nis, **common)
        self.rejected = []
        return StepResult(True, tuple(float(v) for v in x), nis=float(nis), recovered=recovering,
                          covariance=tuple(map(tuple, self.ekf.P)), **common)

    def _recover(self, obs: Observation) -> None:
        """Lock-out recovery after a regime change: refit the recent (rejected) observations, or inflate P."""
        opt = self.options
        if opt.lockout_recovery == "refit" and self.kind == PREFILL_DECODE:
            from .estimators import fit_least_squares  # local: estimators import the perf model too

            res = fit_least_squares(self.ekf.x, self.rejected + [obs], perf_model=self.options.perf_model)
            if res.ok:
                self.ekf._s = self.ekf.to_state(res.x)
                self.ekf._limit()
                self.ekf.P = self.Q * opt.lockout_inflation
                return
        self.ekf.P = self.ekf.P * opt.lockout_inflation

    def _rejected(self, reason: str, **kw) -> StepResult:
        return StepResult(False, tuple(float(v) for v in self.ekf.x), reason=reason,
                          covariance=tuple(map(tuple, self.ekf.P)), **kw)


def _t(a) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(a).ravel())
