"""The "iteration" perf model: what a continuous-batching (vLLM-style) server measures.

Same per-iteration cost as queue-analysis v0.7 (iteration time = alpha + beta * tokens computed + gamma *
context tokens read), same birth-death chain, four corrections measured against the request-level simulator:

1. Iteration-boundary wait: a request that arrives while an iteration runs is admitted when that iteration
   ends. Arriving to k >= 1 in service it waits the residual of an iteration of mean length T(k) = alpha +
   k delta; prefills joining an iteration make its length vary (about Poisson(lambda T) of them), so the mean
   residual is T(k)/2 + lambda E[w_p^2]/2. An arrival to an idle server starts at once; one to a full batch
   also waits in the queue (the chain's wait).
2. Work from the length distribution, not at the mean: decode work grows with the square of the output length,
   so the mean work per request uses E[m^2] = m^2 (1 + cv^2) (output and input lengths independent).
3. Service variability: the chain's departures from a full batch are memoryless; the queueing delay is scaled
   by (1 + c_s^2)/2 (Allen-Cunneen, Poisson arrivals), c_s^2 the squared CV of a request's residence
   (c + m - 1 iterations). Equal lengths halve the chain's wait; geometric lengths (c_s ~ 1) keep it.
4. Metrics as vLLM reports them: the first token is emitted by the prefill iteration (c + m - 1 iterations per
   request); TTFT = wait + boundary wait + prefill at admission (batch min(k + 1, N)); ITL = mean decode
   interval = (S - mean-field prefill)/(m - 1), S the chain's mean service time.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .chain import ChainStats
from .chunks import chunk_counts
from .models import ServiceModel, _at, _head_dot, new_primitives

__all__ = ["IterationModel", "request_work"]


def request_work(beta, gamma, n, m, c, in_cv=0.0, out_cv=0.0):
    """Mean prefill work w_p(c), mean total work W(c) and E[w_p^2] per request (ms), vLLM token accounting.

    Prefill in c chunks reads sum_k k n/c context tokens; the prefill iteration emits token 1, then decode
    iteration j = 1..m-1 computes one token reading n + j context tokens. Lengths are independent with
    means n, m and coefficients of variation in_cv, out_cv; E[d(d+1)] of d = m - 1 uses E[m^2].
    """
    w_p = (beta + gamma * (c + 1) / 2.0) * n
    d = m - 1.0
    dd1 = out_cv * out_cv * m * m + d * m  # E[d(d+1)] = Var(m) + (m-1)m
    w_d = beta * d + gamma * (n * d + dd1 / 2.0)
    return w_p, w_p + w_d, w_p * w_p * (1.0 + in_cv * in_cv)


class IterationModel(ServiceModel):
    """Continuous batching at iteration level (module docstring); alpha, beta, gamma as queue-analysis v0.7.

    Tables per batch size B = 0..N: nc (prefill chunks), prefill_table (mean-field prefill at batch B) and
    admit_table (boundary wait + prefill of an arrival that finds B in service, B < N).
    """

    kind = "iteration"
    SCALARS = ("m", "queue_factor", "half_alpha", "half_delta_n", "var_term")
    TABLES = ("prefill_table", "admit_table")

    def __init__(self, params, n, m, max_batch, compat, *, max_num_tokens: float, in_cv: float = 0.0,
                 out_cv: float = 0.0):
        super().__init__(n, m, max_batch, compat)
        a, b, g = params["alpha"], params["beta"], params["gamma"]
        self.alpha, self.beta, self.gamma, self.max_num_tokens = a, b, g, max_num_tokens
        self.in_cv, self.out_cv = in_cv, out_cv
        self.nc = chunk_counts(n, m, max_num_tokens, max_batch, float32=False)  # B = 0..N
        c = self.nc.astype(np.float64)
        iters = c + m - 1.0  # iterations a request is resident
        self.w_p, self.w_tot, w_p2 = request_work(b, g, n, m, c, in_cv, out_cv)
        self.delta = self.w_tot / iters
        bs = np.arange(max_batch + 1, dtype=np.float64)
        self.prefill_table = c * np.maximum(0.0, a + (bs - 1) * self.delta) + self.w_p
        # an arrival that finds k < N in service prefills in a batch of k + 1 (a queued one: N)
        self.admit_table = self.prefill_table[np.minimum(bs + 1, max_batch).astype(np.int64)]
        # boundary residual T(k)/2 = (alpha + k delta)/2, delta taken at N (it varies only with chunking)
        self.half_alpha, self.half_delta_n = 0.5 * a, 0.5 * float(self.delta[-1])
        self.var_term = 0.5 * float(w_p2[-1])  # lambda E[w_p^2]/2: prefills joining an iteration vary its length
        scv = (out_cv * m / iters[-1]) ** 2
        self.queue_factor = 0.5 * (1.0 + scv)
        self._set_tau((iters * a + bs * self.w_tot)[1:])

    @staticmethod
    def row_adjust(p, st: ChainStats, n) -> ChainStats:
        """Wait = the chain's queueing delay scaled for service variability + the mean iteration-boundary wait."""
        # Every admitted arrival that finds k >= 1 in the system waits for the running iteration to end (a queued
        # one too: admissions and departures happen at boundaries). Lost arrivals (k = N + Q) are left out.
        lost = st.blocking
        busy = np.maximum(1.0 - st.p_head[:, 0] - lost, 0.0)
        in_service = np.maximum(st.num_in_service - n * lost, 0.0)  # sum_k min(k, N) p_k over admitted arrivals
        boundary = (busy * (p.half_alpha + st.lam * p.var_term) + p.half_delta_n * in_service) / (1.0 - lost)
        wait = st.wait_time * p.queue_factor + boundary
        waiting = st.throughput * wait
        return replace(st, wait_time=wait, resp_time=st.service_time + wait, num_waiting=waiting,
                       num_in_system=st.num_in_service + waiting)

    @staticmethod
    def row_latencies(p, st, n):
        admit = (_head_dot(st.p_head, p.admit_table) + (st.p_block - st.blocking) * _at(p.prefill_table, n)) / \
            (1.0 - st.blocking)  # per admitted request
        # ITL: the decode share of the mean service time S over the m - 1 decode iterations, with the
        # mean-field prefill over the in-service distribution (the prefill S itself contains)
        pf_mf = _head_dot(st.p_head, p.prefill_table) + st.p_block * _at(p.prefill_table, n)
        many = p.m >= 2.0
        itl = np.where(many, (st.service_time - pf_mf) / np.where(many, p.m - 1.0, 1.0), st.service_time / p.m)
        return admit, itl, st.wait_time + admit

    def primitives(self):
        p = new_primitives(self.alpha, self.beta, self.gamma, self.n, self.m,
                           np.arange(1, self.max_batch + 1), max_num_tokens=self.max_num_tokens, float32=False)
        return p["prefill"], p["itl"]
