"""RowSet: many (perf model, N, Q) replicas of one perf-model kind, evaluated in one vectorised pass.

A row is (model index, max batch n, max queue q). mu(B) does not depend on N (spec §1.2), so a row
may use any n up to its model's max_batch: one model then serves every batch size M <= N (the
all-M concurrency curve). Rows of different models are padded to a common width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .chain import ChainStats, solve_rows
from .models import gather
from .results import Metrics

if TYPE_CHECKING:  # pragma: no cover
    from .perf import PerfModel

__all__ = ["RowSet", "RowEval", "EPSILON"]

EPSILON = 0.001  # rate range [eps mu(1), (1-eps) mu(N)] (Go's Epsilon)


@dataclass(frozen=True)
class RowEval:
    """Chain statistics and latencies (ms) of some rows, one rate each (req/ms)."""

    idx: np.ndarray
    st: ChainStats
    prefill: np.ndarray
    itl: np.ndarray
    ttft: np.ndarray

    def metric(self, name: str) -> np.ndarray:
        return self.ttft if name == "ttft" else self.itl


class RowSet:
    """Rows over perf models that share kind and compat mode; evaluate(idx, lam) for any rows and rates."""

    def __init__(self, models: Sequence["PerfModel"], mi, n, q):
        kinds = {(m.kind, m.compat) for m in models}
        if len(kinds) != 1:
            raise ValueError(f"RowSet needs one perf-model kind and mode, got {sorted(kinds)}")
        self.models = tuple(models)
        self.kind, self.compat = next(iter(kinds))
        self.mi = np.asarray(mi, dtype=np.int64)
        self.n = np.asarray(n, dtype=np.int64)
        self.q = np.asarray(q, dtype=np.int64)
        caps = np.array([m.max_batch for m in models])
        if np.any(self.n < 1) or np.any(self.n > caps[self.mi]) or np.any(self.q < 0):
            raise ValueError("RowSet: need 1 <= n <= model max_batch and q >= 0 for every row")
        width = int(self.n.max())
        log_mu = np.empty((len(models), width))
        for i, m in enumerate(models):
            lm = m.service.log_mu[:width]
            log_mu[i, : lm.shape[0]] = lm
            log_mu[i, lm.shape[0]:] = lm[-1]
        self.log_mu = log_mu
        self.log_mu_n = log_mu[self.mi, self.n - 1]
        self.cum = np.concatenate((np.zeros((len(models), 1)), np.cumsum(log_mu, axis=1)), axis=1)
        self.cum_n = self.cum[self.mi, self.n]  # per row, before the head is cut at N
        for i, m in enumerate(models):
            self.cum[i, m.max_batch:] = np.inf  # head states are k < N: no mask needed at n = N
        # rows below their model's N (an all-M curve) need the per-row state mask
        self.masked = bool(np.any(self.n < caps[self.mi]))
        self.params = type(models[0].service).stack([m.service for m in models], width)
        self.single = len(models) == 1
        r = np.arange(len(self.mi))
        self.lam_min = np.exp(log_mu[self.mi, 0]) * EPSILON  # req/ms
        self.lam_max = np.exp(log_mu[self.mi, self.n - 1]) * (1.0 - EPSILON)
        self.k1_invalid = self.compat & (self.n + self.q == 1)  # B2: Go rejects K = 1
        self._rows = r

    def __len__(self) -> int:
        return len(self.mi)

    def evaluate(self, idx, lam) -> RowEval:
        """Metrics of rows idx at rates lam (req/ms, > 0), element by element."""
        idx = np.asarray(idx, dtype=np.int64)
        lam = np.asarray(lam, dtype=np.float64)
        mi = self.mi[idx]
        cum = self.cum if self.single else self.cum[mi]
        n = self.n[idx]
        st = solve_rows(cum, None, lam, n, self.q[idx], cum_n=self.cum_n[idx], log_mu_n=self.log_mu_n[idx],
                        mask=self.masked)
        params = self.params if self.single else gather(self.params, mi)
        pf, itl, ttft = type(self.models[0].service).row_latencies(params, st, n)
        return RowEval(idx=idx, st=st, prefill=pf, itl=itl, ttft=ttft)

    def metrics(self, ev: RowEval, j: int | None = None, offered=None) -> Metrics:
        """Metrics (req/s, ms) of an evaluation: entry j as floats, or all entries as arrays."""
        st, idx = ev.st, ev.idx
        sel = slice(None) if j is None else j
        ls = st.num_in_service[sel]
        n = self.n[idx][sel]
        out = dict(
            throughput=1000.0 * st.throughput[sel],
            offered_rate=1000.0 * st.lam[sel] if offered is None else offered,
            resp_time=st.resp_time[sel], wait_time=st.wait_time[sel], prefill_time=ev.prefill[sel],
            itl=ev.itl[sel], ttft=ev.ttft[sel], num_in_service=ls,
            rho=np.minimum(np.maximum(ls / n, 0.0), 1.0), blocking=st.blocking[sel],
            max_rate=1000.0 * self.lam_max[idx][sel],
        )
        if j is not None:
            out = {k: float(v) for k, v in out.items()}
        return Metrics(**out)
