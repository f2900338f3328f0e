"""A tiny analytic stand-in for the simulator's Fleet (same API), for fast tests of the loop's mechanics.

Per replica: SLO rate `cap` req/s; ITL grows as 1 / (1 - utilisation). It is no yardstick: it only has to move
the right way when load and replicas move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class FakeWindow:
    offered_rate: float
    completed_rate: float
    itl_mean: float
    ttft_mean: float
    accelerator: str
    max_batch: int
    replicas_ready: int
    replicas_starting: int
    in_tokens_mean: float = 2048.0
    out_tokens_mean: float = 1024.0
    in_tokens_cv: float = 0.0
    out_tokens_cv: float = 0.0
    itl_p95: float = 0.0
    ttft_p95: float = 0.0
    running_mean: float = 0.0
    waiting_mean: float = 0.0
    rejected: int = 0
    completed: int = 0
    per_replica: dict = field(default_factory=dict)

    def within_slo(self, itl, ttft):
        return float(self.itl_mean <= itl and self.ttft_mean <= ttft)


class FakeFleet:
    def __init__(self, rates, allocation, *, cap=0.5, itl0=20.0, ttft0=80.0, startup_delay=60.0):
        self.rates = rates  # name -> callable(t) req/s
        self.cap, self.itl0, self.ttft0, self.delay = cap, itl0, ttft0, startup_delay
        self.now = 0.0
        self.alloc = {n: list(a) for n, a in allocation.items()}  # name -> [acc, replicas, batch]
        self.starts = {n: [] for n in allocation}  # ready times of replicas still starting
        self.calls = []

    def advance(self, until):
        self.now = float(until)
        for n in self.starts:
            self.starts[n] = [t for t in self.starts[n] if t > self.now]

    def set_allocation(self, name, accelerator, replicas, max_batch):
        acc, cur, _ = self.alloc[name]
        self.calls.append((self.now, name, accelerator, replicas, max_batch))
        if replicas > cur:
            self.starts[name] += [self.now + self.delay] * (replicas - cur)
        else:
            drop = cur - replicas
            self.starts[name] = self.starts[name][:max(len(self.starts[name]) - drop, 0)]
        self.alloc[name] = [accelerator, replicas, max_batch]
        return f"scaled {cur}->{replicas}"

    def window(self, since):
        out = {}
        for n, (acc, replicas, batch) in self.alloc.items():
            starting = len(self.starts[n])
            ready = replicas - starting
            ts = [since + (self.now - since) * k / 10 for k in range(11)]
            rate = sum(self.rates[n](t) for t in ts) / len(ts)
            util = rate / (self.cap * ready) if ready > 0 else math.inf
            slow = 1.0 / max(1.0 - util, 0.05) if util < 1 else 20.0 * util
            per = rate / ready if ready > 0 else 0.0
            itl, ttft = self.itl0 * min(slow, 50), self.ttft0 * min(slow, 50) ** 2
            out[n] = FakeWindow(rate, min(rate, self.cap * max(ready, 0) * 1.2), itl, ttft, acc, batch, ready,
                                starting, completed=int(rate * (self.now - since)),
                                per_replica={f"{n}-{k}": {"offered_rate": per, "itl_mean": itl, "ttft_mean": ttft,
                                                          "in_tokens_mean": 2048.0, "out_tokens_mean": 1024.0}
                                             for k in range(ready)})
        return out
