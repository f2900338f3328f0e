"""One observation of a replica (inferno's Environment): load, token sizes, batch limits and latencies.

``validate`` never lets NaN, infinities, negative or missing values through; it raises InvalidObservation
with the field and value. Rates are requests/minute (RPM), times ms, as in inferno's tuner.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from .errors import InvalidObservation

__all__ = ["Observation", "PREFILL_DECODE", "DECODE"]

PREFILL_DECODE = "prefill-decode"  # z = [TTFT, ITL], x = [alpha, beta, gamma]
DECODE = "decode"  # z = [wait, ITL], x = [alpha, beta]


@dataclass(frozen=True)
class Observation:
    """Observed operating point of one replica. ``weight`` (e.g. request count) scales its fit residuals."""

    rpm: float
    in_tokens: float
    out_tokens: float
    max_batch: int
    ttft: float = 0.0
    itl: float = 0.0
    max_queue: int = 0
    wait: float = 0.0
    batch_size: float = 0.0
    weight: float = 1.0
    in_tokens_cv: float = 0.0  # coefficients of variation of the token counts (the "iteration" perf model reads them)
    out_tokens_cv: float = 0.0

    @property
    def rate(self) -> float:
        """Arrival rate in req/s."""
        return self.rpm / 60.0

    def z(self, kind: str = PREFILL_DECODE) -> tuple[float, ...]:
        return (self.wait, self.itl) if kind == DECODE else (self.ttft, self.itl)

    def to_dict(self) -> dict:
        # Every field is a number: a flat copy equals asdict() at a fraction of its cost (saved on every tune).
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], kind: str = PREFILL_DECODE) -> Observation:
        """Build and validate from a dict with this class's field names (missing latencies are errors)."""
        if not isinstance(d, Mapping):
            raise InvalidObservation(f"observation: expected an object, got {d!r}")
        required = ("rpm", "in_tokens", "out_tokens", "max_batch") + (("wait", "itl") if kind == DECODE
                                                                      else ("ttft", "itl"))
        for k in required:
            if d.get(k) is None:
                raise InvalidObservation(f"observation.{k}: missing")
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d and d[k] is not None}
        obs = cls(**known)
        obs.validate(kind)
        return obs

    def validate(self, kind: str = PREFILL_DECODE) -> Observation:
        """Raise InvalidObservation naming the first bad field; return self if usable."""
        def num(name: str, v, *, positive=False) -> float:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InvalidObservation(f"observation.{name}: expected a number, got {v!r}")
            if not math.isfinite(v):
                raise InvalidObservation(f"observation.{name}: must be finite, got {v!r}")
            if v < 0 or (positive and v == 0):
                raise InvalidObservation(f"observation.{name}: must be {'> 0' if positive else '>= 0'}, got {v!r}")
            return float(v)

        num("rpm", self.rpm, positive=True)
        num("out_tokens", self.out_tokens, positive=True)
        num("in_tokens", self.in_tokens, positive=kind != DECODE)
        for name in ("max_batch", "max_queue"):
            v = getattr(self, name)
            num(name, v, positive=name == "max_batch")
            if float(v) != int(v):
                raise InvalidObservation(f"observation.{name}: must be an integer, got {v!r}")
        num("itl", self.itl, positive=True)
        num("ttft", self.ttft, positive=kind != DECODE)
        num("wait", self.wait)
        num("batch_size", self.batch_size)
        num("weight", self.weight, positive=True)
        num("in_tokens_cv", self.in_tokens_cv)
        num("out_tokens_cv", self.out_tokens_cv)
        return self
