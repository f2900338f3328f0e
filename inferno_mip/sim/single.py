"""One replica at a fixed Poisson rate: the measured counterpart of a perf model's ``analyze``."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from .errors import SimulationError
from .lengths import LengthDist
from .replica import Replica, ReplicaConfig, Request
from .stats import Sample, replica_sample


@dataclass(frozen=True)
class ReplicaResult:
    """Measured over [warmup, duration): latencies in ms (vLLM semantics), rates per second, counts."""

    ttft_mean: float
    ttft_p95: float
    itl_mean: float
    itl_p95: float
    throughput: float
    offered_rate: float
    running_mean: float
    waiting_mean: float
    completed: int
    rejected: int
    offered: int
    in_tokens_mean: float
    out_tokens_mean: float
    sample: Sample = field(repr=False)
    requests: dict[str, np.ndarray] = field(repr=False)

    @property
    def blocking(self) -> float:
        """Fraction of the window's arrivals rejected."""
        return self.rejected / self.offered if self.offered else math.nan

    @property
    def response_mean(self) -> float:
        """Mean response time (ms) of the requests completed in the window."""
        done = self.sample
        if not len(done.done_in):
            return math.nan
        with np.errstate(invalid="ignore"):
            resp = done.done_ttft + np.nan_to_num(done.done_itl) * (done.done_out - 1)
        return 1000.0 * float(np.mean(resp))


def poisson_arrivals(rng: np.random.Generator, rate: float, duration: float) -> np.ndarray:
    """Arrival times (s) of a Poisson process of ``rate`` per second on [0, duration)."""
    if rate == 0:
        return np.empty(0)
    expected = rate * duration
    out = []
    t = 0.0
    while True:
        n = int(expected + 6 * math.sqrt(expected) + 16)
        times = t + np.cumsum(rng.exponential(1.0 / rate, n))
        out.append(times[times < duration])
        if times[-1] >= duration:
            return np.concatenate(out)
        t = float(times[-1])


def simulate_replica(cfg: ReplicaConfig, rate: float, in_tokens: LengthDist, out_tokens: LengthDist,
                     duration: float = 600.0, warmup: float = 60.0, seed: int = 0) -> ReplicaResult:
    """Simulate one replica fed by Poisson arrivals at ``rate`` requests/second for ``duration`` seconds.

    Statistics cover [warmup, duration). Arrival times and token lengths come from independent streams of
    ``seed``, so changing a length distribution keeps the arrival times.
    """
    _check(rate, duration, warmup)
    replica = run_replica(cfg, rate, in_tokens, out_tokens, duration, seed)
    s = replica_sample(replica, warmup, duration)
    m = s.summary()
    return ReplicaResult(m["ttft_mean"], m["ttft_p95"], m["itl_mean"], m["itl_p95"], m["completed_rate"],
                         m["offered_rate"], m["running_mean"], m["waiting_mean"], m["completed"], m["rejected"],
                         s.offered, m["in_tokens_mean"], m["out_tokens_mean"], s, request_table(replica))


def run_replica(cfg: ReplicaConfig, rate: float, in_tokens: LengthDist, out_tokens: LengthDist, duration: float,
                seed: int) -> Replica:
    """The replica ``simulate_replica`` measures, fed and advanced to ``duration`` (its log and requests kept):
    arrival times and token lengths from independent streams of ``seed``."""
    arrival_rng, in_rng, out_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    times = poisson_arrivals(arrival_rng, rate, duration)
    n_in = in_tokens.sample(in_rng, len(times)).tolist()
    n_out = out_tokens.sample(out_rng, len(times)).tolist()
    replica = Replica(cfg)
    advance, arrive = replica.advance, replica.arrive
    for t, n, m in zip(times.tolist(), n_in, n_out):
        advance(t)
        arrive(Request(t, n, m), t)
    replica.advance(duration)
    return replica


def request_table(replica: Replica) -> dict[str, np.ndarray]:
    """Every accepted request of ``replica`` by arrival: arrival, admitted, first_token, finish (s; inf = not
    yet), in_tokens, out_tokens."""
    live = replica.live_requests()
    done = replica.log.table("done")
    rows = np.concatenate([done, np.array([(r.arrival, r.admitted, r.first_token, np.inf, r.n, r.m)
                                           for r in live]).reshape(-1, done.shape[1])])
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    names = ("arrival", "admitted", "first_token", "finish", "in_tokens", "out_tokens")
    return {name: rows[:, i].copy() for i, name in enumerate(names)}


def _check(rate: float, duration: float, warmup: float) -> None:
    for name, v in (("rate", rate), ("duration", duration), ("warmup", warmup)):
        if not (isinstance(v, numbers.Real) and math.isfinite(v) and v >= 0):
            raise SimulationError(f"{name} must be a finite number >= 0, got {v!r}")
    if duration <= warmup:
        raise SimulationError(f"duration ({duration!r}) must exceed warmup ({warmup!r})")
