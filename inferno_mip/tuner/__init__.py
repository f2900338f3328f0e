"""Model tuner: learns perf-model parameters (alpha, beta, gamma) from observed latencies with an EKF.

Generic EKF (:class:`ExtendedKalmanFilter`), the perf-model tuner (:class:`PerfTuner`), batch estimators,
observers (simulated, offline CSV, online Prometheus), the tuner service and :func:`merge` for tuned solves.
Spec: reference/specs/tuner.md. Names are imported on first use (scipy only when the filter runs).
"""

from ..lazy import lazy_exports

_EXPORTS = {
    "ConfigError": ".errors",
    "DECODE": ".observation",
    "ExtendedKalmanFilter": ".ekf",
    "FilterConfig": ".config",
    "FitResult": ".estimators",
    "InitEstimator": ".estimators",
    "Innovation": ".ekf",
    "InvalidObservation": ".errors",
    "MAX_NIS": ".tuner",
    "Observation": ".observation",
    "PREFILL_DECODE": ".observation",
    "PerfTuner": ".tuner",
    "SlidingWindowEstimator": ".estimators",
    "StepResult": ".tuner",
    "TrajectoryPoint": ".run",
    "TunerError": ".errors",
    "TunerOptions": ".tuner",
    "condition_number": ".estimators",
    "default_config": ".config",
    "fit_least_squares": ".estimators",
    "fit_nelder_mead": ".estimators",
    "guess_init_state": ".estimators",
    "limit": ".ekf",
    "load_config": ".config",
    "merge": ".merging",
    "numerical_jacobian": ".ekf",
    "parse_config": ".config",
    "predict": ".perfmodel",
    "tune_all": ".run",
    "tune_stream": ".run",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
