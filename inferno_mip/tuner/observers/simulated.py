"""Simulated observer: latencies from the perf model at known (truth) parameters per phase, with seeded noise.

As inferno's SimulatedObserver: every value gets an independent factor (1 + noise*U), U ~ Uniform[-1, 1).
Differences (switchable): ``load_spread``/``token_spread`` vary the operating point per step (identifiability);
the observation reports the generator's max_queue (inferno generates with 10*N but reports 0; ``compat=True``);
the generating perf model can be another version (``perf_model``, e.g. "iteration" with ``out_tokens_cv``;
default "new", as inferno).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ...queueing import QueueingError, make_perf_model
from ..errors import TunerError
from ..observation import PREFILL_DECODE, Observation
from ..perfmodel import REFERENCE_PERF_MODEL, TUNED_PERF_MODEL

__all__ = ["Phase", "SimulatedObserver"]


@dataclass(frozen=True)
class Phase:
    """`steps` observations with truth (alpha, beta, gamma) at load rpm and token sizes."""

    steps: int
    rpm: float
    in_tokens: float
    out_tokens: float
    alpha: float
    beta: float
    gamma: float
    max_batch: int = 128

    @property
    def truth(self) -> tuple[float, float, float]:
        return (self.alpha, self.beta, self.gamma)


# inferno's simulated-observer demo: 3 phases x 20 steps, maxBatch 128, 5% noise
DEMO_PHASES = (
    Phase(20, 16, 2048, 512, 16, 0.04, 2e-4),
    Phase(20, 8, 2048, 2048, 20, 0.08, 4e-4),
    Phase(20, 6, 1024, 2048, 16, 0.04, 6e-4),
)


class SimulatedObserver:
    """Iterates Observations over the phases; ``truth_at(i)`` gives step i's true parameters."""

    kind = PREFILL_DECODE

    def __init__(self, phases=DEMO_PHASES, *, noise: float = 0.05, seed: int = 0, load_spread: float = 0.0,
                 token_spread: float = 0.0, queue_factor: int = 10, compat: bool = False,
                 perf_model: str | None = None, out_tokens_cv: float = 0.0):
        self.phases = tuple(phases)
        if not self.phases or any(p.steps < 1 for p in self.phases):
            raise TunerError("simulated observer: needs at least one phase with steps >= 1")
        for name, v in (("noise", noise), ("load_spread", load_spread), ("token_spread", token_spread)):
            if not (0 <= v < 1):
                raise TunerError(f"simulated observer: {name} must be in [0, 1), got {v!r}")
        self.noise, self.seed, self.load_spread, self.token_spread = noise, seed, load_spread, token_spread
        self.queue_factor, self.compat = int(queue_factor), compat
        self.perf_model = perf_model or (REFERENCE_PERF_MODEL if compat else TUNED_PERF_MODEL)
        if not (0 <= out_tokens_cv < 10):
            raise TunerError(f"simulated observer: out_tokens_cv must be in [0, 10), got {out_tokens_cv!r}")
        self.out_tokens_cv = float(out_tokens_cv)

    def __len__(self) -> int:
        return sum(p.steps for p in self.phases)

    def phase_at(self, i: int) -> Phase:
        for p in self.phases:
            if i < p.steps:
                return p
            i -= p.steps
        return self.phases[-1]

    def truth_at(self, i: int) -> tuple[float, float, float]:
        return self.phase_at(i).truth

    def __iter__(self) -> Iterator[Observation]:
        rng = np.random.default_rng(self.seed)
        u = lambda: float(rng.uniform(-1.0, 1.0))  # noqa: E731
        for i in range(len(self)):
            p = self.phase_at(i)
            rpm = max(0.0, p.rpm * (1 + self.load_spread * u()) * (1 + self.noise * u()))
            n_in = max(1.0, round(p.in_tokens * (1 + self.token_spread * u())))
            n_out = max(1.0, round(p.out_tokens * (1 + self.token_spread * u())))
            q = self.queue_factor * p.max_batch
            try:
                m = make_perf_model(self.perf_model, dict(alpha=p.alpha, beta=p.beta, gamma=p.gamma), in_tokens=n_in,
                                    out_tokens=n_out, max_batch=p.max_batch, max_queue=q,
                                    out_tokens_cv=self.out_tokens_cv).analyze(rpm / 60.0)
            except QueueingError:
                continue  # as inferno: no observation for this step
            f = [max(0.0, 1 + self.noise * u()) for _ in range(3)]
            yield Observation(rpm=rpm, in_tokens=n_in, out_tokens=n_out, max_batch=p.max_batch,
                              max_queue=0 if self.compat else q, wait=m.wait_time * f[0], ttft=m.ttft * f[1],
                              itl=m.itl * f[2], batch_size=m.num_in_service, out_tokens_cv=self.out_tokens_cv)
