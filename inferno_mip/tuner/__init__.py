"""Model tuner: learns perf-model parameters (alpha, beta, gamma) from observed latencies with an EKF.

Generic EKF (:class:`ExtendedKalmanFilter`), the perf-model tuner (:class:`PerfTuner`), batch estimators,
observers (simulated, offline CSV, online Prometheus), the tuner service and :func:`merge` for tuned solves.
Spec: reference/specs/tuner.md.
"""

from .config import FilterConfig, default_config, load_config, parse_config
from .ekf import ExtendedKalmanFilter, Innovation, limit, numerical_jacobian
from .errors import ConfigError, InvalidObservation, TunerError
from .estimators import (FitResult, InitEstimator, SlidingWindowEstimator, condition_number, fit_least_squares,
                         fit_nelder_mead, guess_init_state)
from .merge import merge
from .observation import DECODE, PREFILL_DECODE, Observation
from .perfmodel import predict
from .run import TrajectoryPoint, tune_all, tune_stream
from .tuner import MAX_NIS, PerfTuner, StepResult, TunerOptions

__all__ = [
    "DECODE", "MAX_NIS", "PREFILL_DECODE", "ConfigError", "ExtendedKalmanFilter", "FilterConfig", "FitResult",
    "InitEstimator", "Innovation", "InvalidObservation", "Observation", "PerfTuner", "SlidingWindowEstimator",
    "StepResult", "TrajectoryPoint", "TunerError", "TunerOptions", "condition_number", "default_config",
    "fit_least_squares", "fit_nelder_mead", "guess_init_state", "limit", "load_config", "merge",
    "numerical_jacobian", "parse_config", "predict", "tune_all", "tune_stream",
]
