"""The tuner's observation function h(x): a perf model at an observation.

The perf model is "new" (queue-analysis v0.8, as inferno's tuner) by default, so tuned parameters and traces
reproduce inferno's; "iteration" (what a continuous-batching server measures, the sizing default for perfParms
data; it reads the observation's token-length CVs) or another alpha/beta/gamma version can be fitted instead.
prefill-decode: x = [alpha, beta, gamma] -> [TTFT, ITL]; decode: x = [alpha, beta] -> [wait, ITL] (no prefill).
The model cannot be evaluated (bad parameters, unstable, ...) -> NaN (the default; the EKF rejects the update)
or, with ``zeros=True``, inferno's [0, 0].
"""

from __future__ import annotations

import numpy as np

from ..queueing import QueueingError, make_perf_model
from .observation import DECODE, PREFILL_DECODE, Observation

__all__ = ["predict", "observation_function", "state_size", "PARAM_NAMES", "TUNED_PERF_MODEL", "REFERENCE_PERF_MODEL"]

PARAM_NAMES = ("alpha", "beta", "gamma")
TUNED_PERF_MODEL = "new"  # the tuner's default: inferno's tuner fits queue-analysis v0.8
REFERENCE_PERF_MODEL = "new"  # inferno's tuner (compat)


def state_size(kind: str) -> int:
    return 2 if kind == DECODE else 3


def predict(x, obs: Observation, kind: str = PREFILL_DECODE, *, zeros: bool = False,
            max_num_tokens: float = 8192, compat: bool = False, perf_model: str = TUNED_PERF_MODEL) -> np.ndarray:
    """h(x) at obs: [TTFT, ITL] (prefill-decode) or [wait, ITL] (decode), ms; NaN (or zeros) if not evaluable."""
    x = np.asarray(x, dtype=np.float64).ravel()
    bad = np.array([0.0, 0.0]) if zeros else np.array([np.nan, np.nan])
    if x.size != state_size(kind) or not np.all(np.isfinite(x)) or np.any(x < 0):
        return bad
    decode = kind == DECODE
    params = {"alpha": x[0], "beta": x[1], "gamma": 0.0 if decode else x[2]}
    try:
        model = make_perf_model(perf_model, params, in_tokens=0.0 if decode else obs.in_tokens,
                                out_tokens=obs.out_tokens, max_batch=int(obs.max_batch),
                                max_queue=int(obs.max_queue), max_num_tokens=max_num_tokens, compat=compat,
                                in_tokens_cv=obs.in_tokens_cv, out_tokens_cv=obs.out_tokens_cv)
        m = model.analyze(obs.rpm / 60.0)
    except QueueingError:
        return bad
    out = np.array([m.wait_time if decode else m.ttft, m.itl], dtype=np.float64)
    if not np.all(np.isfinite(out)):
        return bad
    return out


def observation_function(obs: Observation, kind: str = PREFILL_DECODE, *, zeros: bool = False,
                         perf_model: str = TUNED_PERF_MODEL):
    """h bound to one observation, vectorised over rows of x (for the EKF's Jacobian)."""
    def h(x):
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 2:
            return np.array([predict(r, obs, kind, zeros=zeros, perf_model=perf_model) for r in x])
        return predict(x, obs, kind, zeros=zeros, perf_model=perf_model)
    return h
