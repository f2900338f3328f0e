"""One replica under continuous batching with iteration-level scheduling, simulated request by request.

At each iteration boundary the scheduler admits waiting requests FIFO while fewer than ``max_batch`` run (and,
with a token budget ``max_num_tokens``, while budget is left after one token per decoding request and the
remaining chunks of prompts already being prefilled). An iteration costs (queue-model spec §1.3)::

    alpha + beta * (tokens computed) + gamma * (context tokens read)

where a request computing t tokens with k tokens already in its KV cache reads k + t context tokens
(``ReplicaConfig`` can price prompt tokens apart, for older perf-data generations). As in vLLM,
the iteration that completes a prompt emits the first output token; each later iteration emits one token to
every decoding request, so a request with m output tokens decodes in m - 1 iterations and its context ends at
n + m - 1 tokens. An idle replica starts an iteration the moment a request arrives; otherwise an arrival waits
for the next boundary. A replica holds at most ``max_batch + max_queue`` requests; arrivals beyond are rejected.

Speed: runs of iterations in which nothing but decoding happens (no prompt in progress, no admission possible)
are one step: their durations form an arithmetic progression, so the end of the run (the next completion) is
computed in closed form. A run is cut short when an arrival could be admitted before it ends.
Clock in seconds; perf parameters in milliseconds.
"""

from __future__ import annotations

import heapq
import math
import numbers
from array import array
from collections import deque
from dataclasses import dataclass

import numpy as np

from .errors import SimulationError

INF = math.inf


@dataclass(frozen=True)
class ReplicaConfig:
    """Perf parameters (ms) and limits of one replica; ``max_num_tokens`` None means no per-iteration budget.

    Two optional terms carry older perf-data generations (decode alpha/beta, prefill gamma/delta) without
    approximation: ``prefill_beta`` is the cost of a prompt token (default ``beta``) and ``prefill_overhead``
    is added to every iteration that prefills. With their defaults the cost model is exactly spec §1.3.
    """

    alpha: float
    beta: float
    gamma: float
    max_batch: int
    max_queue: int = 0
    max_num_tokens: int | None = None
    prefill_beta: float | None = None
    prefill_overhead: float = 0.0

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma", "prefill_beta", "prefill_overhead"):
            v = getattr(self, name)
            if v is None and name == "prefill_beta":
                continue
            if not (isinstance(v, numbers.Real) and math.isfinite(v) and v >= 0):
                raise SimulationError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.alpha + self.beta + self.gamma <= 0:
            raise SimulationError("alpha, beta and gamma are all 0: iterations would take no time")
        if not (_is_int(self.max_batch) and self.max_batch >= 1):
            raise SimulationError(f"max_batch must be an integer >= 1, got {self.max_batch!r}")
        if not (_is_int(self.max_queue) and self.max_queue >= 0):
            raise SimulationError(f"max_queue must be an integer >= 0, got {self.max_queue!r}")
        if self.max_num_tokens is not None and not (_is_int(self.max_num_tokens)
                                                    and self.max_num_tokens >= self.max_batch):
            raise SimulationError(f"max_num_tokens must be an integer >= max_batch ({self.max_batch}) or None, "
                                  f"got {self.max_num_tokens!r}")


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


class Request:
    """One request: arrival time (s), prompt and output tokens; times filled in as it is served."""

    __slots__ = ("arrival", "n", "m", "admitted", "first_token", "done")

    def __init__(self, arrival: float, n: int, m: int):
        self.arrival = arrival
        self.n = n
        self.m = m
        self.admitted = INF
        self.first_token = INF
        self.done = 0  # prompt tokens prefilled so far


DONE_FIELDS = ("arrival", "admitted", "first", "finish", "in", "out")
RUN_FIELDS = ("start", "a", "b", "count", "decoders")


class ReplicaLog:
    """What a replica has done, append-only and in time order (compact float arrays, one row after another).

    ``done``: one row per completed request (``DONE_FIELDS``), in order of completion. ``runs``: runs of
    iterations with decoding requests (``RUN_FIELDS``); a run starts at ``start``, its j-th iteration
    (j = 1..``count``) lasts ``a + b * j`` seconds and emits one token to each of ``decoders`` requests.
    ``rejected``: arrival times of rejected requests.
    """

    __slots__ = ("done", "runs", "rejected")

    def __init__(self) -> None:
        self.done = array("d")
        self.runs = array("d")
        self.rejected = array("d")

    def table(self, name: str) -> np.ndarray:
        """``done`` or ``runs`` as a 2-D array (rows x fields), a view without copying."""
        width = len(DONE_FIELDS) if name == "done" else len(RUN_FIELDS)
        column = getattr(self, name)
        return np.frombuffer(column).reshape(-1, width) if len(column) else np.empty((0, width))


