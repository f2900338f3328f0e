"""Service-time models of the queue-analysis versions (spec §1.3, §3.2, §3.4).

Each model gives log mu(B) for B = 1..N (aggregate departure rate in req/ms with B requests in
service) and turns chain statistics into (prefill, itl, ttft) in ms, following its version.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Mapping

import numpy as np

from .chain import ChainStats
from .chunks import chunk_counts
from .errors import QueueingError

__all__ = ["ServiceModel", "V01Model", "V02Model", "OldModel", "NewModel", "new_primitives", "gather", "pad_rows",
           "PARAM_KEYS"]

PARAM_KEYS = {
    "v01": ("alpha", "beta"),
    "v02": ("alpha", "beta", "gamma", "delta"),
    "old3": ("alpha", "beta", "gamma"),
    "old": ("alpha", "beta", "gamma"),
    "new": ("alpha", "beta", "gamma"),
    "iteration": ("alpha", "beta", "gamma"),
}


class ServiceModel:
    """Base: log_mu[B-1] = log mu(B) for B = 1..N; latencies() maps chain stats to ms values."""

    kind: str
    log_mu: np.ndarray

    def __init__(self, n: float, m: float, max_batch: int, compat: bool):
        self.n, self.m, self.max_batch, self.compat = n, m, max_batch, compat

    def _set_tau(self, tau: np.ndarray) -> None:
        b = np.arange(1, self.max_batch + 1, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = b / tau
        bad = ~(np.isfinite(mu) & (mu > 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise QueueingError(
                f"{self.kind} perf model: service rate mu(B={i + 1}) = {mu[i]!r} req/ms is not finite and "
                f"positive (residence time {tau[i]!r} ms); check alpha/beta/gamma/delta and token counts"
            )
        self.log_mu = np.log(mu)

    SCALARS: tuple[str, ...] = ()  # per-model constants used by row_latencies
    TABLES: tuple[str, ...] = ()  # per-model tables indexed by batch size B = 0..N

    @classmethod
    def row_scalars(cls, compat: bool) -> tuple[str, ...]:
        """The SCALARS that row_latencies reads in this mode (the only ones stack() builds)."""
        return cls.SCALARS

    @classmethod
    def row_tables(cls, compat: bool) -> tuple[str, ...]:
        """The TABLES that row_latencies reads in this mode (the only ones stack() builds)."""
        return cls.TABLES

    def latencies(self, st: ChainStats) -> tuple[ChainStats, np.ndarray, np.ndarray, np.ndarray]:
        """(adjusted stats, prefill, itl, ttft) in ms for chain stats of this model at N = max_batch."""
        st = self.row_adjust(self, st, self.max_batch)
        return (st, *self.row_latencies(self, st, self.max_batch))

    @staticmethod
    def row_adjust(p, st: ChainStats, n) -> ChainStats:
        """Chain statistics as this model reports them (default: the chain's own); row_latencies sees the result."""
        return st

    @staticmethod
    def row_latencies(p, st: ChainStats, n) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Latencies from parameters p (this model, or per-row stacked arrays) and batch limit(s) n."""
        raise NotImplementedError

    def primitives(self) -> tuple[np.ndarray, np.ndarray]:
        """Closed-form (prefill, itl) in ms at integer batch sizes B = 1..N (for the concurrency brackets)."""
        raise NotImplementedError

    @classmethod
    def stack(cls, models: list["ServiceModel"], width: int) -> SimpleNamespace:
        """Per-model parameters as arrays: scalars (M,), tables (M, width+1) padded with their last value.

        Only the scalars and tables row_latencies reads in the models' mode are built.
        """
        out = {"compat": models[0].compat}
        for name in cls.row_scalars(models[0].compat):
            out[name] = np.array([float(getattr(mdl, name)) for mdl in models])
        for name in cls.row_tables(models[0].compat):
            out[name] = pad_rows([getattr(mdl, name) for mdl in models], width + 1)
        return SimpleNamespace(**out)


def pad_rows(arrays: list, width: int, out: np.ndarray | None = None) -> np.ndarray:
    """(M, width) float64 array (or out): row i is arrays[i][:width], padded with its last value."""
    if out is None:
        out = np.empty((len(arrays), width))
    for i, a in enumerate(arrays):
        k = min(a.shape[0], width)
        out[i, :k] = a[:k]
        if k < width:
            out[i, k:] = a[k - 1]
    return out


class _RowTable:
    """Rows idx of a stacked (M, W+1) table, indexed lazily (no full copy per evaluation).

    work: optional (>= len(idx), W) scratch array that a gather of the rows' first W columns may overwrite;
    rep > 1: idx comes in runs of rep equal rows (gathered once per run).
    """

    __slots__ = ("table", "idx", "work", "rep")
    ndim = 2

    def __init__(self, table: np.ndarray, idx: np.ndarray, work: np.ndarray | None = None, rep: int = 1):
        self.table, self.idx, self.work, self.rep = table, idx, work, rep


def gather(p: SimpleNamespace, idx: np.ndarray, work: np.ndarray | None = None, rep: int = 1) -> SimpleNamespace:
    """Rows idx of stacked parameters: scalars as (R,) arrays, tables as lazy row views (gathered into work).

    Scalars also stacked as one (K, M) scalar_matrix (names in scalar_names) are taken in one pass."""
    out = {}
    names = getattr(p, "scalar_names", ())
    if names:
        out.update(zip(names, np.take(p.scalar_matrix, idx, axis=1)))
    for k, v in vars(p).items():
        if k in out or k == "scalar_matrix":
            continue
        if isinstance(v, np.ndarray):
            out[k] = v[idx] if v.ndim == 1 else _RowTable(v, idx, work, rep)
        else:
            out[k] = v
    return SimpleNamespace(**out)


def _at(table, idx) -> np.ndarray:
    """table[B] per row: a 1-D table indexed by idx, or row r of a 2-D table at idx[r]."""
    if isinstance(table, _RowTable):
        return table.table[table.idx, idx]
    if table.ndim == 1:
        return table[idx]
    return np.take_along_axis(table, np.asarray(idx, dtype=np.int64)[:, None], axis=1)[:, 0]


def _head_dot(p_head: np.ndarray, table) -> np.ndarray:
    """sum_{B < W} p_head[:, B] table[B] (row-wise for a 2-D table); einsum, so row results are batch-independent."""
    w = p_head.shape[1]
    if isinstance(table, _RowTable):
        t = table.table
        if t.shape[0] == 1:
            return np.einsum("ij,j->i", p_head, t[0, :w])
        work, rep, r = table.work, table.rep, table.idx.shape[0]
        if work is not None and work.shape[0] >= r and work.shape[1] == w:
            if rep > 1:  # p_head rows in runs of rep: one table row per run, broadcast (same sums)
                runs = r // rep
                rows = np.take(t[:, :w], table.idx[::rep], axis=0, out=work[:runs], mode="clip")
                return np.einsum("agw,aw->ag", p_head.reshape(runs, rep, w), rows).reshape(r)
            return np.einsum("ij,ij->i", p_head, np.take(t[:, :w], table.idx, axis=0, out=work[:r], mode="clip"))
        return np.einsum("ij,ij->i", p_head, t[table.idx, :w])
    if table.ndim == 1:
        return np.einsum("ij,j->i", p_head, table[:w])
    return np.einsum("ij,ij->i", p_head, table[:, :w])


class V01Model(ServiceModel):
    """queue-analysis v0.1.0 REST, decode only: mu(B) = B/(m (alpha + beta B)); TTFT = W, ITL = S/m (spec §3.5).

    Its "wait" target is sized as the TTFT target (W); its ITL target as S <= m ITL.
    """

    kind = "v01"
    SCALARS = ("m",)

    def __init__(self, params: Mapping[str, float], n, m, max_batch, compat):
        super().__init__(n, m, max_batch, compat)
        self.alpha, self.beta = params["alpha"], params["beta"]
        b = np.arange(1, max_batch + 1, dtype=np.float64)
        self._set_tau(m * (self.alpha + self.beta * b))

    @staticmethod
    def row_latencies(p, st, n):
        return 0.0 * st.wait_time, st.service_time / p.m, st.wait_time

    def primitives(self):
        b = np.arange(1, self.max_batch + 1, dtype=np.float64)
        return np.zeros_like(b), self.alpha + self.beta * b


class V02Model(ServiceModel):
    """queue-analysis v0.2.0 / inferno optimizer: Dec(x) = a + b x, Pf(x) = g + d n x; TTFT = W + Pf(n_e)."""

    kind = "v02"

    def __init__(self, params: Mapping[str, float], n, m, max_batch, compat):
        super().__init__(n, m, max_batch, compat)
        self.alpha, self.beta = params["alpha"], params["beta"]
        self.gamma_p, self.delta_p = params["gamma"], params["delta"]
        # m-1 decode steps; v0.2.0's fix (one decode when n = 0 and m = 1) is kept in both modes,
        # since optimizer HEAD's tau = 0 there would make mu infinite (Go loops forever, B5).
        self.n_dec = 1.0 if (n == 0 and m == 1) else m - 1.0
        pf0 = self.gamma_p if n > 0 else 0.0
        self.tau_a = pf0 + self.n_dec * self.alpha
        self.tau_b = (self.delta_p * n if n > 0 else 0.0) + self.n_dec * self.beta
        b = np.arange(1, max_batch + 1, dtype=np.float64)
        self._set_tau(self.tau_a + self.tau_b * b)

    SCALARS = ("alpha", "beta", "gamma_p", "delta_p", "n", "m", "tau_a", "tau_b")

    def prefill_at(self, x):
        return self.row_prefill(self, x)

    @staticmethod
    def row_prefill(p, x):
        return np.where(p.n == 0, 0.0, p.gamma_p + p.delta_p * p.n * x)

    def effective_concurrency(self, st: ChainStats) -> np.ndarray:
        return self.row_concurrency(self, st, self.max_batch)

    @staticmethod
    def row_concurrency(p, st: ChainStats, n) -> np.ndarray:
        s = st.service_time
        num, den = s - p.tau_a, p.tau_b + 0.0 * s
        if p.compat:
            # Go's EffectiveConcurrency subtracts gamma_p even when n = 0 (B10).
            cden = p.delta_p * p.n + p.beta * (p.m - 1)
            num = np.where(cden > 0, s - p.gamma_p - p.alpha * (p.m - 1), num)
            den = np.where(cden > 0, cden, den)
        safe = np.where(den > 0, den, 1.0)
        # tau constant in B (den <= 0): no batch size is implied by S; use the mean batch
        return np.where(den > 0, np.clip(num / safe, 0.0, n), st.num_in_service)

    @staticmethod
    def row_latencies(p, st, n):
        ne = V02Model.row_concurrency(p, st, n)
        pf = V02Model.row_prefill(p, ne)
        itl = p.alpha + p.beta * ne
        return pf, itl, st.wait_time + pf

    def primitives(self):
        b = np.arange(1, self.max_batch + 1, dtype=np.float64)
        return self.prefill_at(b), self.alpha + self.beta * b


class OldModel(ServiceModel):
    """queue-analysis v0.3.0 ("old3", decode gamma(n + m/2)) and v0.4-v0.6 ("old", gamma(n + (m+1)/2))."""

    def __init__(self, params, n, m, max_batch, compat, *, v03: bool):
        super().__init__(n, m, max_batch, compat)
        self.kind = "old3" if v03 else "old"
        a, b, g = params["alpha"], params["beta"], params["gamma"]
        self.alpha = a
        self.delta1 = b * (n + m) / (m + 1.0) + g * (n + m / 2.0)
        self.pf_extra = (b + g) * n
        self.dec_extra = b + g * (n + (m / 2.0 if v03 else (m + 1) / 2.0))
        bs = np.arange(1, max_batch + 1, dtype=np.float64)
        t = a + bs * self.delta1
        self._set_tau(self.prefill_at(bs, t) + m * (t + self.dec_extra))

    SCALARS = ("alpha", "delta1", "pf_extra", "dec_extra", "n", "m")

    def prefill_at(self, bb, t=None):
        if t is None:
            t = self.alpha + bb * self.delta1
        if self.n == 0:
            return np.zeros_like(t)
        return t + self.pf_extra

    @staticmethod
    def row_latencies(p, st, n):
        pf = np.where(p.n == 0, 0.0, p.alpha + st.num_in_service * p.delta1 + p.pf_extra)
        itl = (st.service_time - pf) / p.m
        return pf, itl, st.wait_time + pf + itl

    def primitives(self):
        b = np.arange(1, self.max_batch + 1, dtype=np.float64)
        t = self.alpha + b * self.delta1
        return self.prefill_at(b, t), t + self.dec_extra


def _new_work(alpha, beta, gamma, n, m, c):
    """Per-request prefill work w_p(c), total work W_tot(c) and per-iteration work delta(c)."""
    w_p = (beta + gamma * (c + 1) / 2.0) * n
    w_d = beta * m + gamma * m * (n + (m + 1) / 2.0)
    w_tot = w_p + w_d
    return w_p, w_tot, w_tot / (c + m)


def new_primitives(alpha, beta, gamma, n, m, batch, *, max_num_tokens=8192.0, float32=True) -> dict:
    """v0.7 latency primitives at integer batch sizes (spec §1.3): nc, iter_time, prefill, itl, tau."""
    bb = np.atleast_1d(np.asarray(batch, dtype=np.int64))
    nc = chunk_counts(n, m, max_num_tokens or 8192.0, int(bb.max()), float32=float32)[bb]
    c = nc.astype(np.float64)
    b = bb.astype(np.float64)
    w_p, w_tot, delta = _new_work(alpha, beta, gamma, n, m, c)
    bg = np.maximum(0.0, alpha + (b - 1) * delta)
    return {
        "nc": nc,
        "iter_time": alpha + b * delta,
        "prefill": c * bg + w_p,
        "itl": bg + beta + gamma * (n + (m + 1) / 2.0),
        "tau": (c + m) * alpha + b * w_tot,
    }


class NewModel(ServiceModel):
    """queue-analysis v0.7+ chunked-prefill model (spec §1).

    compat: prefill at the rounded mean batch, nc(round(B_bar)) (Go; discontinuous, B4).
    default: prefill averaged over the in-service distribution, sum_B P(B) prefill(B, nc(B)),
    which equals Go's value whenever nc is constant and the bg >= 0 clamp is inactive, and is
    continuous in the rate.
    """

    kind = "new"

    def __init__(self, params, n, m, max_batch, compat, *, max_num_tokens: float):
        super().__init__(n, m, max_batch, compat)
        a, b, g = params["alpha"], params["beta"], params["gamma"]
        self.alpha, self.beta, self.gamma, self.max_num_tokens = a, b, g, max_num_tokens
        self.nc = chunk_counts(n, m, max_num_tokens, max_batch, float32=compat)  # B = 0..N
        c = self.nc.astype(np.float64)
        self.w_p, self.w_tot, self.delta = _new_work(a, b, g, n, m, c)
        self.w_d = b * m + g * m * (n + (m + 1) / 2.0)  # w_tot - w_p, as _new_work computes it
        bs = np.arange(max_batch + 1, dtype=np.float64)
        self.prefill_table = c * np.maximum(0.0, a + (bs - 1) * self.delta) + self.w_p
        self._set_tau(((c + m) * a + bs * self.w_tot)[1:])

    SCALARS = ("alpha", "m", "beta", "gamma", "n", "w_d")
    TABLES = ("nc", "w_p", "delta", "prefill_table")

    @classmethod
    def row_scalars(cls, compat: bool) -> tuple[str, ...]:
        return cls.SCALARS if compat else ("alpha", "m")

    @classmethod
    def row_tables(cls, compat: bool) -> tuple[str, ...]:
        return ("nc",) if compat else ("prefill_table",)

    @staticmethod
    def row_latencies(p, st, n):
        bbar = st.num_in_service
        if p.compat:
            idx = np.clip(np.floor(bbar + 0.5), 1, n).astype(np.int64)
            c = _at(p.nc, idx).astype(np.float64)
            # w_p(c) and delta(c) as _new_work computes their tables (same values, no table lookups)
            w_p = (p.beta + p.gamma * (c + 1) / 2.0) * p.n
            delta = (w_p + p.w_d) / (c + p.m)
            pf = c * np.maximum(0.0, p.alpha + (bbar - 1) * delta) + w_p
        else:
            pf = _head_dot(st.p_head, p.prefill_table) + st.p_block * _at(p.prefill_table, n)
        itl = (st.service_time - pf) / p.m
        return pf, itl, st.wait_time + pf + itl

    def primitives(self):
        p = new_primitives(self.alpha, self.beta, self.gamma, self.n, self.m,
                           np.arange(1, self.max_batch + 1), max_num_tokens=self.max_num_tokens,
                           float32=self.compat)
        return p["prefill"], p["itl"]
