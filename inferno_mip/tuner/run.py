"""Drive a tuner over a stream of observations (an observer) and record the parameter trajectory.

Cold start (prefill-decode, no x0): collect ``init_obs`` valid observations, batch-fit them (InitEstimator with
the condition guard, seeded by the config's initState), then filter; the first ``warmup`` EKF steps skip the
NIS gate, as inferno's service. Decode (or given x0): filter from x0 (default the config's initState).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Iterator

import numpy as np

from .config import FilterConfig
from .errors import TunerError
from .estimators import InitEstimator
from .observation import PREFILL_DECODE, Observation
from .perfmodel import PARAM_NAMES
from .tuner import PerfTuner, StepResult, TunerOptions

__all__ = ["TrajectoryPoint", "tune_stream", "tune_all"]


@dataclass(frozen=True)
class TrajectoryPoint:
    step: int
    status: str  # "accepted" | "rejected" | "collecting" | "init-fit"
    params: dict
    reason: str = ""
    nis: float = 0.0
    observed: tuple = ()
    predicted: tuple = ()
    innovation: tuple = ()
    rpm: float = float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


def _point(step: int, res: StepResult, obs: Observation) -> TrajectoryPoint:
    return TrajectoryPoint(step, "accepted" if res.accepted else "rejected", res.params(), res.reason, res.nis,
                           res.observed, res.predicted, res.innovation, _f(obs.rpm))


def _f(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def tune_stream(observations: Iterable[Observation], config: FilterConfig, *, kind: str = PREFILL_DECODE,
                options: TunerOptions | None = None, x0=None, init_obs: int = 5, warmup: int = 5,
                max_condition: float = 1000.0, gated: bool = True) -> Iterator[TrajectoryPoint]:
    """Yield one TrajectoryPoint per observation; bad observations are rejected with a reason, never raised."""
    options = options or TunerOptions()
    tuner: PerfTuner | None = None
    if x0 is not None or kind != PREFILL_DECODE or init_obs <= 0:
        tuner = PerfTuner(config, kind=kind, options=options, x0=x0)
    ie = InitEstimator(max(1, init_obs), hold_back=True, max_condition=max_condition, seed=config.init_state,
                       perf_model=options.perf_model)
    ekf_steps = 0
    for step, obs in enumerate(observations):
        if tuner is None:
            try:
                obs.validate(kind)
            except TunerError as exc:
                yield TrajectoryPoint(step, "rejected", {}, str(exc), rpm=_f(obs.rpm))
                continue
            ie.add(obs)
            if not ie.ready:
                yield TrajectoryPoint(step, "collecting", {}, f"collecting initial observations "
                                      f"({len(ie.observations)}/{ie.min_obs})", rpm=_f(obs.rpm))
                continue
            try:
                x_init = ie.fit()
            except TunerError:
                x_init = np.array(config.init_state)
            tuner = PerfTuner(config, kind=kind, options=options, x0=x_init)
        res = tuner.step(obs, skip_nis=ekf_steps < warmup) if gated else tuner.run(obs)
        if res.accepted:
            ekf_steps += 1
        yield _point(step, res, obs)


def tune_all(observations: Iterable[Observation], config: FilterConfig, **kw) -> list[TrajectoryPoint]:
    return list(tune_stream(observations, config, **kw))


def final_params(points: list[TrajectoryPoint]) -> dict[str, float] | None:
    for p in reversed(points):
        if p.params:
            return p.params
    return None


__all__ += ["final_params", "PARAM_NAMES"]
