"""Filter configuration in inferno's JSON format (``filterData`` + ``modelData``) and the Q, R, P0 it implies.

``R_jj = (errorLevel/tPercentile)^2 / gammaFactor * expectedObservations_j^2`` and
``Q_ii = P0_ii = (percentChange_i * x0_i)^2`` (percentChange is a fraction). Unlike inferno, missing fields
are errors, not zeros, and gammaFactor must be > 0.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import ConfigError

__all__ = ["FilterConfig", "default_config", "load_config", "parse_config"]


def _num(where: str, v: Any, *, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {v!r}")
    f = float(v)
    if not math.isfinite(f) or (positive and f <= 0) or (nonneg and f < 0):
        cond = "> 0" if positive else ">= 0" if nonneg else "finite"
        raise ConfigError(f"{where}: must be finite and {cond}, got {v!r}")
    return f


def _vec(where: str, v: Any, n: int | None = None, **kw) -> tuple[float, ...]:
    if not isinstance(v, (list, tuple)) or not v:
        raise ConfigError(f"{where}: expected a non-empty list of numbers, got {v!r}")
    if n is not None and len(v) != n:
        raise ConfigError(f"{where}: expected {n} values, got {len(v)}")
    return tuple(_num(f"{where}[{i}]", x, **kw) for i, x in enumerate(v))


def _get(block: Mapping, key: str, where: str) -> Any:
    low = {str(k).lower(): val for k, val in block.items()}
    if key.lower() not in low:
        raise ConfigError(f"{where}.{key}: missing")
    return low[key.lower()]


@dataclass(frozen=True)
class FilterConfig:
    """One tuner config: noise levels, initial state, per-parameter change, bounds and expected observations."""

    gamma_factor: float
    error_level: float
    t_percentile: float
    init_state: tuple[float, ...]
    percent_change: tuple[float, ...]
    bounded: bool
    min_state: tuple[float, ...] | None
    max_state: tuple[float, ...] | None
    expected_observations: tuple[float, ...]
    source: str = field(default="<config>", compare=False)

    @property
    def n(self) -> int:
        return len(self.init_state)

    @property
    def m(self) -> int:
        return len(self.expected_observations)

    @property
    def noise_factor(self) -> float:
        """c = (errorLevel / tPercentile)^2 / gammaFactor: relative measurement variance."""
        return (self.error_level / self.t_percentile) ** 2 / self.gamma_factor

    def measurement_noise(self, z: np.ndarray | None = None) -> np.ndarray:
        """R = diag(c * e^2), e = expectedObservations (inferno), or e = |z| (noise scaled to the observation)."""
        e = np.asarray(self.expected_observations if z is None else z, dtype=np.float64)
        return np.diag(self.noise_factor * e * e)

    def process_noise(self, x: np.ndarray | None = None) -> np.ndarray:
        """Q = diag((percentChange * x)^2) at x (default x0)."""
        x = np.asarray(self.init_state if x is None else x, dtype=np.float64)
        pc = np.asarray(self.percent_change, dtype=np.float64)
        return np.diag((pc * x) ** 2)

    def log_process_noise(self) -> np.ndarray:
        """Q in log-parameter space: diag(percentChange^2) (a relative change is an absolute one in ln x)."""
        pc = np.asarray(self.percent_change, dtype=np.float64)
        return np.diag(pc * pc)

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        if not self.bounded:
            return None
        return np.asarray(self.min_state, dtype=np.float64), np.asarray(self.max_state, dtype=np.float64)

    def with_state(self, x, *, factor: float = 10.0, eps: float = 1e-9) -> FilterConfig:
        """Re-centred copy (inferno's service): initState = x, bounds [max(x/f, eps), f*x]."""
        x = tuple(float(v) for v in x)
        if len(x) != self.n:
            raise ConfigError(f"initState: expected {self.n} values, got {len(x)}")
        return replace(self, init_state=x, min_state=tuple(max(v / factor, eps) for v in x),
                       max_state=tuple(factor * v for v in x))

    def to_json(self) -> dict:
        model = {"initState": list(self.init_state), "percentChange": list(self.percent_change),
                 "boundedState": self.bounded, "expectedObservations": list(self.expected_observations)}
        if self.min_state is not None:
            model["minState"], model["maxState"] = list(self.min_state), list(self.max_state)
        return {"filterData": {"gammaFactor": self.gamma_factor, "errorLevel": self.error_level,
                               "tPercentile": self.t_percentile}, "modelData": model}


def parse_config(data: Mapping, source: str = "<config>") -> FilterConfig:
    """Validate inferno's config JSON (keys case-insensitive); raises ConfigError naming the field."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a JSON object")
    fd = _get(data, "filterData", source)
    md = _get(data, "modelData", source)
    for name, blk in (("filterData", fd), ("modelData", md)):
        if not isinstance(blk, Mapping):
            raise ConfigError(f"{source}: {name}: expected an object, got {blk!r}")
    w = f"{source}: filterData"
    g = _num(f"{w}.gammaFactor", _get(fd, "gammaFactor", w), positive=True)
    e = _num(f"{w}.errorLevel", _get(fd, "errorLevel", w), positive=True)
    t = _num(f"{w}.tPercentile", _get(fd, "tPercentile", w), positive=True)
    w = f"{source}: modelData"
    x0 = _vec(f"{w}.initState", _get(md, "initState", w))
    n = len(x0)
    pc = _vec(f"{w}.percentChange", _get(md, "percentChange", w), n, nonneg=True)
    bounded = _get(md, "boundedState", w)
    if not isinstance(bounded, bool):
        raise ConfigError(f"{w}.boundedState: expected true/false, got {bounded!r}")
    lo = hi = None
    if bounded:
        lo = _vec(f"{w}.minState", _get(md, "minState", w), n)
        hi = _vec(f"{w}.maxState", _get(md, "maxState", w), n)
        for i, (a, b) in enumerate(zip(lo, hi)):
            if a > b:
                raise ConfigError(f"{w}.minState[{i}]: {a!r} > maxState[{i}] {b!r}")
    eo = _vec(f"{w}.expectedObservations", _get(md, "expectedObservations", w), nonneg=True)
    return FilterConfig(g, e, t, x0, pc, bounded, lo, hi, eo, source=source)


def load_config(path: str | Path) -> FilterConfig:
    """Read a config file (``*-config-data.json``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read JSON: {exc}") from None
    return parse_config(data, source=str(path))


DEFAULT_CONFIG_DATA = {  # inferno's config-data/default-config-data.json (service default)
    "filterData": {"gammaFactor": 1.0, "errorLevel": 0.5, "tPercentile": 1.96},
    "modelData": {"initState": [5.0, 0.05, 0.00005], "percentChange": [0.15, 0.15, 0.15], "boundedState": True,
                  "minState": [0.05, 0.0005, 0.0000005], "maxState": [500.0, 5.0, 0.005],
                  "expectedObservations": [200.0, 40.0]},
}
DECODE_CONFIG_DATA = {  # inferno's config-data/decode-config-data.json
    "filterData": {"gammaFactor": 1.0, "errorLevel": 0.05, "tPercentile": 1.96},
    "modelData": {"initState": [1.0, 0.01], "percentChange": [0.1, 0.1], "boundedState": True,
                  "minState": [0.1, 0.001], "maxState": [50.0, 2.0], "expectedObservations": [200.0, 2.0]},
}


def default_config(decode: bool = False) -> FilterConfig:
    """inferno's default (3-state) or decode (2-state) config."""
    return parse_config(DECODE_CONFIG_DATA if decode else DEFAULT_CONFIG_DATA,
                        source="<decode-config>" if decode else "<default-config>")
