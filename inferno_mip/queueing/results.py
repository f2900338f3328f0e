"""Result records of the perf models."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import numpy as np

__all__ = ["Metrics", "Sizing"]

Value = Union[float, np.ndarray]


@dataclass(frozen=True)
class Metrics:
    """Per-replica metrics at an offered rate. Rates req/s, times ms; floats, or arrays for array input."""

    throughput: Value
    offered_rate: Value
    resp_time: Value
    wait_time: Value
    prefill_time: Value
    itl: Value
    ttft: Value
    num_in_service: Value
    rho: Value
    blocking: Value
    max_rate: Value

    def token_throughput(self, out_tokens: float) -> Value:
        """Achieved output tokens/s = throughput * m."""
        return self.throughput * out_tokens


@dataclass(frozen=True)
class Sizing:
    """Result of PerfModel.size: the max per-replica rate meeting the targets."""

    rate: float  # lambda* (req/s)
    throughput: float  # metrics.throughput at lambda* ("rateStar")
    binding: str  # "ttft" | "itl" | "tps" | "none"
    target_rates: dict = field(default_factory=dict)  # name -> req/s (Go's TargetRate)
    metrics: Metrics | None = None