class Replica:
    """The scheduler and clock of one replica. Feed it arrivals in time order: ``advance(t)`` then ``arrive``."""

    def __init__(self, cfg: ReplicaConfig, now: float = 0.0):
        self.cfg = cfg
        self._A = cfg.alpha / 1000.0
        self._B = cfg.beta / 1000.0
        self._G = cfg.gamma / 1000.0
        self._Bp = self._B if cfg.prefill_beta is None else cfg.prefill_beta / 1000.0
        self._P = cfg.prefill_overhead / 1000.0
        self.max_batch = cfg.max_batch
        self.capacity = cfg.max_batch + cfg.max_queue
        self._budget = INF if cfg.max_num_tokens is None else cfg.max_num_tokens
        self.log = ReplicaLog()
        self.waiting: deque[Request] = deque()
        self.prefilling: list[Request] = []          # admitted, prompt not complete
        self.decoders: list[tuple[int, int, Request]] = []  # heap of (iteration of its last token, seq, request)
        self._ctx = 0          # KV-cache tokens of the decoding requests
        self._iters = 0        # iterations completed
        self._seq = 0
        self.held = 0          # requests accepted and not complete
        # The block in progress: `count` iterations from `start`, the j-th lasting a + b*j; `chunks` for a
        # single iteration that prefills: [(request, tokens)].
        self.busy = False
        self.start = now
        self.end = now
        self._a = 0.0
        self._b = 0.0
        self._count = 0
        self._decoding = 0
        self._chunks: list[tuple[Request, int]] = []

    # -- state -------------------------------------------------------------------------------------------------
    @property
    def in_system(self) -> int:
        """Requests held (waiting, prefilling or decoding), including those finishing in the iteration under way."""
        return self.held

    @property
    def running(self) -> int:
        return len(self.prefilling) + len(self.decoders)

    def live_requests(self) -> list[Request]:
        """Requests accepted and not yet complete."""
        return [*self.waiting, *self.prefilling, *(r for _, _, r in self.decoders)]

    def live_block(self) -> tuple[float, float, float, int, int] | None:
        """The run of iterations under way as (start, a, b, count, decoding requests), if it decodes."""
        if self.busy and self._decoding:
            return self.start, self._a, self._b, self._count, self._decoding
        return None

    # -- driving -----------------------------------------------------------------------------------------------
    def advance(self, t: float) -> None:
        """Complete every iteration that ends at or before ``t``."""
        while self.busy and self.end <= t:
            self._end_block()
            self._start_block(self.end)

    def arrive(self, req: Request, t: float) -> bool:
        """A request arrives at ``t`` (call ``advance(t)`` first); False if rejected because the replica is full."""
        if self.held >= self.capacity:
            self.log.rejected.append(t)
            return False
        self.held += 1
        self.waiting.append(req)
        if not self.busy:
            self._start_block(t)
        elif self._count > 1 and len(self.decoders) + len(self.prefilling) < self.max_batch:
            self._cut(t)
        return True

    # -- internals ---------------------------------------------------------------------------------------------
    def _cut(self, t: float) -> None:
        """Shorten the decode run under way so it ends with the iteration in progress at ``t``."""
        a, b, s = self._a, self._b, self.start
        x = t - s
        if b > 0:
            h = a + 0.5 * b
            r = 2.0 * x / (h + math.sqrt(h * h + 2.0 * b * x))
        else:
            r = x / a
        j = min(max(int(r) + 1, 1), self._count)
        # Guard the float root: iteration j must be the first to end after t.
        while j > 1 and s + (j - 1) * a + b * (j - 1) * j / 2 > t:
            j -= 1
        while j < self._count and s + j * a + b * j * (j + 1) / 2 <= t:
            j += 1
        if j < self._count:
            self._count = j
            self.end = s + j * a + b * j * (j + 1) / 2

    def _start_block(self, s: float) -> None:
        self.start = s
        decoders = self.decoders
        d = len(decoders)
        prefilling = self.prefilling
        waiting = self.waiting
        running = d + len(prefilling)
        if not prefilling and not (waiting and running < self.max_batch):
            if d == 0:
                self.busy = False
                self.end = s
                return
            c = decoders[0][0] - self._iters
            a = self._A + self._B * d + self._G * self._ctx
            b = self._G * d
            self._a, self._b, self._count, self._decoding = a, b, c, d
            self._chunks = []
            self.end = s + c * a + b * c * (c + 1) / 2
            self.busy = True
            return
        budget = self._budget - d
        tokens = 0  # prompt tokens
        read = self._ctx + d
        chunks = []
        for req in prefilling:
            if budget <= 0:
                break
            ch = min(req.n - req.done, budget)
            chunks.append((req, ch))
            tokens += ch
            read += req.done + ch
            budget -= ch
        while waiting and running < self.max_batch and budget > 0:
            req = waiting.popleft()
            req.admitted = s
            prefilling.append(req)
            running += 1
            ch = min(req.n, budget)
            chunks.append((req, ch))
            tokens += ch
            read += ch
            budget -= ch
        dur = self._A + self._B * d + self._Bp * tokens + self._G * read + (self._P if tokens else 0.0)
        self._a, self._b, self._count, self._decoding = dur, 0.0, 1, d
        self._chunks = chunks
        self.end = s + dur
        self.busy = True

    def _end_block(self) -> None:
        e = self.end
        c = self._count
        d = self._decoding
        if d:
            self.log.runs.extend((self.start, self._a, self._b, c, d))
        self._iters += c
        self._ctx += c * d
        it = self._iters
        decoders = self.decoders
        if self._chunks:
            completed = 0
            for req, ch in self._chunks:
                req.done += ch
                if req.done == req.n:
                    completed += 1
                    req.first_token = e
                    if req.m == 1:
                        self._record(req, e)
                    else:
                        self._ctx += req.n
                        self._seq += 1
                        heapq.heappush(decoders, (it + req.m - 1, self._seq, req))
            if completed:
                del self.prefilling[:completed]
            self._chunks = []
        while decoders and decoders[0][0] <= it:
            req = heapq.heappop(decoders)[2]
            self._ctx -= req.n + req.m - 1
            self._record(req, e)

    def _record(self, req: Request, finish: float) -> None:
        self.held -= 1
        self.log.done.extend((req.arrival, req.admitted, req.first_token, finish, req.n, req.m))
