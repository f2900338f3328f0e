"""RowSet: many (perf model, N, Q) replicas of one perf-model kind, evaluated in one vectorised pass.

A row is (model index, max batch n, max queue q). mu(B) does not depend on N (spec §1.2), so a row
may use any n up to its model's max_batch: one model then serves every batch size M <= N (the
all-M concurrency curve). Rows of different models are padded to a common width.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .chain import ChainStats, solve_lw
from .models import gather, pad_rows
from .results import Metrics

if TYPE_CHECKING:  # pragma: no cover
    from .perf import PerfModel

__all__ = ["RowSet", "RowEval", "EPSILON"]

EPSILON = 0.001  # rate range [eps mu(1), (1-eps) mu(N)] (Go's Epsilon)
BLOCK = 1 << 18  # head states (rows x W) per evaluation block
_STAT_FIELDS = ("lam", "p_block", "blocking", "num_in_system", "num_in_service", "num_waiting", "throughput",
                "resp_time", "service_time", "wait_time")


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
        # log mu(B) (padded with its last value) and its prefix sums, in a temporary
        csum = pad_rows([m.service.log_mu for m in models], width, out=_temporary(len(models), width))
        self.log_mu_n = csum[self.mi, self.n - 1]
        log_mu_1 = csum[self.mi, 0]
        np.cumsum(csum, axis=1, out=csum)
        self.cum_n = csum[self.mi, self.n - 1]  # cum(n) per row, before the head is cut at N
        # cum[:, k] = sum_{j<=k} log mu(j) for the head states k = 0..W-1
        self.cum = np.empty((len(models), width))
        self.cum[:, 0] = 0.0
        self.cum[:, 1:] = csum[:, :width - 1]
        if caps.min() < width:  # head states are k < N: cut the rest (no mask needed at n = N)
            self.cum[np.arange(width)[None, :] >= caps[:, None]] = np.inf
        # rows below their model's N (an all-M curve) need the per-row state mask
        self.masked = bool(np.any(self.n < caps[self.mi]))
        self.params = type(models[0].service).stack([m.service for m in models], width)
        self.params.at_max_batch = not self.masked  # every row at its model's max batch (row_adjust may use it)
        self.single = len(models) == 1
        r = np.arange(len(self.mi))
        self.lam_min = np.exp(log_mu_1) * EPSILON  # req/ms
        self.lam_max = np.exp(self.log_mu_n) * (1.0 - EPSILON)
        self.k1_invalid = self.compat & (self.n + self.q == 1)  # B2: Go rejects K = 1
        self._rows = r
        self._k = np.arange(width, dtype=np.float64)
        self._qf = self.q.astype(np.float64)
        self._block = max(1, BLOCK // width)  # rows per evaluation block

    def __len__(self) -> int:
        return len(self.mi)

    def evaluate(self, idx, lam, rep: int = 1) -> RowEval:
        """Metrics of rows idx at rates lam (req/ms, > 0), element by element.

        rep > 1 says idx comes in runs of rep equal rows (a rate grid per row, np.repeat(rows, rep)):
        their tables are then gathered once per run and broadcast over it. Rows are solved in blocks in
        reusable scratch memory, so RowEval.st.p_head is not kept (None).
        """
        idx = np.asarray(idx, dtype=np.int64)
        lam = np.asarray(lam, dtype=np.float64)
        total = idx.shape[0]
        if total <= self._block:
            return self._evaluate_block(idx, lam, rep)
        step = -(-total // -(-total // self._block))  # equal blocks
        step = -(-step // rep) * rep  # of whole runs
        parts = [self._evaluate_block(idx[s:s + step], lam[s:s + step], rep) for s in range(0, total, step)]
        cat = {f: np.concatenate([getattr(e.st, f) for e in parts]) for f in _STAT_FIELDS}
        return RowEval(idx=idx, st=ChainStats(p_head=None, **cat),
                       prefill=np.concatenate([e.prefill for e in parts]),
                       itl=np.concatenate([e.itl for e in parts]), ttft=np.concatenate([e.ttft for e in parts]))

    def reserve(self, rows: int) -> None:
        """Size the scratch for evaluations of up to `rows` entries at once (it grows on demand anyway)."""
        _scratch(min(rows, self._block), self.cum.shape[1])

    def _evaluate_block(self, idx: np.ndarray, lam: np.ndarray, rep: int = 1) -> RowEval:
        rows = idx.shape[0]
        lw, work = _scratch(rows, self.cum.shape[1])
        mi = self.mi[idx]
        n = self.n[idx]
        log_lam = np.log(lam)
        np.einsum("i,j->ij", log_lam, self._k, out=lw)  # = log_lam[:, None] * k, faster
        if self.single:
            np.subtract(lw, self.cum, out=lw)
        elif rep > 1:  # one gather per run, broadcast over its rates
            runs = rows // rep
            cum = np.take(self.cum, mi[::rep], axis=0, out=work[:runs], mode="clip")
            lw3 = lw.reshape(runs, rep, lw.shape[1])
            np.subtract(lw3, cum[:, None, :], out=lw3)
        else:
            np.subtract(lw, np.take(self.cum, mi, axis=0, out=work, mode="clip"), out=lw)
        lw_n = log_lam * n - self.cum_n[idx]
        st = solve_lw(lw, self._k, lam, log_lam, n, self._qf[idx], lw_n, self.log_mu_n[idx], mask=self.masked)
        params = self.params if self.single else gather(self.params, mi, work, rep)
        service = type(self.models[0].service)
        st = service.row_adjust(params, st, n)
        pf, itl, ttft = service.row_latencies(params, st, n)
        object.__setattr__(st, "p_head", None)  # it lives in the scratch arrays: drop it (st is ours)
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

    def metrics_list(self, ev: RowEval, sel=None) -> list:
        """Metrics (floats) of entries sel (default: all) of an evaluation, one per entry: metrics(ev, j) for each j."""
        st = ev.st
        sel = slice(None) if sel is None else np.asarray(sel, dtype=np.int64)
        idx = ev.idx[sel]
        ls = st.num_in_service[sel]
        cols = (1000.0 * st.throughput[sel], 1000.0 * st.lam[sel], st.resp_time[sel], st.wait_time[sel],
                ev.prefill[sel], ev.itl[sel], ev.ttft[sel], ls, np.minimum(np.maximum(ls / self.n[idx], 0.0), 1.0),
                st.blocking[sel], 1000.0 * self.lam_max[idx])
        size = idx.shape[0]
        lists = [np.broadcast_to(np.asarray(c, dtype=np.float64), (size,)).tolist() for c in cols]
        return [Metrics(*vals) for vals in zip(*lists)]


_POOL = threading.local()


def _temporary(rows: int, cols: int) -> np.ndarray:
    """A (rows, cols) float64 array for use before the next evaluation: pooled scratch when small enough."""
    return _scratch(rows, cols)[0] if rows * cols <= 2 * BLOCK else np.empty((rows, cols))


def _scratch(rows: int, cols: int) -> tuple:
    """Two (rows, cols) float64 scratch arrays, shared by this thread's evaluations.

    Each evaluation block (and RowSet.__init__, via _temporary) overwrites them and keeps nothing in
    them. They outlive the RowSet (at most two arrays of 2 BLOCK floats per thread): touching fresh
    memory costs more than a solve pass, so reusing it across calls pays.
    """
    need = rows * cols
    bufs = getattr(_POOL, "bufs", None)
    if bufs is None or bufs[0].shape[0] < need:
        size = max(need, 1 << 12)
        bufs = _POOL.bufs = (np.empty(size), np.empty(size))
    return bufs[0][:need].reshape(rows, cols), bufs[1][:need].reshape(rows, cols)


_METRIC_ORDER = ("throughput", "offered_rate", "resp_time", "wait_time", "prefill_time", "itl", "ttft",
                 "num_in_service", "rho", "blocking", "max_rate")
assert tuple(f.name for f in fields(Metrics)) == _METRIC_ORDER  # metrics_list builds Metrics positionally
