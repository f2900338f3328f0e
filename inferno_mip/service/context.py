"""What every endpoint of one optimizer app shares: settings, the solve pool, metrics and inferno's table."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..solution import Solution
from .metrics import OptimizerMetrics
from .runner import BadInput, SolveJob, SolveRunner, SolveTimeout
from .state import InfernoState

__all__ = ["ApiError", "ServiceContext", "ServiceSettings"]

DEFAULT_MAX_BODY = 16 * 1024 * 1024


@dataclass(frozen=True)
class ServiceSettings:
    """How the optimizer service runs (the ``serve-optimizer`` options)."""

    stateful: bool = False
    compat: bool = False  # inferno's answers: its greedy, and 404 when a server gets no allocation
    workers: int = 2  # solve processes; 0 = one in-process thread
    time_limit: float = 30.0  # seconds, the most any one solve may take
    max_body_bytes: int = DEFAULT_MAX_BODY

    def __post_init__(self):
        if self.workers < 0:
            raise ValueError(f"workers: must be >= 0, got {self.workers}")
        if not self.time_limit > 0:
            raise ValueError(f"time limit: must be > 0, got {self.time_limit}")
        if self.max_body_bytes < 1:
            raise ValueError(f"max body bytes: must be >= 1, got {self.max_body_bytes}")


class ApiError(Exception):
    """An answer other than 200: status code and a one-line message (sent as ``{"message": ...}``)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class ServiceContext:
    """Shared state of one app. ``table`` is inferno's system table: the stateful one, or in stateless mode
    the one built by the last /optimizeOne (what inferno's GET endpoints read)."""

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.runner = SolveRunner(settings.workers, settings.time_limit)
        self.metrics = OptimizerMetrics()
        self.table = InfernoState()

    async def solve(self, endpoint: str, job: SolveJob) -> Solution:
        """Solve in the pool; bad input is a 400, an overrun a 504, anything else a 500 (never a dropped request)."""
        start = time.perf_counter()
        try:
            solution, shared = await self.runner.solve(job)
        except BadInput as exc:
            self.metrics.observe(endpoint, time.perf_counter() - start, None, "bad-input")
            raise ApiError(400, str(exc)) from None
        except SolveTimeout as exc:
            self.metrics.observe(endpoint, time.perf_counter() - start, None, "timeout")
            raise ApiError(504, str(exc)) from None
        except Exception as exc:  # a crashed worker: say so, keep serving
            self.metrics.observe(endpoint, time.perf_counter() - start, None, "error")
            raise ApiError(500, f"solve failed: {type(exc).__name__}: {exc}") from None
        self.metrics.observe(endpoint, time.perf_counter() - start, solution, shared=shared)
        return solution
